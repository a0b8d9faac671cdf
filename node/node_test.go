package node

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/store"
)

type fixedTrainer struct{ scale float32 }

func (f fixedTrainer) Train(_ context.Context, r uint64, g *fedavg.Global, _ fedavg.TrainConfig) ([]float32, int64, error) {
	d := make([]float32, len(g.Weights))
	for i := range d {
		d[i] = f.scale * float32(r) * 1e-4
	}
	return d, 100, nil
}

type testNet struct {
	dbs   []*store.DB
	nodes []*Node
	ids   []identity.Identity
	net   *MemNet
	man   *manifest.Manifest
}

func newTestNet(t *testing.T, n int) *testNet { return newTestNetRounds(t, n, 2) }

// newTestNetRounds starts n genesis members for the given rounds, plus
// joiners that are not in the manifest.
func newTestNetRounds(t *testing.T, n, rounds int, joiners ...identity.Identity) *testNet {
	t.Helper()
	return newTestNetRetain(t, n, rounds, 0, joiners...)
}

// newTestNetRetain is newTestNetRounds with the manifest's retain_rounds
// (0: the default) and the members' stores kept in tn.dbs.
func newTestNetRetain(t *testing.T, n, rounds, retain int, joiners ...identity.Identity) *testNet {
	t.Helper()
	tn := &testNet{net: NewMemNet(1)}
	var pids []identity.PeerID
	for i := range n {
		tn.ids = append(tn.ids, identity.Derive(42, i))
		pids = append(pids, tn.ids[i].ID)
	}
	tn.man = manifest.Example(pids)
	tn.man.Model.Arch = "logreg"
	tn.man.Training.Rounds = rounds
	if retain > 0 {
		tn.man.Round.RetainRounds = retain
	}
	tn.man.Round.Deadline = manifest.Duration(2 * time.Second)
	require.NoError(t, tn.man.Validate())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	genesis := len(tn.ids)
	tn.ids = append(tn.ids, joiners...)
	for i, id := range tn.ids {
		db, err := store.Open(t.TempDir(), store.Options{NoSync: true})
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		tn.dbs = append(tn.dbs, db)
		h := &lateHandler{}
		conn := tn.net.Join(id.ID, h, func(d round.Digest) ([]byte, error) { return db.Blob(d) })
		nd, err := New(Config{Identity: id, Manifest: tn.man, Store: db, Network: conn, Trainer: fixedTrainer{scale: float32(i + 1)},
			Joining: i >= genesis})
		require.NoError(t, err)
		h.n.Store(nd)
		tn.nodes = append(tn.nodes, nd)
		done := make(chan struct{})
		go func() { defer close(done); _ = nd.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return tn
}

type lateHandler struct{ n atomic.Pointer[Node] }

func (h *lateHandler) HandleGossip(from identity.PeerID, b []byte) {
	if n := h.n.Load(); n != nil {
		n.HandleGossip(from, b)
	}
}
func (h *lateHandler) HandleRaft(from identity.PeerID, b []byte) {
	if n := h.n.Load(); n != nil {
		n.HandleRaft(from, b)
	}
}

// run ticks every node until cond holds.
func (tn *testNet) run(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "condition not reached")
		for _, n := range tn.nodes {
			n.Tick()
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestNodesAgreeOverMemNet(t *testing.T) {
	tn := newTestNet(t, 3)
	tn.run(t, func() bool {
		for _, n := range tn.nodes {
			if n.Status().Applied < 2 {
				return false
			}
		}
		return true
	})
	s0 := tn.nodes[0].Status()
	require.Equal(t, "done", s0.Phase)
	for _, n := range tn.nodes[1:] {
		require.Equal(t, s0.Model, n.Status().Model)
	}
	var d [32]byte
	copy(d[:], mustHex(t, s0.Model))
	require.True(t, tn.nodes[1].Servable(d), "an applied model is servable")
	require.False(t, tn.nodes[1].Servable([32]byte{1}), "an unnamed digest is not")
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b := make([]byte, len(s)/2)
	for i := range b {
		var v byte
		for _, c := range s[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				v |= byte(c-'a') + 10
			}
		}
		b[i] = v
	}
	return b
}

func TestCheckGossip(t *testing.T) {
	tn := newTestNet(t, 3)
	n := tn.nodes[0]
	cid := n.Consortium()
	sign := func(id identity.Identity, r uint64) []byte {
		m := &round.Message{Kind: round.KindHave, Round: r, Digest: round.Digest{7}}
		m.Sign(cid, id)
		return m.Encode()
	}
	a, b := tn.ids[1], tn.ids[2]
	outsider := identity.Derive(99, 0)
	for _, tc := range []struct {
		name    string
		author  identity.PeerID
		msg     []byte
		verdict int
		reason  string
	}{
		{"valid", a.ID, sign(a, 1), GossipAccept, ""},
		{"malformed", a.ID, []byte("{not json"), GossipReject, "malformed"},
		{"author mismatch", a.ID, sign(b, 1), GossipReject, "author_mismatch"},
		{"not a member", outsider.ID, sign(outsider, 1), GossipReject, "not_member"},
		{"out of window", a.ID, sign(a, 9), GossipIgnore, "stale"},
		{"forged signature", a.ID, func() []byte {
			m := &round.Message{Kind: round.KindHave, Round: 1, Digest: round.Digest{7}}
			m.Sign(cid, b)
			m.Author = a.ID // re-signed claim: a's name, b's signature
			return m.Encode()
		}(), GossipReject, "bad_signature"},
	} {
		v, reason := n.CheckGossip(tc.author, tc.msg)
		require.Equal(t, tc.verdict, v, tc.name)
		require.Equal(t, tc.reason, reason, tc.name)
	}
}

func TestHandleRaftFromWrongSenderIsDropped(t *testing.T) {
	ids := []identity.Identity{identity.Derive(42, 0), identity.Derive(42, 1), identity.Derive(42, 2)}
	man := manifest.Example([]identity.PeerID{ids[0].ID, ids[1].ID, ids[2].ID})
	man.Model.Arch = "logreg"
	require.NoError(t, man.Validate())
	db, err := store.Open(t.TempDir(), store.Options{NoSync: true})
	require.NoError(t, err)
	defer db.Close()
	// Not running: whatever HandleRaft queues stays queued, so Busy counts it.
	n, err := New(Config{Identity: ids[0], Manifest: man, Store: db, Network: NewMemNet(1).Join(ids[0].ID, nil, nil), Trainer: fixedTrainer{1}})
	require.NoError(t, err)
	msg := func(from identity.PeerID) []byte {
		b, err := proto.Marshal(&pb.Message{Type: pb.MessageType_MsgHeartbeat.Enum(), From: proto.Uint64(round.RaftID(from)),
			To: proto.Uint64(round.RaftID(ids[0].ID)), Term: proto.Uint64(1)})
		require.NoError(t, err)
		return b
	}
	n.HandleRaft(ids[2].ID, msg(ids[1].ID)) // claims to be member 1, arrives from member 2
	require.Zero(t, n.Busy(), "a Raft message from the wrong sender reached the loop")
	n.HandleRaft(ids[1].ID, msg(ids[1].ID))
	require.EqualValues(t, 1, n.Busy(), "the genuine message is queued for the loop")
}

// TestJoinerCatchesUp adds a fourth member after genesis with the signatures
// of a majority: it starts from the genesis configuration as a joiner,
// catches up through the log and ends on the others' digest.
func TestJoinerCatchesUp(t *testing.T) {
	joiner := identity.Derive(42, 3)
	tn := newTestNetRounds(t, 3, 4, joiner)
	tn.run(t, func() bool { return tn.nodes[0].Status().Applied >= 1 })
	req := round.NewAddMember(joiner.ID)
	req.Sign(tn.nodes[0].Consortium(), joiner)
	req.Sign(tn.nodes[0].Consortium(), tn.ids[0])
	req.Sign(tn.nodes[0].Consortium(), tn.ids[1])
	proposed := false
	tn.run(t, func() bool {
		if !proposed {
			for _, n := range tn.nodes[:3] {
				if n.Status().Leader && n.ProposeAddMember(context.Background(), req) == nil {
					proposed = true
				}
			}
		}
		for _, n := range tn.nodes {
			if n.Status().Applied < 4 {
				return false
			}
		}
		return true
	})
	want := tn.nodes[0].Status().Model
	for i, n := range tn.nodes {
		require.Equal(t, want, n.Status().Model, "member %d", i)
		require.Equal(t, 4, n.Status().Members, "member %d", i)
	}
}

// TestAddMemberThreeOfFive: an AddMember request signed by 2 of 5 members is
// committed to the log but invalid (membership stays 5); signed by 3 of 5
// it adds the member everywhere.
func TestAddMemberThreeOfFive(t *testing.T) {
	newcomer := identity.Derive(42, 5)
	tn := newTestNetRounds(t, 5, 6)
	tn.run(t, func() bool { return tn.nodes[0].Status().Applied >= 1 })
	cid := tn.nodes[0].Consortium()
	// propose hands req to the leader, retrying while leadership moves or
	// raft drops the proposal (a transfer in progress).
	propose := func(req *round.AddMember) {
		t.Helper()
		done := false
		tn.run(t, func() bool {
			for _, n := range tn.nodes {
				if !done && n.Status().Leader {
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
	two.Sign(cid, tn.ids[0])
	two.Sign(cid, tn.ids[1])
	propose(two)
	tn.run(t, func() bool {
		for _, n := range tn.nodes {
			if n.Status().Counters.InvalidEntries == 0 {
				return false
			}
		}
		return true
	})
	for _, n := range tn.nodes {
		require.Equal(t, 5, n.Status().Members)
		require.NotEmpty(t, n.Status().Alarms)
	}
	three := round.NewAddMember(newcomer.ID)
	three.Sign(cid, newcomer)
	for _, i := range []int{0, 2, 4} {
		three.Sign(cid, tn.ids[i])
	}
	propose(three)
	// Raft turns a conf change proposed while another is pending into an
	// empty entry: propose again until the member is in.
	waited := 0
	tn.run(t, func() bool {
		for _, n := range tn.nodes {
			if n.Status().Members != 6 {
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
	tn := newTestNetRetain(t, 3, 8, 1)
	tn.run(t, func() bool {
		for _, n := range tn.nodes {
			if n.Status().Applied < 8 {
				return false
			}
		}
		return true
	})
	blobs, err := tn.dbs[0].Blobs()
	require.NoError(t, err)
	// Rounds 5..8 are inside the window (2 x retain + 1 = 3 rounds behind
	// round 8): at most 4 rounds of 3 updates and a model, plus genesis.
	require.LessOrEqual(t, len(blobs), 4*4+1, "old blobs were not collected")
	final := mustHex(t, tn.nodes[0].Status().Model)
	var d store.Digest
	copy(d[:], final)
	require.True(t, tn.dbs[0].HasBlob(d), "the applied model was deleted")
}
