package round

import (
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
)

func attestation(t *testing.T, m *Machine, id identity.Identity, r, index uint64, d Digest) *Message {
	t.Helper()
	a := &Message{Kind: KindAttest, Round: r, Index: index, Digest: d}
	a.Sign(m.Params().Consortium, id)
	return a
}

// The halt rule counts a majority agreeing on one outcome: two voters
// attesting two different digests do not halt a member (they used to, being
// counted together as "against"); a majority on one other digest does.
func TestHaltNeedsAMajorityOnOneDigest(t *testing.T) {
	m, ids := boundaryMachine(t)
	m.st = State{Index: 5, Round: 1, Model: Digest{0xa0}}
	require.NoError(t, m.Step(attestation(t, m, ids[1], 1, 5, Digest{0xa1})))
	require.NoError(t, m.Step(attestation(t, m, ids[2], 1, 5, Digest{0xa2})))
	require.Empty(t, m.Halted(), "two voters, two digests: no majority")
	require.NoError(t, m.Step(attestation(t, m, ids[2], 1, 5, Digest{0xa1})))
	require.Contains(t, m.Halted(), "a majority of voters (2) attest a1")
}

// A member that judged invalid an entry a majority of voters applied is
// stuck behind them: it halts and says so.
func TestHaltWhenJudgedInvalidWhatAMajorityApplied(t *testing.T) {
	m, ids := boundaryMachine(t)
	m.st = State{Index: 5, Round: 1, Model: Digest{0xa0}}
	m.invalid(&pb.Entry{Index: proto.Uint64(7), Term: proto.Uint64(2)}, &Entry{Round: 2}, errTest)
	require.Empty(t, m.Halted())
	require.NoError(t, m.Step(attestation(t, m, ids[1], 2, 7, Digest{0xb0})))
	require.NoError(t, m.Step(attestation(t, m, ids[2], 2, 7, Digest{0xb0})))
	require.Contains(t, m.Halted(), "judged entry 7 invalid, but a majority of voters (2) applied it")
}

// A member repeats its attestation until a majority of voters attest the
// same outcome, and attests again after a restart (a crash between apply
// and send loses nothing).
func TestAttestationRepeatedAndRestarted(t *testing.T) {
	m, ids := boundaryMachine(t)
	m.st = State{Index: 5, Round: 1, Model: Digest{0xa0}}
	m.attest()
	m.Advance(m.Ready())
	repeated := func() bool {
		for range m.p.DeadlineTicks / 4 {
			m.Tick()
		}
		rd := m.Ready()
		defer m.Advance(rd)
		for _, g := range rd.Gossip {
			if g.Kind == KindAttest && g.Round == 1 {
				return true
			}
		}
		return false
	}
	require.True(t, repeated(), "repeated while no majority agrees")
	require.NoError(t, m.Step(attestation(t, m, ids[1], 1, 5, Digest{0xa0})))
	require.False(t, repeated(), "not repeated once a majority agrees")

	// Restarted with round 1 applied (the log: the bootstrap snapshot and
	// four entries): its first Ready attests round 1 again.
	var vs []uint64
	for _, id := range ids[:3] {
		vs = append(vs, RaftID(id.ID))
	}
	snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: proto.Uint64(1), Term: proto.Uint64(1),
		ConfState: &pb.ConfState{Voters: vs, Learners: []uint64{RaftID(ids[3].ID)}}}}
	var ents []*pb.Entry
	for i := uint64(2); i <= 5; i++ {
		ents = append(ents, &pb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1)})
	}
	r, err := New(Config{Params: m.Params(), Self: ids[0], Genesis: Digest{1}, Applied: State{Index: 5, Round: 1, Model: Digest{0xa0}},
		HardState: &pb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(5)}, Snapshot: snap, Entries: ents})
	require.NoError(t, err)
	found := false
	for _, g := range r.Ready().Gossip {
		found = found || (g.Kind == KindAttest && g.Round == 1 && g.Digest == Digest{0xa0})
	}
	require.True(t, found, "a restarted member attests its applied outcome again")
}

var errTest = errorString("test")

type errorString string

func (e errorString) Error() string { return string(e) }

// A member missing a committed blob asks a voter that signed a Have for it
// first, not the author (who may be trickling it to this member alone).
func TestApplyFetchesFromAHaveSigner(t *testing.T) {
	m, ids := boundaryMachine(t)
	cid := m.Params().Consortium
	ann := &Message{Kind: KindAnnounce, Round: 1, Base: m.State().Model, Digest: Digest{5}, Length: 40, Examples: 10}
	ann.Sign(cid, ids[1])
	h := &Message{Kind: KindHave, Round: 1, Digest: Digest{5}}
	h.Sign(cid, ids[2])
	e := &Entry{Kind: EntryCommit, Round: 1, Included: []*Message{ann}, Haves: []*Message{h}}
	task := &ApplyTask{Index: 9, Entry: e}
	m.pending = task
	m.Applied(task, Digest{}, &MissingBlobError{Digests: []Digest{{5}}})
	rd := m.Ready()
	require.Len(t, rd.Fetch, 1)
	require.Equal(t, ids[2].ID, rd.Fetch[0].From)
}
