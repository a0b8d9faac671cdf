package p2p

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/wire"
)

// htBlobs is an in-memory BlobSource; what it holds its gate may serve.
type htBlobs struct {
	gate *round.Gate
	mu   sync.Mutex
	m    map[[32]byte][]byte
}

func (b *htBlobs) put(data []byte) [32]byte {
	d := sha256.Sum256(data)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[[32]byte][]byte{}
	}
	b.m[d] = data
	b.gate.Serve(d)
	return d
}

type htReader struct{ *bytes.Reader }

func (htReader) Close() error { return nil }

func (b *htBlobs) OpenBlob(d fedavg.Digest) (io.ReadSeekCloser, int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	data, ok := b.m[d]
	if !ok {
		return nil, 0, fs.ErrNotExist
	}
	return htReader{bytes.NewReader(data)}, int64(len(data)), nil
}

// htMember is a member running a full Host on loopback, and a recorder
// pulling its inbox as the node would.
type htMember struct {
	id    identity.Identity
	h     *Host
	rec   *htRecorder
	blobs *htBlobs
	log   *htLog
	stop  func() // stops the recorder
}

// close closes the Host, then stops the recorder.
func (m *htMember) close() {
	m.h.Close()
	if m.stop != nil {
		m.stop()
	}
}

// htFastKeeper redials within a fraction of a second.
var htFastKeeper = keeperParams{tick: 50 * time.Millisecond, backoffMin: 50 * time.Millisecond, backoffMax: 500 * time.Millisecond, dialTimeout: 2 * time.Second}

// htStart starts member id's Host on 127.0.0.1 with the given address book,
// with the node's Gate for the membership m, and a recorder pulling its
// inbox unless modify sets Config.InboxSize (those tests read the inbox
// themselves).
func htStart(t testing.TB, id identity.Identity, m []identity.PeerID, listen string, book []string, modify func(*Config)) *htMember {
	t.Helper()
	log, lines := htLogger(t)
	c := htConfig(id, m, log)
	mem := &htMember{id: id, rec: &htRecorder{}, blobs: &htBlobs{gate: c.Gate.(*round.Gate)}, log: lines}
	c.ListenAddrs = []string{listen}
	c.AddressBook = book
	c.Blobs = mem.blobs
	c.Limits = Limits{ReadTimeout: 2 * time.Second, IdleTimeout: 2 * time.Second}
	c.keeper = htFastKeeper
	if modify != nil {
		modify(&c)
	}
	h, err := New(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	mem.h = h
	if c.InboxSize == 0 {
		mem.stop = mem.rec.run(t, h.Inbox())
	}
	return mem
}

// htWaitMesh waits until every member is connected to all the others and
// sees them on the gossip topic.
func htWaitMesh(t testing.TB, ms ...*htMember) {
	t.Helper()
	htWait(t, 10*time.Second, "every member connected and subscribed", func() bool {
		for _, a := range ms {
			if len(a.h.Connected()) != len(ms)-1 || len(a.h.gossip.peers()) != len(ms)-1 {
				return false
			}
		}
		return true
	})
}

func TestHost(t *testing.T) {
	ids := []identity.Identity{identity.Derive(20, 0), identity.Derive(20, 1), identity.Derive(20, 2)}
	m := htIDs(ids...)
	// Each member knows only those started before it: the keepers dial the
	// address books and the mesh closes.
	a := htStart(t, ids[0], m, "/ip4/127.0.0.1/tcp/0", nil, nil)
	b := htStart(t, ids[1], m, "/ip4/127.0.0.1/tcp/0", a.h.Addrs(), nil)
	c := htStart(t, ids[2], m, "/ip4/127.0.0.1/udp/0/quic-v1", append(a.h.Addrs(), b.h.Addrs()...), nil)
	all := []*htMember{a, b, c}
	htWaitMesh(t, all...)

	if got := a.h.ID(); !bytes.Equal(got, ids[0].ID) {
		t.Errorf("ID() = %s, want %s", got, ids[0].ID)
	}
	for _, s := range c.h.Addrs() {
		if !strings.Contains(s, "/quic-v1/p2p/"+ids[2].ID.String()) {
			t.Errorf("Addrs() = %q: want a QUIC address ending in /p2p/<id>", s)
		}
	}
	if got, want := a.h.Connected(), []identity.PeerID{ids[1].ID, ids[2].ID}; !slices.EqualFunc(got, want, func(x, y identity.PeerID) bool { return bytes.Equal(x, y) }) {
		t.Errorf("Connected() = %v, want %v", got, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("gossip", func(t *testing.T) {
		var msgs [][]byte
		for i, mem := range all {
			msg := htSign(mem.id, htRound, byte(10+i))
			msgs = append(msgs, msg)
			if err := mem.h.Publish(ctx, msg); err != nil {
				t.Fatal(err)
			}
		}
		htWait(t, 10*time.Second, "every announcement everywhere", func() bool {
			for i, mem := range all {
				for j, from := range all {
					if i != j && !mem.rec.hasGossip(from.id.ID, msgs[j]) {
						return false
					}
				}
			}
			return true
		})
		if got := b.h.Stats().Get("gossip", ReasonAccepted); got < 2 {
			t.Errorf("B counted %d accepted: %v", got, b.h.Stats().Snapshot())
		}
		b.rec.mu.Lock()
		for _, d := range b.rec.gossip {
			htDecoded(t, d)
		}
		b.rec.mu.Unlock()
		if err := a.h.Publish(ctx, htSign(ids[1], htRound, 1)); err == nil {
			t.Error("A published a message B signed")
		}
	})

	t.Run("raft", func(t *testing.T) {
		if err := a.h.SendRaft(ctx, ids[1].ID, []byte("vote for me")); err != nil {
			t.Fatal(err)
		}
		htWait(t, 5*time.Second, "the Raft message at B", func() bool {
			b.rec.mu.Lock()
			defer b.rec.mu.Unlock()
			return slices.ContainsFunc(b.rec.raft, func(d htDelivery) bool {
				return bytes.Equal(d.from, ids[0].ID) && string(d.msg) == "vote for me"
			})
		})
		done, stop := context.WithCancel(ctx)
		stop()
		if err := a.h.SendRaft(done, ids[1].ID, []byte("late")); !errors.Is(err, context.Canceled) {
			t.Errorf("SendRaft with a cancelled context: %v", err)
		}
	})

	t.Run("fetch", func(t *testing.T) {
		blob := bytes.Repeat([]byte("update "), 100_000)
		d := b.blobs.put(blob)
		// No hint: A asks the connected members until one has it.
		got, err := a.h.Fetch(ctx, nil, d, 0)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("Fetch without a hint: %d bytes, %v", len(got), err)
		}
		// A hint that does not hold the blob: A falls back to the others.
		got, err = a.h.Fetch(ctx, ids[2].ID, d, 0)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("Fetch with a wrong hint: %d bytes, %v", len(got), err)
		}
		// Nobody has it.
		missing := sha256.Sum256([]byte("nobody has this"))
		if _, err := a.h.Fetch(ctx, ids[1].ID, missing, 0); err == nil {
			t.Fatal("fetched a blob nobody holds")
		}
	})

	t.Run("pull", func(t *testing.T) {
		good := htSign(ids[2], htRound, 42)
		stale := htSign(ids[2], htStale, 43)
		stranger := htSign(identity.Derive(20, 99), htRound, 44)
		own := htSign(ids[0], htRound, 45) // A's own: dropped without a count
		serve := func(r uint64) [][]byte {
			if r != htRound {
				return nil
			}
			return [][]byte{good, []byte("garbage"), stale, stranger, own}
		}
		b.rec.setSync(serve)
		c.rec.setSync(serve)
		got := a.h.Pull(ctx, htRound)
		if len(got) != 1 || !bytes.Equal(got[0].Data, good) {
			t.Fatalf("Pull returned %v, want only the valid message once", got)
		}
		if got[0].Kind != wire.Gossip || !bytes.Equal(got[0].From, ids[2].ID) {
			t.Errorf("Pull returned kind %d from %s, want gossip from %s", got[0].Kind, got[0].From, ids[2].ID)
		}
		htDecoded(t, htDelivery{got[0].From, got[0].Data, got[0].Msg})
		st := a.h.Stats()
		for _, reason := range []string{"pulled_malformed", "pulled_stale", "pulled_not_member"} {
			if st.Get(syncName, reason) != 1 {
				t.Errorf("%s counted %d times: %v", reason, st.Get(syncName, reason), st.Snapshot())
			}
		}
		if got := a.h.Pull(ctx, htNext); len(got) != 0 {
			t.Errorf("Pull of an empty round returned %v", got)
		}
	})

	t.Run("set members", func(t *testing.T) {
		// C leaves the consortium: A and B drop it, and C's redials are refused.
		two := htIDs(ids[0], ids[1])
		for _, mem := range all {
			mem.h.SetMembers(two)
		}
		htWait(t, 5*time.Second, "C disconnected from A and B", func() bool {
			return len(a.h.Connected()) == 1 && len(b.h.Connected()) == 1 &&
				!htConnected(a.h.h, c.h.h) && !htConnected(b.h.h, c.h.h)
		})
		// C applied the same membership, without itself; make it dial as
		// a stranger would.
		_ = c.h.h.Connect(ctx, htInfo(a.h.h))
		htWait(t, 5*time.Second, "A's gater refusing C", func() bool { return a.h.Stats().Get("gater", wire.ReasonNotMember) >= 1 })
		time.Sleep(100 * time.Millisecond)
		if htConnected(a.h.h, c.h.h) {
			t.Fatal("the removed member is connected again")
		}
		if got := a.h.Stats().Get("gater", ReasonEvicted); got != 1 {
			t.Errorf("A counted %d evictions", got)
		}
	})

	if err := a.h.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := a.h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestHostRedialsRestartedMember restarts a member on the same address: the
// other member's keeper connects again and gossip flows again.
func TestHostRedialsRestartedMember(t *testing.T) {
	ids := []identity.Identity{identity.Derive(21, 0), identity.Derive(21, 1)}
	m := htIDs(ids...)
	b := htStart(t, ids[1], m, "/ip4/127.0.0.1/tcp/0", nil, nil)
	bAddrs := b.h.Addrs()
	a := htStart(t, ids[0], m, "/ip4/127.0.0.1/tcp/0", bAddrs, nil)
	htWaitMesh(t, a, b)

	if err := b.h.Close(); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "A to see B gone", func() bool { return len(a.h.Connected()) == 0 })

	listen := strings.TrimSuffix(bAddrs[0], "/p2p/"+ids[1].ID.String())
	if _, err := ma.NewMultiaddr(listen); err != nil {
		t.Fatal(err)
	}
	b2 := htStart(t, ids[1], m, listen, nil, nil) // knows nobody: A must dial
	htWaitMesh(t, a, b2)
	msg := htSign(ids[1], htRound, 7)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b2.h.Publish(ctx, msg); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "gossip after the restart", func() bool { return a.rec.hasGossip(ids[1].ID, msg) })
	if a.h.Stats().Get("keeper", ReasonDialFailed) == 0 {
		t.Log("no failed redial while B was down (it came back within one backoff)")
	}
}

// TestHostInboxNeverWaits: a node that does not read its inbox stalls
// nothing. A full inbox drops what arrives and counts it under the
// protocol: Raft messages, accepted gossip, and a sync request, which is
// answered empty at once. A sync request the node takes but never answers
// is answered empty after the host's wait, before the asker gives up.
func TestHostInboxNeverWaits(t *testing.T) {
	ids := []identity.Identity{identity.Derive(26, 0), identity.Derive(26, 1)}
	m := htIDs(ids...)
	a := htStart(t, ids[0], m, "/ip4/127.0.0.1/tcp/0", nil, nil)
	b := htStart(t, ids[1], m, "/ip4/127.0.0.1/tcp/0", a.h.Addrs(), func(c *Config) { c.InboxSize = 2 })
	htWaitMesh(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st := b.h.Stats()

	for i := range 4 {
		if err := a.h.SendRaft(ctx, ids[1].ID, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	htWait(t, 5*time.Second, "B to drop the Raft messages beyond its inbox", func() bool { return st.Get(raftName, ReasonInboxFull) == 2 })
	if err := a.h.Publish(ctx, htSign(ids[0], htRound, 1)); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "B to drop the gossip", func() bool { return st.Get(gossipName, ReasonInboxFull) == 1 })
	if got := st.Get(gossipName, ReasonAccepted); got != 1 {
		t.Errorf("B accepted %d gossip messages before dropping, want 1", got)
	}
	start := time.Now()
	if got := a.h.Pull(ctx, htRound); len(got) != 0 {
		t.Errorf("Pull from a member with a full inbox returned %v", got)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Pull took %v against a full inbox; the host must not wait for the node", el)
	}
	if got := st.Get(syncName, ReasonInboxFull); got != 1 {
		t.Errorf("B counted %d sync requests dropped, want 1: %v", got, st.Snapshot())
	}

	// The node reads at last: the first two Raft messages, in order.
	next := func() wire.Inbound {
		t.Helper()
		select {
		case in := <-b.h.Inbox():
			return in
		case <-time.After(5 * time.Second):
			t.Fatal("nothing in the inbox")
			return wire.Inbound{}
		}
	}
	for i := range 2 {
		if in := next(); in.Kind != wire.Raft || !bytes.Equal(in.From, ids[0].ID) || !bytes.Equal(in.Data, []byte{byte(i)}) {
			t.Fatalf("inbound %d: kind %d from %s data %v, want Raft message %d from A", i, in.Kind, in.From, in.Data, i)
		}
	}

	// A sync request the node takes and never answers.
	taken := make(chan wire.Inbound, 1)
	go func() {
		select {
		case in := <-b.h.Inbox():
			taken <- in
		case <-ctx.Done():
		}
	}()
	start = time.Now()
	if got := a.h.Pull(ctx, htNext); len(got) != 0 {
		t.Errorf("an unanswered Pull returned %v", got)
	}
	el := time.Since(start)
	in := <-taken
	if in.Kind != wire.SyncRequest || !bytes.Equal(in.From, ids[0].ID) || in.Round != htNext || in.Reply == nil {
		t.Fatalf("inbound: kind %d from %s round %d, want A's sync request for round %d with a Reply", in.Kind, in.From, in.Round, htNext)
	}
	in.Reply <- [][]byte{htSign(ids[1], htNext, 2)} // too late, and never blocks
	if got := st.Get(syncName, ReasonUnanswered); got != 1 {
		t.Errorf("B counted %d unanswered sync requests, want 1: %v", got, st.Snapshot())
	}
	if want := b.h.syncWait; el < want || el > 2*time.Second {
		t.Errorf("the unanswered Pull took %v, want the host's wait %v and less than the read timeout", el, want)
	}
	if got := a.h.Stats().Get(syncName, ReasonTimeout); got != 0 {
		t.Errorf("A timed out %d sync pulls", got)
	}
}

func TestNewRefusesPSKWithQUIC(t *testing.T) {
	id := identity.Derive(22, 0)
	c := htConfig(id, htIDs(id), nil)
	c.PSK = NewPSK()
	c.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	_, err := New(context.Background(), c)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "QUIC") {
		t.Fatalf("New with a PSK and a QUIC address: %v", err)
	}
}

func TestHostPSK(t *testing.T) {
	ids := []identity.Identity{identity.Derive(23, 0), identity.Derive(23, 1)}
	m := htIDs(ids...)
	psk := NewPSK()
	withPSK := func(c *Config) { c.PSK = psk }
	a := htStart(t, ids[0], m, "/ip4/127.0.0.1/tcp/0", nil, withPSK)
	b := htStart(t, ids[1], m, "/ip4/127.0.0.1/tcp/0", a.h.Addrs(), withPSK)
	htWaitMesh(t, a, b)
	msg := htSign(ids[0], htRound, 1)
	if err := a.h.Publish(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	htWait(t, 5*time.Second, "gossip under the PSK", func() bool { return b.rec.hasGossip(ids[0].ID, msg) })
}

// TestHostCloseLeavesNoGoroutines runs two members through a connection,
// gossip, a fetch and a Raft message, closes them, and checks that the
// goroutine count returns to where it was. A first round warms up whatever
// libp2p starts once per process.
func TestHostCloseLeavesNoGoroutines(t *testing.T) {
	cycle := func(seed uint64) {
		ids := []identity.Identity{identity.Derive(seed, 0), identity.Derive(seed, 1)}
		m := htIDs(ids...)
		a := htStart(t, ids[0], m, "/ip4/127.0.0.1/tcp/0", nil, nil)
		b := htStart(t, ids[1], m, "/ip4/127.0.0.1/tcp/0", a.h.Addrs(), nil)
		htWaitMesh(t, a, b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		msg := htSign(ids[0], htRound, 1)
		if err := a.h.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
		d := a.blobs.put([]byte("a small blob"))
		if _, err := b.h.Fetch(ctx, ids[0].ID, d, 0); err != nil {
			t.Fatal(err)
		}
		if err := b.h.SendRaft(ctx, ids[0].ID, []byte("raft")); err != nil {
			t.Fatal(err)
		}
		htWait(t, 5*time.Second, "gossip and Raft delivered", func() bool {
			a.rec.mu.Lock()
			defer a.rec.mu.Unlock()
			return len(a.rec.raft) == 1 && b.rec.hasGossip(ids[0].ID, msg)
		})
		b.close()
		a.close()
	}
	cycle(24)
	before := htSettle(0)
	cycle(25)
	after := htSettle(before)
	if after > before {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("%d goroutines before, %d after Close:\n%s", before, after, buf[:n])
	}
}

// htSettle waits up to 10 s for the goroutine count to drop to target (or
// to stop changing when target is 0) and returns it.
func htSettle(target int) int {
	n := runtime.NumGoroutine()
	stable := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		m := runtime.NumGoroutine()
		if target > 0 && m <= target {
			return m
		}
		if m == n {
			stable++
			if target == 0 && stable >= 10 {
				return m
			}
		} else {
			stable = 0
		}
		n = m
	}
	return n
}
