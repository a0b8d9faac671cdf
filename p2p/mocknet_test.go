package p2p

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/wire"
)

// The tests in this file run gossip between 20 members over mocknet inside
// a synctest bubble: time is virtual, so heartbeats and waits cost only the
// work they do. Everything started in a bubble is stopped before it ends
// (t.Cleanup runs inside the bubble): every pubsub's context is cancelled,
// then the mocknet is closed.

// mnMembers is the size of the consortium in these tests.
const mnMembers = 20

// mnQuiet is how long a test lets gossip run after the last expected
// delivery before counting, so that a late or duplicate delivery shows.
const mnQuiet = 3 * time.Second

// mnNet is a mocknet whose first peers are members running our gossip.
type mnNet struct {
	mn      mocknet.Mocknet
	ids     []identity.Identity
	members []identity.PeerID
	hs      []host.Host
	gs      []*htGossipMember
	logs    []*htLog
}

// mnLogger returns a logger at level that only keeps what it is given:
// twenty members' pubsub logs would drown the test output. Debug logs cost
// time (pubsub logs every RPC): only the test that reads them asks for them.
func mnLogger(t testing.TB, level slog.Level) (*slog.Logger, *htLog) {
	l := &htLog{t: t, done: true}
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: level})), l
}

// mnRace reports whether the test binary was built with -race.
func mnRace() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// mnBubble runs f in a synctest bubble. Under the race detector the process
// runs on one P meanwhile: with more, ThreadSanitizer's runtime now and then
// aborts the whole test binary in bubbles this busy ("CHECK failed:
// tsan_rtl.cpp:346", golang/go#78156). The tests here do not run in
// parallel, so no other test sees the change.
func mnBubble(t *testing.T, f func(*testing.T)) {
	if mnRace() {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	}
	synctest.Test(t, f)
}

// mnAddPeer adds a mocknet peer with id's Ed25519 key and a fake address.
func mnAddPeer(t testing.TB, mn mocknet.Mocknet, id identity.Identity, i int) host.Host {
	t.Helper()
	h, err := mn.AddPeer(privKey(id), ma.StringCast(fmt.Sprintf("/ip4/10.0.%d.%d/tcp/4001", i/250, i%250+1)))
	if err != nil {
		t.Fatal(err)
	}
	if h.ID() != toPeer(id.ID) {
		t.Fatalf("peer %d: mocknet host %s, identity %s", i, h.ID(), id.ID)
	}
	return h
}

// mnStart adds n members (identity.Derive(seed, i)) to a new mocknet and
// starts the gossip of the first honest of them as the Host does
// (htNewGossip: newGossip, the node's Gate, an inbox a recorder pulls),
// logging at level; the others get a host only. It neither
// links nor connects them: the caller adds its other peers first. Call it
// inside the bubble.
func mnStart(t *testing.T, seed uint64, n, honest int, level slog.Level) *mnNet {
	t.Helper()
	net := &mnNet{mn: mocknet.New()}
	t.Cleanup(func() { net.mn.Close() }) // registered first, runs after every pubsub stopped
	for i := range n {
		net.ids = append(net.ids, identity.Derive(seed, i))
	}
	net.members = htIDs(net.ids...)
	for i, id := range net.ids {
		h := mnAddPeer(t, net.mn, id, i)
		net.hs = append(net.hs, h)
		if i >= honest {
			continue
		}
		log, l := mnLogger(t, level)
		net.gs = append(net.gs, htNewGossip(t, h, id, net.members, log))
		net.logs = append(net.logs, l)
	}
	return net
}

// mnSettle waits until every goroutine in the bubble is blocked, so that
// each host's identify has taken in the protocol its pubsub registered
// before any connection exists. Connecting right after starting the pubsubs
// left about one run in 60 with a pair of members that never saw each
// other in the topic: one had learnt only the other's identify protocols
// (an answer from before its snapshot included pubsub, and no identify
// push after it), so it never opened a pubsub stream to it.
func mnSettle() { synctest.Wait() }

// connectAll links and connects every pair of peers in the mocknet, once
// the bubble has settled.
func (net *mnNet) connectAll(t *testing.T) {
	t.Helper()
	mnSettle()
	if err := net.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := net.mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
}

// waitTopics waits until the topic of each member i running our gossip lists
// every member of group(i) other than itself.
func (net *mnNet) waitTopics(t *testing.T, group func(i int) []int) {
	t.Helper()
	want := map[*pubsub.Topic][]peer.ID{}
	for i, gm := range net.gs {
		for _, j := range group(i) {
			if j != i {
				want[gm.g.topic] = append(want[gm.g.topic], net.hs[j].ID())
			}
		}
	}
	htWaitTopic(t, want)
}

// cut partitions the members in a from those in b: it removes the links
// between them and closes their connections (removing a link leaves the
// connections on it open).
//
// mocknet closes a connection by resetting its streams first and
// forgetting the connection after (the swarm forgets it first and refuses
// new streams). A pubsub whose stream is reset in between finds the peer
// still connected, opens a new stream on the closing connection, and
// nothing ever resets that one: the peer would stay in its topic for good.
// So once the bubble is idle, and the connections are gone from every
// peer's view, cut resets whatever streams they still hold.
func (net *mnNet) cut(t *testing.T, a, b []int) {
	t.Helper()
	var closed []network.Conn
	for _, i := range a {
		for _, j := range b {
			hi, hj := net.hs[i], net.hs[j]
			closed = append(closed, hi.Network().ConnsToPeer(hj.ID())...)
			closed = append(closed, hj.Network().ConnsToPeer(hi.ID())...)
			if err := net.mn.UnlinkPeers(hi.ID(), hj.ID()); err != nil {
				t.Fatal(err)
			}
			if err := net.mn.DisconnectPeers(hi.ID(), hj.ID()); err != nil {
				t.Fatal(err)
			}
		}
	}
	synctest.Wait()
	for _, c := range closed {
		for _, s := range c.GetStreams() {
			s.Reset()
		}
	}
}

// join heals what cut did: it links and connects every member in a with
// every member in b.
func (net *mnNet) join(t *testing.T, a, b []int) {
	t.Helper()
	for _, i := range a {
		for _, j := range b {
			if _, err := net.mn.LinkPeers(net.hs[i].ID(), net.hs[j].ID()); err != nil {
				t.Fatal(err)
			}
			if _, err := net.mn.ConnectPeers(net.hs[i].ID(), net.hs[j].ID()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// everyone is the group of all members.
func (net *mnNet) everyone(int) []int {
	var all []int
	for j := range net.gs {
		all = append(all, j)
	}
	return all
}

// publish has member i publish a signed Have of round r with digest byte d
// and returns the message.
func (net *mnNet) publish(t *testing.T, i int, r uint64, d byte) []byte {
	t.Helper()
	msg := htSign(net.ids[i], r, d)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := net.gs[i].g.publish(ctx, msg); err != nil {
		t.Fatalf("member %d publishing: %v", i, err)
	}
	return msg
}

// mnSent is a message and its author.
type mnSent struct {
	author int
	msg    []byte
}

// waitDelivered waits until every member in to has msg from its author.
func (net *mnNet) waitDelivered(t *testing.T, what string, s mnSent, to []int) {
	t.Helper()
	htWait(t, 10*time.Second, what, func() bool {
		for _, i := range to {
			if i != s.author && !net.gs[i].rec.hasGossip(net.ids[s.author].ID, s.msg) {
				return false
			}
		}
		return true
	})
}

// checkDeliveries lets gossip run for mnQuiet, then checks that member i
// was handed exactly the messages of sent for which reaches(i, s) holds,
// each once, and counted each of them accepted. It returns the total
// number of deliveries.
func (net *mnNet) checkDeliveries(t *testing.T, sent []mnSent, reaches func(i int, s mnSent) bool) int {
	t.Helper()
	time.Sleep(mnQuiet)
	synctest.Wait()
	total := 0
	for i, gm := range net.gs {
		var want [][]byte
		for _, s := range sent {
			if s.author != i && reaches(i, s) {
				want = append(want, s.msg)
			}
		}
		gm.rec.mu.Lock()
		got := slices.Clone(gm.rec.gossip)
		gm.rec.mu.Unlock()
		total += len(got)
		for _, d := range got {
			k := slices.IndexFunc(sent, func(s mnSent) bool { return bytes.Equal(s.msg, d.msg) })
			switch {
			case k < 0:
				t.Errorf("member %d was handed a message nobody sent", i)
			case !bytes.Equal(d.from, net.ids[sent[k].author].ID):
				t.Errorf("member %d was handed member %d's message as from %s", i, sent[k].author, d.from)
			}
		}
		for _, w := range want {
			n := 0
			for _, d := range got {
				if bytes.Equal(d.msg, w) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("member %d was handed a message %d times, want once", i, n)
			}
		}
		if len(got) != len(want) {
			t.Errorf("member %d was handed %d messages, want %d", i, len(got), len(want))
		}
		if a := gm.stats.Get("gossip", ReasonAccepted); a != uint64(len(want)) {
			t.Errorf("member %d counted %d accepted, want %d: %v", i, a, len(want), gm.stats.Snapshot())
		}
	}
	return total
}

// TestMocknetGossipTwentyMembers: 20 members, all connected; three of them
// publish a signed round message each, and each message reaches the 19
// others exactly once.
func TestMocknetGossipTwentyMembers(t *testing.T) {
	mnBubble(t, func(t *testing.T) {
		net := mnStart(t, 40, mnMembers, mnMembers, slog.LevelInfo)
		net.connectAll(t)
		net.waitTopics(t, net.everyone)

		var sent []mnSent
		for k, i := range []int{0, 7, 19} {
			sent = append(sent, mnSent{i, net.publish(t, i, htRound, byte(k+1))})
		}
		for _, s := range sent {
			net.waitDelivered(t, fmt.Sprintf("member %d's message at every member", s.author), s, net.everyone(0))
		}
		all := func(int, mnSent) bool { return true }
		if got, want := net.checkDeliveries(t, sent, all), 3*(mnMembers-1); got != want {
			t.Errorf("%d deliveries in all, want %d", got, want)
		}
	})
}

// TestMocknetGossipPartition: members 0-9 and 10-19 are cut apart (links
// removed and connections closed). Each half's messages stay within it.
// After the halves are linked and connected again, a new message from
// either half reaches all 19 others, and what was published during the
// partition stays where it was: gossip does not carry it across later
// (catching up is the sync protocol's job).
func TestMocknetGossipPartition(t *testing.T) {
	mnBubble(t, func(t *testing.T) {
		const half = mnMembers / 2
		net := mnStart(t, 41, mnMembers, mnMembers, slog.LevelInfo)
		net.connectAll(t)
		net.waitTopics(t, net.everyone)
		side := func(i int) int { return i / half }
		sameSide := func(i int) []int {
			var g []int
			for j := range mnMembers {
				if side(j) == side(i) {
					g = append(g, j)
				}
			}
			return g
		}

		var left, right []int
		for i := range mnMembers {
			if side(i) == 0 {
				left = append(left, i)
			} else {
				right = append(right, i)
			}
		}
		net.cut(t, left, right)
		htWait(t, 10*time.Second, "every member to drop the other half from its topic", func() bool {
			for i, gm := range net.gs {
				for _, p := range gm.g.peers() {
					j := slices.IndexFunc(net.hs, func(h host.Host) bool { return h.ID() == p })
					if j >= 0 && side(j) != side(i) {
						return false
					}
				}
			}
			return true
		})
		for _, a := range left {
			for _, b := range right {
				if len(net.hs[a].Network().ConnsToPeer(net.hs[b].ID())) != 0 {
					t.Fatalf("members %d and %d still connected across the partition", a, b)
				}
			}
		}

		var sent []mnSent
		for k, i := range []int{0, 5, 12, 19} {
			sent = append(sent, mnSent{i, net.publish(t, i, htRound, byte(k+1))})
		}
		for _, s := range sent {
			net.waitDelivered(t, fmt.Sprintf("member %d's message within its half", s.author), s, sameSide(s.author))
		}
		within := func(i int, s mnSent) bool { return side(i) == side(s.author) }
		if got, want := net.checkDeliveries(t, sent, within), len(sent)*(half-1); got != want {
			t.Errorf("%d deliveries during the partition, want %d", got, want)
		}

		// Heal. The messages above are older than the heartbeats whose
		// message IDs gossipsub advertises (IHAVE), so they do not cross.
		net.join(t, left, right)
		time.Sleep(time.Second) // two heartbeats
		net.waitTopics(t, net.everyone)

		healed := []mnSent{
			{3, net.publish(t, 3, htNext, 10)},
			{16, net.publish(t, 16, htNext, 11)},
		}
		for _, s := range healed {
			net.waitDelivered(t, fmt.Sprintf("member %d's message at every member after the heal", s.author), s, net.everyone(0))
		}
		after := func(i int, s mnSent) bool {
			return within(i, s) || slices.ContainsFunc(healed, func(h mnSent) bool { return bytes.Equal(h.msg, s.msg) })
		}
		if got, want := net.checkDeliveries(t, append(sent, healed...), after), len(sent)*(half-1)+len(healed)*(mnMembers-1); got != want {
			t.Errorf("%d deliveries in all, want %d", got, want)
		}
	})
}

// mnTracer records, for one message, the peers a pubsub sent it to and
// whether it delivered it to its own subscribers; it counts nothing else.
type mnTracer struct {
	gossipTracer
	data []byte

	mu        sync.Mutex
	sentTo    map[peer.ID]int
	delivered int
}

func newMNTracer(data []byte) *mnTracer {
	return &mnTracer{data: data, sentTo: map[peer.ID]int{}}
}

func (r *mnTracer) SendRPC(rpc *pubsub.RPC, p peer.ID) {
	for _, m := range rpc.GetPublish() {
		if bytes.Equal(m.GetData(), r.data) {
			r.mu.Lock()
			r.sentTo[p]++
			r.mu.Unlock()
		}
	}
}

func (r *mnTracer) DeliverMessage(m *pubsub.Message) {
	if bytes.Equal(m.GetData(), r.data) {
		r.mu.Lock()
		r.delivered++
		r.mu.Unlock()
	}
}

func (r *mnTracer) sends(p peer.ID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sentTo[p]
}

func (r *mnTracer) deliveries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.delivered
}

// mnRawPubsub starts gossipsub with the members' options on h, its peer
// filter and scores admitting everyone in all, without our validator: it
// accepts and forwards whatever it receives. Its context is cancelled when
// the test ends, before the mocknet closes.
func mnRawPubsub(t *testing.T, h host.Host, all []identity.PeerID, tr *mnTracer) *pubsub.Topic {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log, _ := mnLogger(t, slog.LevelInfo)
	tuning := gossipTuning{consortium: htConsortium, isMember: newAllowList(all), stats: &Stats{}, log: log}
	ps, err := pubsub.NewGossipSub(ctx, h, append(tuning.options(), pubsub.WithRawTracer(tr))...)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(gossipTopic(htConsortium))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Cancel)
	return topic
}

// TestMocknetGossipNonMember: a 21st peer, not a member, is linked and
// connected to the 20 members and publishes a round message it signed
// itself, over a pubsub that lets it talk to anyone. Nobody is handed it.
//
//   - Sent directly, it never reaches a member's validator: the members
//     score a non-member -1000, below the graylist threshold, and pubsub
//     drops its RPCs before validation. Nothing is counted in Stats; the
//     drop shows in the pubsub debug log only.
//   - Member 19 is compromised: its pubsub runs without our validator,
//     admits the stranger and forwards what it sends. Besides the stranger
//     it is connected to members 0-2 only, so it relays the message to
//     those three. Each of them rejects it, counts it under
//     gossip/not_member once, and forwards it to nobody: members 3-18,
//     connected to 0-2, never see it, and count nothing.
func TestMocknetGossipNonMember(t *testing.T) {
	mnBubble(t, func(t *testing.T) {
		const (
			relay   = mnMembers - 1 // the compromised member
			relayed = 3             // members 0..relayed-1 are connected to the relay
		)
		net := mnStart(t, 42, mnMembers, mnMembers-1, slog.LevelDebug)
		stranger := identity.Derive(42, 99)
		sh := mnAddPeer(t, net.mn, stranger, mnMembers)
		all := htIDs(append(slices.Clone(net.ids), stranger)...)
		msg := htSign(stranger, htRound, 1)

		strangerTrace, relayTrace := newMNTracer(msg), newMNTracer(msg)
		strangerTopic := mnRawPubsub(t, sh, all, strangerTrace)
		mnRawPubsub(t, net.hs[relay], all, relayTrace)

		// Link and connect every pair but the relay and members
		// relayed..18.
		mnSettle()
		peers := append(slices.Clone(net.hs), sh)
		for a := range peers {
			for b := a + 1; b < len(peers); b++ {
				if b == relay && a >= relayed {
					continue
				}
				if _, err := net.mn.LinkPeers(peers[a].ID(), peers[b].ID()); err != nil {
					t.Fatal(err)
				}
				if _, err := net.mn.ConnectPeers(peers[a].ID(), peers[b].ID()); err != nil {
					t.Fatal(err)
				}
			}
		}
		honest := net.gs[:relay]
		net.waitTopics(t, func(i int) []int {
			g := []int{}
			for j := range relay {
				g = append(g, j)
			}
			if i < relayed {
				g = append(g, relay)
			}
			return g
		})
		want := map[*pubsub.Topic][]peer.ID{}
		for _, h := range net.hs {
			want[strangerTopic] = append(want[strangerTopic], h.ID())
		}
		htWaitTopic(t, want)
		time.Sleep(time.Second) // two heartbeats: members 0-2 are in the relay's mesh

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := strangerTopic.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
		htWait(t, 10*time.Second, "the relayed message counted not_member by members 0-2", func() bool {
			for _, gm := range honest[:relayed] {
				if gm.stats.Get("gossip", wire.ReasonNotMember) == 0 {
					return false
				}
			}
			return true
		})
		time.Sleep(mnQuiet)
		synctest.Wait()

		// The stranger flooded it to every member, the relay included.
		for i, h := range net.hs {
			if n := strangerTrace.sends(h.ID()); n != 1 {
				t.Errorf("the stranger sent its message to member %d %d times, want once", i, n)
			}
		}
		if relayTrace.deliveries() != 1 {
			t.Errorf("the relay delivered the stranger's message %d times, want once", relayTrace.deliveries())
		}
		for i := range relayed {
			if n := relayTrace.sends(net.hs[i].ID()); n != 1 {
				t.Errorf("the relay forwarded the message to member %d %d times, want once", i, n)
			}
		}
		strangerID := toPeer(stranger.ID).String()
		for i, gm := range honest {
			// Exactly these counters: not_member once where the relay
			// reached, nothing anywhere else (no accept, no drop).
			want := map[string]uint64{}
			if i < relayed {
				want["gossip/"+wire.ReasonNotMember] = 1
			}
			if got := gm.stats.Snapshot(); !maps.Equal(got, want) {
				t.Errorf("member %d counted %v, want %v", i, got, want)
			}
			if n := gm.rec.gossipCount(); n != 0 {
				t.Errorf("member %d was handed %d messages, want none", i, n)
			}
			if !slices.ContainsFunc(strings.Split(net.logs[i].String(), "\n"), func(line string) bool {
				return strings.Contains(line, "graylisted peer; dropping RPC") && strings.Contains(line, "peer="+strangerID)
			}) {
				t.Errorf("member %d never dropped an RPC of the graylisted stranger", i)
			}
		}
	})
}
