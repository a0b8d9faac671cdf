package node_test

import (
	"context"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/member/membertest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/train/local"
	"github.com/globalbrain/globalbrain/wire"
)

func digest(t *testing.T, s string) fedavg.Digest {
	t.Helper()
	var d fedavg.Digest
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	copy(d[:], b)
	return d
}

func TestNodesAgreeOverMemNet(t *testing.T) {
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 2})
	c.RunUntil(t, func() bool { return c.AllApplied(2) })
	s0 := c.Node(0).Status()
	require.Equal(t, "done", s0.Phase)
	for i := range c.Members[1:] {
		require.Equal(t, s0.Model, c.Node(i+1).Status().Model)
	}
	require.True(t, c.Node(1).Servable(digest(t, s0.Model)), "an applied model is servable")
	require.False(t, c.Node(1).Servable([32]byte{1}), "an unnamed digest is not")
}

// TestGate: the gate the transport validates with, as a member's node
// keeps it: verdict and reason for each kind of bad message.
func TestGate(t *testing.T) {
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 2})
	n := c.Node(0)
	cid := n.Consortium()
	sign := func(id identity.Identity, r uint64) []byte {
		m := &round.Message{Kind: round.KindHave, Round: r, Digest: round.Digest{7}}
		m.Sign(cid, id)
		return m.Encode()
	}
	a, b := c.IDs[1], c.IDs[2]
	outsider := identity.Derive(99, 0)
	for _, tc := range []struct {
		name    string
		author  identity.PeerID
		msg     []byte
		verdict wire.Verdict
		reason  string
	}{
		{"valid", a.ID, sign(a, 1), wire.Accept, ""},
		{"malformed", a.ID, []byte("{not json"), wire.Reject, "malformed"},
		{"author mismatch", a.ID, sign(b, 1), wire.Reject, "author_mismatch"},
		{"not a member", outsider.ID, sign(outsider, 1), wire.Reject, "not_member"},
		{"out of window", a.ID, sign(a, 9), wire.Ignore, "stale"},
		{"forged signature", a.ID, func() []byte {
			m := &round.Message{Kind: round.KindHave, Round: 1, Digest: round.Digest{7}}
			m.Sign(cid, b)
			m.Author = a.ID // re-signed claim: a's name, b's signature
			return m.Encode()
		}(), wire.Reject, "bad_signature"},
	} {
		v, reason, msg := n.Gate().Validate(tc.author, tc.msg)
		require.Equal(t, tc.verdict, v, tc.name)
		require.Equal(t, tc.reason, reason, tc.name)
		require.Equal(t, v == wire.Accept, msg != nil, "%s: the decoded message travels with an accepted one only", tc.name)
	}
}

func TestRaftFromWrongSenderIsDropped(t *testing.T) {
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 2})
	c.RunUntil(t, func() bool { return c.AllApplied(1) })
	msg := func(from identity.PeerID) []byte {
		b, err := proto.Marshal(&pb.Message{Type: pb.MessageType_MsgHeartbeatResp.Enum(), From: proto.Uint64(round.RaftID(from)),
			To: proto.Uint64(round.RaftID(c.IDs[0].ID)), Term: proto.Uint64(1)})
		require.NoError(t, err)
		return b
	}
	rejected := func() uint64 { return c.Node(0).Status().Counters.RejectedMessages }
	before := rejected()
	// Claims to be member 1, arrives from member 2.
	c.Net.Inject(c.IDs[0].ID, wire.Inbound{Kind: wire.Raft, From: c.IDs[2].ID, Data: msg(c.IDs[1].ID)})
	c.RunUntil(t, func() bool { return rejected() > before })
	require.Equal(t, before+1, rejected(), "a Raft message from the wrong sender reached raft")
	c.Net.Inject(c.IDs[0].ID, wire.Inbound{Kind: wire.Raft, From: c.IDs[1].ID, Data: msg(c.IDs[1].ID)})
	c.RunUntil(t, func() bool { return c.Node(0).Busy() == 0 })
	require.Equal(t, before+1, rejected(), "the genuine message is not refused")
}

// TestJoinerCatchesUp adds a fourth member after genesis with the signatures
// of a majority: it starts from the genesis configuration as a joiner,
// catches up through the log and ends on the others' digest.
func TestJoinerCatchesUp(t *testing.T) {
	joiner := identity.Derive(42, 3)
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 4, Joiners: []identity.Identity{joiner}})
	c.RunUntil(t, func() bool { return c.Node(0).Status().Applied >= 1 })
	req := round.NewAddMember(joiner.ID)
	req.Sign(c.Node(0).Consortium(), joiner)
	req.Sign(c.Node(0).Consortium(), c.IDs[0])
	req.Sign(c.Node(0).Consortium(), c.IDs[1])
	proposed := false
	c.RunUntil(t, func() bool {
		if !proposed {
			for i := range 3 {
				if n := c.Node(i); n.Status().Leader && n.ProposeAddMember(context.Background(), req) == nil {
					proposed = true
				}
			}
		}
		return c.AllApplied(4)
	})
	want := c.Node(0).Status().Model
	for i := range c.Members {
		require.Equal(t, want, c.Node(i).Status().Model, "member %d", i)
		require.Equal(t, 4, c.Node(i).Status().Members, "member %d", i)
	}
}

// TestAddMemberThreeOfFive: an AddMember request signed by 2 of 5 members is
// committed to the log but invalid (membership stays 5); signed by 3 of 5
// it adds the member everywhere.
func TestAddMemberThreeOfFive(t *testing.T) {
	newcomer := identity.Derive(42, 5)
	c := membertest.MakeCluster(t, membertest.Options{Members: 5, Rounds: 6})
	c.RunUntil(t, func() bool { return c.Node(0).Status().Applied >= 1 })
	cid := c.Node(0).Consortium()
	// propose hands req to the leader, retrying while leadership moves or
	// raft drops the proposal (a transfer in progress).
	propose := func(req *round.AddMember) {
		t.Helper()
		done := false
		c.RunUntil(t, func() bool {
			for i := range c.Members {
				if n := c.Node(i); !done && n.Status().Leader {
					err := n.ProposeAddMember(context.Background(), req)
					if !errors.Is(err, round.ErrNotLeader) && !errors.Is(err, raft.ErrProposalDropped) {
						require.NoError(t, err)
						done = true
					}
				}
			}
			return done
		})
	}
	two := round.NewAddMember(newcomer.ID)
	two.Sign(cid, newcomer)
	two.Sign(cid, c.IDs[0])
	two.Sign(cid, c.IDs[1])
	propose(two)
	// A proposal a leader accepted can still be lost when leadership
	// moves before it commits (a loaded machine): propose again until
	// every member has refused it.
	waited := 0
	c.RunUntil(t, func() bool {
		for i := range c.Members {
			if c.Node(i).Status().Counters.InvalidEntries == 0 {
				if waited++; waited%200 == 0 {
					propose(two)
				}
				return false
			}
		}
		return true
	})
	for i := range c.Members {
		require.Equal(t, 5, c.Node(i).Status().Members)
		require.NotEmpty(t, c.Node(i).Status().Alarms)
	}
	three := round.NewAddMember(newcomer.ID)
	three.Sign(cid, newcomer)
	for _, i := range []int{0, 2, 4} {
		three.Sign(cid, c.IDs[i])
	}
	propose(three)
	// Raft turns a conf change proposed while another is pending into an
	// empty entry: propose again until the member is in.
	waited = 0
	c.RunUntil(t, func() bool {
		for i := range c.Members {
			if c.Node(i).Status().Members != 6 {
				if waited++; waited%200 == 0 {
					propose(three)
				}
				return false
			}
		}
		return true
	})
}

// TestOldBlobsAreCollected: with retain_rounds 1, blobs older than the
// window are deleted; the applied model and the recent rounds' stay.
func TestOldBlobsAreCollected(t *testing.T) {
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 8, Retain: 1})
	c.RunUntil(t, func() bool { return c.AllApplied(8) })
	blobs, err := c.Store(0).Blobs()
	require.NoError(t, err)
	// Rounds 5..8 are inside the window (2 x retain + 1 = 3 rounds behind
	// round 8): at most 4 rounds of 3 updates and a model, plus genesis.
	require.LessOrEqual(t, len(blobs), 4*4+1, "old blobs were not collected")
	require.True(t, c.Store(0).HasBlob(digest(t, c.Node(0).Status().Model)), "the applied model was deleted")
}

// TestForgedHeartbeatIsRefused: a member's heartbeat committing far beyond
// the log (it panicked the receiver's raft and killed the process) is
// refused at the Raft boundary and counted; the consortium keeps applying.
func TestForgedHeartbeatIsRefused(t *testing.T) {
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 3})
	c.RunUntil(t, func() bool { return c.AllApplied(1) })
	b, err := proto.Marshal(&pb.Message{Type: pb.MessageType_MsgHeartbeat.Enum(), From: proto.Uint64(round.RaftID(c.IDs[1].ID)),
		To: proto.Uint64(round.RaftID(c.IDs[0].ID)), Term: proto.Uint64(1 << 20), Commit: proto.Uint64(1 << 40)})
	require.NoError(t, err)
	c.Net.Inject(c.IDs[0].ID, wire.Inbound{Kind: wire.Raft, From: c.IDs[1].ID, Data: b})
	c.RunUntil(t, func() bool { return c.Node(0).Status().Counters.RaftRefused[round.RaftBadCommit] == 1 })
	c.RunUntil(t, func() bool { return c.AllApplied(3) })
	require.Empty(t, c.Node(0).Status().Halted)
}

// TestBadUpdateCostsItsAuthor: a member announces an update whose blob
// holds NaN. Every member checks the blob at the edge, says no Have for it
// and flags its author; the round closes with the others' updates and the
// next rounds go on. (It used to be included, fail aggregation and abandon
// every round.)
func TestBadUpdateCostsItsAuthor(t *testing.T) {
	c := membertest.MakeCluster(t, membertest.Options{Members: 4, Rounds: 4,
		Trainers: map[int]node.Trainer{3: membertest.Silent{}}})
	c.RunUntil(t, func() bool {
		for i := range 3 {
			if c.Node(i).Status().Applied < 1 {
				return false
			}
		}
		return true
	})
	st := c.Node(0).Status()
	dim := len(mustGenesis(t, c).Weights)
	delta := make([]float32, dim)
	delta[dim/2] = float32(math.NaN())
	blob := round.EncodeUpdate(delta)
	d, err := c.Store(3).PutBlob(blob)
	require.NoError(t, err)
	c.Members[3].Node().Gate().Serve(d)
	ann := &round.Message{Kind: round.KindAnnounce, Round: st.Applied + 1, Base: digest(t, st.Model), Digest: d,
		Length: int64(len(blob)), Examples: 100}
	ann.Sign(c.Node(0).Consortium(), c.IDs[3])
	for i := range 3 {
		c.Net.Inject(c.IDs[i].ID, wire.Inbound{Kind: wire.Gossip, From: c.IDs[3].ID, Data: ann.Encode(), Msg: ann})
	}
	c.RunUntil(t, func() bool {
		for i := range 3 {
			if c.Node(i).Status().Applied < 4 {
				return false
			}
		}
		return true
	})
	for i := range 3 {
		s := c.Node(i).Status()
		require.Equal(t, uint64(1), s.Counters.ExcludedUpdates, "member %d", i)
		require.Empty(t, s.Halted)
		require.Equal(t, st.Applied+3, s.Applied)
	}
	require.False(t, c.Store(0).HasBlob(d), "the bad blob was stored")
}

func mustGenesis(t *testing.T, c *membertest.Cluster) *fedavg.Global {
	t.Helper()
	g, err := local.Genesis(local.Spec(c.Manifest), c.Manifest.Model.InitSeed)
	require.NoError(t, err)
	return g
}

// TestRestartWithoutTheAppliedModel: a member killed after persisting an
// applied (or installed) state and before storing its model blob starts
// anyway and fetches the model through the machine's tasks (New used to
// fetch it itself, and failed when no member was reachable yet).
func TestRestartWithoutTheAppliedModel(t *testing.T) {
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 5})
	c.RunUntil(t, func() bool { return c.AllApplied(2) })
	c.Stop(1)
	db, err := store.Open(c.Dirs[1], store.Options{NoSync: true})
	require.NoError(t, err)
	last, err := db.LastApplied()
	require.NoError(t, err)
	require.NoError(t, db.DeleteBlob(last.Model))
	require.NoError(t, db.Close())
	c.Start(t, 1)
	c.RunUntil(t, func() bool { return c.AllApplied(5) })
	require.Equal(t, c.Node(0).Status().Model, c.Node(1).Status().Model)
	require.True(t, c.Store(1).HasBlob(last.Model), "the missing model was fetched")
}

// TestBlobsCollectedAcrossRestart: blobs stored before a restart are
// collected once they leave the window, like those of the current run
// (they used to stay on disk for ever, raw updates included).
func TestBlobsCollectedAcrossRestart(t *testing.T) {
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 10, Retain: 1})
	c.RunUntil(t, func() bool { return c.AllApplied(4) })
	c.Stop(0)
	c.Start(t, 0)
	c.RunUntil(t, func() bool { return c.AllApplied(10) })
	blobs, err := c.Store(0).Blobs()
	require.NoError(t, err)
	require.LessOrEqual(t, len(blobs), 4*4+1, "blobs from before the restart were not collected")
}

// TestInvalidReportsAreBounded: a member flooding signed Invalid reports
// with long reasons raises one alarm per round with bounded text; every
// report is counted.
func TestInvalidReportsAreBounded(t *testing.T) {
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 2})
	c.RunUntil(t, func() bool { return c.AllApplied(1) })
	before := len(c.Node(0).Status().Alarms)
	long := strings.Repeat("x", 10000)
	for i := range 500 {
		msg := &round.Message{Kind: round.KindInvalid, Round: 1, Index: uint64(i + 1), Reason: long}
		msg.Sign(c.Node(0).Consortium(), c.IDs[2])
		c.Net.Inject(c.IDs[0].ID, wire.Inbound{Kind: wire.Gossip, From: c.IDs[2].ID, Msg: msg})
	}
	c.RunUntil(t, func() bool { return c.Node(0).Status().Counters.InvalidReports >= 500 })
	st := c.Node(0).Status()
	require.Equal(t, before+1, len(st.Alarms), "one alarm for the flood")
	require.Less(t, len(st.Alarms[len(st.Alarms)-1]), 400, "the attacker's text is clipped")
}

// TestEquivocationKeptAsEvidence: a member announcing two different updates
// for one round is caught; the evidence (both signed messages) is
// persisted, checks for anyone, is shown by status and survives a restart.
func TestEquivocationKeptAsEvidence(t *testing.T) {
	c := membertest.MakeCluster(t, membertest.Options{Members: 4, Rounds: 6,
		Trainers: map[int]node.Trainer{3: membertest.Silent{}}})
	c.RunUntil(t, func() bool { return c.Node(0).Status().Applied >= 1 })
	st := c.Node(0).Status()
	cid := c.Node(0).Consortium()
	var anns []*round.Message
	for i := range 2 {
		a := &round.Message{Kind: round.KindAnnounce, Round: st.Applied + 1, Base: digest(t, st.Model), Digest: round.Digest{byte(i + 1)},
			Length: int64(4 * len(mustGenesis(t, c).Weights)), Examples: 10}
		a.Sign(cid, c.IDs[3])
		anns = append(anns, a)
		c.Net.Inject(c.IDs[0].ID, wire.Inbound{Kind: wire.Gossip, From: c.IDs[3].ID, Msg: a})
	}
	c.RunUntil(t, func() bool { return c.Node(0).Status().Counters.Equivocations == 1 })
	require.Len(t, c.Node(0).Status().Evidence, 1)
	kept, err := c.Store(0).List("evidence")
	require.NoError(t, err)
	require.Len(t, kept, 1)
	e, err := round.DecodeEvidence(kept[0])
	require.NoError(t, err)
	require.NoError(t, e.Verify(cid), "the evidence proves the equivocation to anyone")
	c.Stop(0)
	c.Start(t, 0)
	ev := c.Node(0).Status().Evidence
	require.Len(t, ev, 1, "evidence shown after a restart")
	require.Equal(t, c.IDs[3].ID.String(), ev[0].Author)
}
