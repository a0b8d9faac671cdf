package round

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
)

// boundaryMachine is member 0 of 3 voters and a learner, bootstrapped.
func boundaryMachine(t *testing.T) (*Machine, []identity.Identity) {
	t.Helper()
	var ids []identity.Identity
	var members []identity.PeerID
	for i := range 4 {
		ids = append(ids, identity.Derive(77, i))
		members = append(members, ids[i].ID)
	}
	// Voters are the three smallest peer IDs; ids[3] may be any of them, so
	// pick voters explicitly and keep the learner last.
	p := Params{Consortium: [32]byte{7}, Members: members, Voters: members[:3], Fraction: 1, MinParticipants: 1,
		DeadlineTicks: 40, ElectionTicks: 10, MaxExamples: 1000, UpdateBytes: 40, Aggregator: "fedavg", RetainRounds: 10}
	m, err := New(Config{Params: p, Self: ids[0], Genesis: Digest{1}})
	require.NoError(t, err)
	m.Advance(m.Ready())
	return m, ids
}

func raftMsg(t pb.MessageType, from, to identity.PeerID) *pb.Message {
	return &pb.Message{Type: t.Enum(), From: proto.Uint64(RaftID(from)), To: proto.Uint64(RaftID(to)), Term: proto.Uint64(2)}
}

// Each forged message from another member is refused with its reason, and
// the member neither panics nor halts. Before the boundary the heartbeat
// panicked in raftLog.commitTo, killing the process.
func TestRaftBoundary(t *testing.T) {
	for _, tc := range []struct {
		name   string
		msg    func(ids []identity.Identity) *pb.Message
		reason string
	}{
		{"heartbeat committing beyond the log", func(ids []identity.Identity) *pb.Message {
			msg := raftMsg(pb.MessageType_MsgHeartbeat, ids[1].ID, ids[0].ID)
			msg.Commit = proto.Uint64(1 << 40)
			return msg
		}, RaftBadCommit},
		{"remote proposal", func(ids []identity.Identity) *pb.Message {
			msg := raftMsg(pb.MessageType_MsgProp, ids[1].ID, ids[0].ID)
			msg.Term = nil
			msg.Entries = []*pb.Entry{{Data: []byte("x")}}
			return msg
		}, RaftLocalOnly},
		{"append from a learner", func(ids []identity.Identity) *pb.Message {
			msg := raftMsg(pb.MessageType_MsgApp, ids[3].ID, ids[0].ID)
			msg.Index, msg.LogTerm = proto.Uint64(1), proto.Uint64(1)
			msg.Entries = []*pb.Entry{{Index: proto.Uint64(2), Term: proto.Uint64(2), Data: []byte("x")}}
			return msg
		}, RaftLearner},
		{"vote request from a learner", func(ids []identity.Identity) *pb.Message {
			return raftMsg(pb.MessageType_MsgVote, ids[3].ID, ids[0].ID)
		}, RaftLearner},
		{"append whose entries do not follow each other", func(ids []identity.Identity) *pb.Message {
			msg := raftMsg(pb.MessageType_MsgApp, ids[1].ID, ids[0].ID)
			msg.Index, msg.LogTerm = proto.Uint64(1), proto.Uint64(1)
			msg.Entries = []*pb.Entry{{Index: proto.Uint64(5), Term: proto.Uint64(2)}}
			return msg
		}, RaftBadAppend},
		{"snapshot of round 999 without attestations", func(ids []identity.Identity) *pb.Message {
			msg := raftMsg(pb.MessageType_MsgSnap, ids[1].ID, ids[0].ID)
			s := &Snapshot{State: State{Index: 50, Round: 999, Model: Digest{9}}, Members: []identity.PeerID{ids[0].ID, ids[1].ID, ids[2].ID, ids[3].ID}}
			data, _ := json.Marshal(s)
			msg.Snapshot = &pb.Snapshot{Data: data, Metadata: &pb.SnapshotMetadata{Index: proto.Uint64(50), Term: proto.Uint64(2),
				ConfState: &pb.ConfState{Voters: []uint64{RaftID(ids[0].ID), RaftID(ids[1].ID), RaftID(ids[2].ID)}}}}
			return msg
		}, RaftBadSnapshot},
		{"a sender that is not its own raft ID's member", func(ids []identity.Identity) *pb.Message {
			return raftMsg(pb.MessageType_MsgHeartbeat, identity.Derive(78, 0).ID, ids[0].ID)
		}, RaftUnknownSender},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ids := boundaryMachine(t)
			require.ErrorIs(t, m.StepRaft(tc.msg(ids)), ErrRaftRefused)
			require.Equal(t, uint64(1), m.Status().Counters.RaftRefused[tc.reason])
			require.Empty(t, m.Halted())
			require.Equal(t, uint64(0), m.State().Round, "nothing was adopted")
			m.Advance(m.Ready())
		})
	}
}

// An honest heartbeat and an honest learner response pass.
func TestRaftBoundaryPassesHonestTraffic(t *testing.T) {
	m, ids := boundaryMachine(t)
	hb := raftMsg(pb.MessageType_MsgHeartbeat, ids[1].ID, ids[0].ID)
	hb.Commit = proto.Uint64(1)
	require.NoError(t, m.StepRaft(hb))
	resp := raftMsg(pb.MessageType_MsgHeartbeatResp, ids[3].ID, ids[0].ID)
	require.NoError(t, m.StepRaft(resp))
	require.Empty(t, m.Status().Counters.RaftRefused)
}

// A panic inside raft halts the member with an alarm; nothing calls into
// raft again.
func TestRaftPanicHalts(t *testing.T) {
	m, ids := boundaryMachine(t)
	m.guard("test", func() { panic("boom") })
	require.Contains(t, m.Halted(), "raft panicked in test: boom")
	require.ErrorIs(t, m.StepRaft(raftMsg(pb.MessageType_MsgHeartbeat, ids[1].ID, ids[0].ID)), ErrHalted)
	m.Tick()
	rd := m.Ready()
	require.NotEmpty(t, rd.Alarms)
	m.Advance(rd)
}

// TestCommitNeedsMajorityHaves: a Commit whose inclusion lacks signed Haves
// from a majority of voters is invalid (a proposer used to commit its own
// announcement of a blob it never served, and every member waited for it
// forever); with a majority's Haves it is valid.
func TestCommitNeedsMajorityHaves(t *testing.T) {
	m, ids := boundaryMachine(t)
	cid := m.Params().Consortium
	ann := &Message{Kind: KindAnnounce, Round: 1, Base: m.State().Model, Digest: Digest{5}, Length: 40, Examples: 10}
	ann.Sign(cid, ids[1])
	have := func(i int) *Message {
		h := &Message{Kind: KindHave, Round: 1, Digest: Digest{5}}
		h.Sign(cid, ids[i])
		return h
	}
	e := &Entry{Kind: EntryCommit, Round: 1, Base: m.State().Model, Prev: m.State().Chain, Included: []*Message{ann},
		Aggregator: m.Params().Aggregator, Result: Digest{6}}
	require.ErrorContains(t, m.validate(e), "Haves of 0 voters, a majority is 2")
	e.Haves = []*Message{have(1)}
	require.ErrorContains(t, m.validate(e), "Haves of 1 voters")
	e.Haves = []*Message{have(1), have(3)} // ids[3] is a learner
	require.ErrorContains(t, m.validate(e), "not a voter")
	forged := have(2)
	forged.Author = ids[0].ID
	e.Haves = []*Message{have(1), forged}
	require.ErrorIs(t, m.validate(e), ErrBadSignature)
	e.Haves = []*Message{have(1), have(2)}
	require.NoError(t, m.validate(e))
}

// TestRestartRefusesUnattestedSnapshot: a persisted snapshot that does not
// check against a majority of voters' attestations is not adopted on
// restart (a member used to come back at the attacker's round 999 and
// serve its model); the member halts and says why.
func TestRestartRefusesUnattestedSnapshot(t *testing.T) {
	m, ids := boundaryMachine(t)
	s := &Snapshot{State: State{Index: 50, Round: 999, Model: Digest{9}}, Members: m.Members()}
	data, err := json.Marshal(s)
	require.NoError(t, err)
	snap := &pb.Snapshot{Data: data, Metadata: &pb.SnapshotMetadata{Index: proto.Uint64(50), Term: proto.Uint64(2),
		ConfState: &pb.ConfState{Voters: []uint64{RaftID(ids[0].ID), RaftID(ids[1].ID), RaftID(ids[2].ID)}, Learners: []uint64{RaftID(ids[3].ID)}}}}
	r, err := New(Config{Params: m.Params(), Self: ids[0], Genesis: Digest{1}, Snapshot: snap,
		HardState: &pb.HardState{Term: proto.Uint64(2), Commit: proto.Uint64(50)}})
	require.NoError(t, err)
	require.Contains(t, r.Halted(), "persisted snapshot of round 999")
	require.Equal(t, uint64(0), r.State().Round)
	require.False(t, r.Gate().Servable([32]byte{9}), "the attacker's model is not served")
}
