package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/globalbrain/globalbrain/wire"
)

// The node's gate is the Host's Gate.
var _ Gate = (*round.Gate)(nil)

// Rounds of the tests' round messages: round.NewGate's window starts at
// [0, 2] (no round applied yet), so rounds 1 and 2 are current and
// htStale is ignored as stale.
const (
	htRound = 1
	htNext  = 2
	htStale = 9
)

// htSign returns a signed Have message of member id for round r.
func htSign(id identity.Identity, r uint64, d byte) []byte {
	m := round.Message{Kind: round.KindHave, Round: r, Digest: round.Digest{d}}
	m.Sign(htConsortium, id)
	return m.Encode()
}

// htRecorder is a node in miniature: it pulls a Host's inbox, keeps the
// gossip and Raft messages it receives, and answers sync requests.
type htRecorder struct {
	mu     sync.Mutex
	gossip []htDelivery
	raft   []htDelivery
	sync   func(round uint64) [][]byte // nil answers nothing
	syncs  int                         // sync requests received
}

type htDelivery struct {
	from identity.PeerID
	msg  []byte
	dec  any // the Gate's decoded value (gossip)
}

// run pulls in until the test ends or stop is called.
func (r *htRecorder) run(t testing.TB, in <-chan wire.Inbound) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-in:
				r.take(t, m)
			}
		}
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func (r *htRecorder) take(t testing.TB, m wire.Inbound) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch m.Kind {
	case wire.Gossip:
		r.gossip = append(r.gossip, htDelivery{m.From, m.Data, m.Msg})
	case wire.Raft:
		r.raft = append(r.raft, htDelivery{m.From, m.Data, nil})
	case wire.SyncRequest:
		r.syncs++
		if r.sync != nil {
			m.Reply <- r.sync(m.Round)
		}
	default:
		t.Errorf("inbound of kind %d", m.Kind)
	}
}

// setSync makes the recorder answer sync requests with f.
func (r *htRecorder) setSync(f func(uint64) [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sync = f
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

// htDecoded checks that a delivery carries the Gate's decoding of its
// message: a verified *round.Message by its author, which nothing needs to
// decode again.
func htDecoded(t testing.TB, d htDelivery) {
	t.Helper()
	m, ok := d.dec.(*round.Message)
	if !ok {
		t.Errorf("gossip from %s carries %T, want the Gate's *round.Message", d.from, d.dec)
		return
	}
	if !bytes.Equal(m.Author, d.from) || !bytes.Equal(m.Encode(), d.msg) {
		t.Errorf("gossip from %s carries %v, not the decoding of its bytes", d.from, m)
	}
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
		h, err := mn.AddPeer(privKey(id), ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 4001+i)))
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

// htNewGossip starts member id's gossip on h as the Host does (newGossip,
// the node's Gate, an inbox a recorder pulls), logging to log.
func htNewGossip(t testing.TB, h host.Host, id identity.Identity, members []identity.PeerID, log *slog.Logger) *htGossipMember {
	t.Helper()
	rec, stats := &htRecorder{}, &Stats{}
	c := htConfig(id, members, log)
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	in := newInbox(c.InboxSize, stats, log)
	g, err := newGossip(h, &c, newAllowList(c.Members), in, stats, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.close)
	rec.run(t, in.ch)
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
	m := htIDs(ids...)
	hs, connect := htMockHosts(t, ids)
	var ms []*htGossipMember
	want := map[*pubsub.Topic][]peer.ID{}
	log, _ := htLogger(t)
	for i, h := range hs {
		ms = append(ms, htNewGossip(t, h, ids[i], m, log))
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
		msgs[i] = htSign(gm.id, htRound, byte(i))
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
		gm.rec.mu.Lock()
		for _, d := range gm.rec.gossip {
			htDecoded(t, d)
		}
		gm.rec.mu.Unlock()
	}

	// The member's own refusals come back from Publish.
	if err := ms[0].g.publish(ctx, htSign(ids[1], htRound, 9)); err == nil {
		t.Error("publishing a message signed by another member succeeded")
	}
	if maxMessageBytes != round.MaxMessageBytes {
		t.Errorf("p2p bounds gossip messages at %d bytes, round at %d", maxMessageBytes, round.MaxMessageBytes)
	}
	if err := ms[0].g.publish(ctx, make([]byte, maxMessageBytes+1)); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("oversized publish: %v", err)
	}
	// Publish copies: reusing the buffer afterwards changes nothing.
	buf := htSign(ids[0], htNext, 1)
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
	m := htIDs(ids...)
	hs, connect := htMockHosts(t, ids)

	log, _ := htLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tuning := gossipTuning{consortium: htConsortium, isMember: newAllowList(m), stats: &Stats{}, log: log}
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
		gm := htNewGossip(t, hs[i], ids[i], m, log)
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
	htWait(t, 5*time.Second, "the garbage rejected as malformed everywhere", counted(wire.ReasonMalformed, 1))
	valid := htSign(ids[0], htRound, 1)
	if err := rogueTopic.Publish(ctx, valid); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "A's valid announcement after its malformed one", reachesAll(valid))

	// A message whose gossip author (A) did not sign the round message it
	// carries (B did): forged.
	forged := htSign(ids[1], htRound, 2)
	if err := rogueTopic.Publish(ctx, forged); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "the forged message counted author_mismatch", counted(wire.ReasonAuthorMismatch, 1))

	// A stranger's message, relayed by member A under the stranger's own
	// pubsub signature: its author is not a member.
	fromStranger := htSign(stranger, htRound, 3)
	if err := rogueTopic.Publish(ctx, fromStranger, pubsub.WithSecretKeyAndPeerId(privKey(stranger), toPeer(stranger.ID))); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "the stranger's message counted not_member", counted(wire.ReasonNotMember, 1))

	// A stale round is ignored (the Gate says Ignore) and counted.
	stale := htSign(ids[0], htStale, 4)
	if err := rogueTopic.Publish(ctx, stale); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "the stale message counted", counted(wire.ReasonStale, 1))

	// A still reaches everyone after all that.
	again := htSign(ids[0], htNext, 5)
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
