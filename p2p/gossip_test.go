package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/round"
)

// htSign returns a signed Have message of member id for round r.
func htSign(id identity.Identity, r uint64, d byte) []byte {
	m := round.Message{Kind: round.KindHave, Round: r, Digest: round.Digest{d}}
	m.Sign(htConsortium, id)
	return m.Encode()
}

// htValidate is the node's validator in miniature: the message must decode
// and verify, and rounds below 3 are stale.
func htValidate(_ identity.PeerID, b []byte) (Verdict, string) {
	m, err := round.DecodeMessage(b)
	if err != nil {
		return Reject, "malformed"
	}
	if err := m.Verify(htConsortium); err != nil {
		return Reject, "bad_signature"
	}
	if m.Round < 3 {
		return Ignore, "stale"
	}
	return Accept, ""
}

// htRecorder is a Handler that keeps what it receives.
type htRecorder struct {
	mu     sync.Mutex
	gossip []htDelivery
	raft   []htDelivery
}

type htDelivery struct {
	from identity.PeerID
	msg  []byte
}

func (r *htRecorder) HandleGossip(from identity.PeerID, msg []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gossip = append(r.gossip, htDelivery{from, msg})
}

func (r *htRecorder) HandleRaft(from identity.PeerID, msg []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.raft = append(r.raft, htDelivery{from, msg})
}

// hasGossip reports whether msg arrived from author.
func (r *htRecorder) hasGossip(author identity.PeerID, msg []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.gossip, func(d htDelivery) bool {
		return bytes.Equal(d.from, author) && bytes.Equal(d.msg, msg)
	})
}

func (r *htRecorder) gossipCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.gossip)
}

// htMockHosts returns mocknet hosts with the members' Ed25519 keys, all
// linked, and a function that connects them all. Connect only once every
// pubsub runs: as the Host's gater does, so that no pubsub opens its stream
// to a peer that has not registered the protocol yet.
func htMockHosts(t testing.TB, ids []identity.Identity) ([]host.Host, func()) {
	t.Helper()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	var hs []host.Host
	for i, id := range ids {
		h, err := mn.AddPeer(PrivKey(id), ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 4001+i)))
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	return hs, func() {
		if err := mn.ConnectAllButSelf(); err != nil {
			t.Fatal(err)
		}
	}
}

// htGossipMember is one member's gossip over a mocknet host.
type htGossipMember struct {
	id    identity.Identity
	g     *gossip
	rec   *htRecorder
	stats *Stats
}

func htNewGossip(t testing.TB, h host.Host, id identity.Identity, m *htMembers) *htGossipMember {
	t.Helper()
	log, _ := htLogger(t)
	rec, stats := &htRecorder{}, &Stats{}
	c := htConfig(id, m, log)
	c.Validate = htValidate
	c.Handler = rec
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	g, err := newGossip(h, &c, members(c.Members), stats, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.close)
	return &htGossipMember{id: id, g: g, rec: rec, stats: stats}
}

// htWaitTopic waits until every topic lists all the other peers.
func htWaitTopic(t testing.TB, want map[*pubsub.Topic][]peer.ID) {
	t.Helper()
	defer func() {
		if t.Failed() {
			for topic, ps := range want {
				t.Logf("topic lists %v, want %v", topic.ListPeers(), ps)
			}
		}
	}()
	htWait(t, 10*time.Second, "every member subscribed everywhere", func() bool {
		for topic, ps := range want {
			have := topic.ListPeers()
			for _, p := range ps {
				if !slices.Contains(have, p) {
					return false
				}
			}
		}
		return true
	})
}

func TestGossipReachesEveryMember(t *testing.T) {
	const n = 6
	var ids []identity.Identity
	for i := range n {
		ids = append(ids, identity.Derive(10, i))
	}
	m := newHTMembers(ids...)
	hs, connect := htMockHosts(t, ids)
	var ms []*htGossipMember
	want := map[*pubsub.Topic][]peer.ID{}
	for i, h := range hs {
		ms = append(ms, htNewGossip(t, h, ids[i], m))
	}
	connect()
	for i, gm := range ms {
		for j, h := range hs {
			if i != j {
				want[gm.g.topic] = append(want[gm.g.topic], h.ID())
			}
		}
	}
	htWaitTopic(t, want)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs := make([][]byte, n)
	for i, gm := range ms {
		msgs[i] = htSign(gm.id, 3, byte(i))
		if err := gm.g.publish(ctx, msgs[i]); err != nil {
			t.Fatalf("member %d publishing: %v", i, err)
		}
	}
	htWait(t, 10*time.Second, "every announcement at every member", func() bool {
		for i, gm := range ms {
			for j := range ms {
				if i != j && !gm.rec.hasGossip(ids[j].ID, msgs[j]) {
					return false
				}
			}
		}
		return true
	})
	time.Sleep(100 * time.Millisecond)
	for i, gm := range ms {
		if got := gm.rec.gossipCount(); got != n-1 {
			t.Errorf("member %d got %d messages, want %d (its own is not handed back)", i, got, n-1)
		}
		if got := gm.stats.Get("gossip", ReasonAccepted); got != n-1 {
			t.Errorf("member %d counted %d accepted, want %d: %v", i, got, n-1, gm.stats.Snapshot())
		}
	}

	// The member's own refusals come back from Publish.
	if err := ms[0].g.publish(ctx, htSign(ids[1], 3, 9)); err == nil {
		t.Error("publishing a message signed by another member succeeded")
	}
	if err := ms[0].g.publish(ctx, make([]byte, round.MaxMessageBytes+1)); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("oversized publish: %v", err)
	}
	// Publish copies: reusing the buffer afterwards changes nothing.
	buf := htSign(ids[0], 4, 1)
	sent := bytes.Clone(buf)
	if err := ms[0].g.publish(ctx, buf); err != nil {
		t.Fatal(err)
	}
	clear(buf)
	htWait(t, 10*time.Second, "the reused buffer's message everywhere", func() bool {
		for _, gm := range ms[1:] {
			if !gm.rec.hasGossip(ids[0].ID, sent) {
				return false
			}
		}
		return true
	})
}

// TestGossipValidator drives the receivers' validator from a rogue member
// whose pubsub has no validator of its own, so it can send anything.
func TestGossipValidator(t *testing.T) {
	const n = 4 // rogue member 0 and three honest members
	var ids []identity.Identity
	for i := range n {
		ids = append(ids, identity.Derive(11, i))
	}
	stranger := identity.Derive(11, 99)
	m := newHTMembers(ids...)
	hs, connect := htMockHosts(t, ids)

	log, _ := htLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tuning := gossipTuning{consortium: htConsortium, isMember: members(m.get), stats: &Stats{}, log: log}
	rogue, err := pubsub.NewGossipSub(ctx, hs[0], tuning.options()...)
	if err != nil {
		t.Fatal(err)
	}
	rogueTopic, err := rogue.Join(gossipTopic(htConsortium))
	if err != nil {
		t.Fatal(err)
	}
	rogueSub, err := rogueTopic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer rogueSub.Cancel()

	var honest []*htGossipMember
	want := map[*pubsub.Topic][]peer.ID{rogueTopic: nil}
	for i := 1; i < n; i++ {
		gm := htNewGossip(t, hs[i], ids[i], m)
		honest = append(honest, gm)
		want[rogueTopic] = append(want[rogueTopic], hs[i].ID())
		want[gm.g.topic] = []peer.ID{hs[0].ID()}
	}
	connect()
	htWaitTopic(t, want)

	counted := func(reason string, k uint64) func() bool {
		return func() bool {
			for _, gm := range honest {
				if gm.stats.Get("gossip", reason) < k {
					return false
				}
			}
			return true
		}
	}
	reachesAll := func(msg []byte) func() bool {
		return func() bool {
			for _, gm := range honest {
				if !gm.rec.hasGossip(ids[0].ID, msg) {
					return false
				}
			}
			return true
		}
	}

	// One malformed message from member A, then a valid one: the valid one
	// reaches every member (one rejection must not exile A).
	if err := rogueTopic.Publish(ctx, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "the garbage rejected as malformed everywhere", counted(ReasonMalformed, 1))
	valid := htSign(ids[0], 3, 1)
	if err := rogueTopic.Publish(ctx, valid); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "A's valid announcement after its malformed one", reachesAll(valid))

	// A message whose gossip author (A) did not sign the round message it
	// carries (B did): forged.
	forged := htSign(ids[1], 3, 2)
	if err := rogueTopic.Publish(ctx, forged); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "the forged message counted author_mismatch", counted(ReasonAuthorMismatch, 1))

	// A stranger's message, relayed by member A under the stranger's own
	// pubsub signature: its author is not a member.
	fromStranger := htSign(stranger, 3, 3)
	if err := rogueTopic.Publish(ctx, fromStranger, pubsub.WithSecretKeyAndPeerId(PrivKey(stranger), PeerID(stranger.ID))); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "the stranger's message counted not_member", counted(ReasonNotMember, 1))

	// A stale round is ignored (Validate says Ignore) and counted.
	stale := htSign(ids[0], 1, 4)
	if err := rogueTopic.Publish(ctx, stale); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "the stale message counted", counted("stale", 1))

	// A still reaches everyone after all that.
	again := htSign(ids[0], 4, 5)
	if err := rogueTopic.Publish(ctx, again); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "A's next valid announcement", reachesAll(again))

	for i, gm := range honest {
		for _, bad := range [][]byte{[]byte("garbage"), forged, fromStranger, stale} {
			gm.rec.mu.Lock()
			for _, d := range gm.rec.gossip {
				if bytes.Equal(d.msg, bad) {
					t.Errorf("honest member %d was handed a refused message %q", i+1, bad)
				}
			}
			gm.rec.mu.Unlock()
		}
		if got := gm.stats.Get("gossip", ReasonAccepted); got != 2 {
			t.Errorf("honest member %d accepted %d, want 2: %v", i+1, got, gm.stats.Snapshot())
		}
	}
}
