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

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/node"
)

// The Host is the node's network, and the node is the Host's handler.
var (
	_ node.Network = (*Host)(nil)
	_ Handler      = (*node.Node)(nil)
)

// htBlobs is an in-memory BlobSource.
type htBlobs struct {
	mu sync.Mutex
	m  map[[32]byte][]byte
}

func (b *htBlobs) put(data []byte) [32]byte {
	d := sha256.Sum256(data)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[[32]byte][]byte{}
	}
	b.m[d] = data
	return d
}

func (b *htBlobs) has(d [32]byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.m[d]
	return ok
}

type htReader struct{ *bytes.Reader }

func (htReader) Close() error { return nil }

func (b *htBlobs) OpenBlob(d [32]byte) (io.ReadSeekCloser, int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	data, ok := b.m[d]
	if !ok {
		return nil, 0, fs.ErrNotExist
	}
	return htReader{bytes.NewReader(data)}, int64(len(data)), nil
}

// htMember is a member running a full Host on loopback.
type htMember struct {
	id    identity.Identity
	h     *Host
	rec   *htRecorder
	blobs *htBlobs
	sync  func(uint64) [][]byte
	log   *htLog
}

// htFastKeeper redials within a fraction of a second.
var htFastKeeper = keeperParams{tick: 50 * time.Millisecond, backoffMin: 50 * time.Millisecond, backoffMax: 500 * time.Millisecond, dialTimeout: 2 * time.Second}

// htStart starts member id's Host on 127.0.0.1 with the given address book.
func htStart(t testing.TB, id identity.Identity, m *htMembers, listen string, book []string, modify func(*Config)) *htMember {
	t.Helper()
	log, lines := htLogger(t)
	mem := &htMember{id: id, rec: &htRecorder{}, blobs: &htBlobs{}, log: lines}
	c := htConfig(id, m, log)
	c.ListenAddrs = []string{listen}
	c.AddressBook = book
	c.Validate = htValidate
	c.Handler = mem.rec
	c.Blobs = mem.blobs
	c.Servable = mem.blobs.has
	c.Sync = func(r uint64) [][]byte {
		if mem.sync == nil {
			return nil
		}
		return mem.sync(r)
	}
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
	m := newHTMembers(ids...)
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
			msg := htSign(mem.id, 3, byte(10+i))
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
		if err := a.h.Publish(ctx, htSign(ids[1], 3, 1)); err == nil {
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
		got, err := a.h.Fetch(ctx, nil, d)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("Fetch without a hint: %d bytes, %v", len(got), err)
		}
		// A hint that does not hold the blob: A falls back to the others.
		got, err = a.h.Fetch(ctx, ids[2].ID, d)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("Fetch with a wrong hint: %d bytes, %v", len(got), err)
		}
		// Nobody has it.
		missing := sha256.Sum256([]byte("nobody has this"))
		if _, err := a.h.Fetch(ctx, ids[1].ID, missing); err == nil {
			t.Fatal("fetched a blob nobody holds")
		}
	})

	t.Run("pull", func(t *testing.T) {
		good := htSign(ids[2], 3, 42)
		stale := htSign(ids[2], 1, 43)
		stranger := htSign(identity.Derive(20, 99), 3, 44)
		own := htSign(ids[0], 3, 45) // A's own: dropped without a count
		serve := func(r uint64) [][]byte {
			if r != 3 {
				return nil
			}
			return [][]byte{good, []byte("garbage"), stale, stranger, own}
		}
		b.sync, c.sync = serve, serve
		got := a.h.Pull(ctx, 3)
		if len(got) != 1 || !bytes.Equal(got[0], good) {
			t.Fatalf("Pull returned %q, want only the valid message once", got)
		}
		st := a.h.Stats()
		for _, reason := range []string{"pulled_malformed", "pulled_stale", "pulled_not_member"} {
			if st.Get(syncName, reason) != 1 {
				t.Errorf("%s counted %d times: %v", reason, st.Get(syncName, reason), st.Snapshot())
			}
		}
		if got := a.h.Pull(ctx, 4); len(got) != 0 {
			t.Errorf("Pull of an empty round returned %q", got)
		}
	})

	t.Run("reload", func(t *testing.T) {
		// C leaves the consortium: A and B drop it, and C's redials are refused.
		m.set(ids[0], ids[1])
		a.h.Reload()
		b.h.Reload()
		htWait(t, 5*time.Second, "C disconnected from A and B", func() bool {
			return len(a.h.Connected()) == 1 && len(b.h.Connected()) == 1 &&
				!htConnected(a.h.h, c.h.h) && !htConnected(b.h.h, c.h.h)
		})
		// C's keeper still believes in A and B (it reads the same list, now
		// without C, so it dials nobody); make it try as a stranger would.
		_ = c.h.h.Connect(ctx, htInfo(a.h.h))
		htWait(t, 5*time.Second, "A's gater refusing C", func() bool { return a.h.Stats().Get("gater", ReasonNotMember) >= 1 })
		time.Sleep(100 * time.Millisecond)
		if htConnected(a.h.h, c.h.h) {
			t.Fatal("the removed member is connected again")
		}
		if got := a.h.Stats().Get("gater", "evicted"); got != 1 {
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
	m := newHTMembers(ids...)
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
	msg := htSign(ids[1], 3, 7)
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

func TestNewRefusesPSKWithQUIC(t *testing.T) {
	id := identity.Derive(22, 0)
	c := htConfig(id, newHTMembers(id), nil)
	c.PSK = NewPSK()
	c.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	_, err := New(context.Background(), c)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "QUIC") {
		t.Fatalf("New with a PSK and a QUIC address: %v", err)
	}
}

func TestHostPSK(t *testing.T) {
	ids := []identity.Identity{identity.Derive(23, 0), identity.Derive(23, 1)}
	m := newHTMembers(ids...)
	psk := NewPSK()
	withPSK := func(c *Config) { c.PSK = psk }
	a := htStart(t, ids[0], m, "/ip4/127.0.0.1/tcp/0", nil, withPSK)
	b := htStart(t, ids[1], m, "/ip4/127.0.0.1/tcp/0", a.h.Addrs(), withPSK)
	htWaitMesh(t, a, b)
	msg := htSign(ids[0], 3, 1)
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
		m := newHTMembers(ids...)
		a := htStart(t, ids[0], m, "/ip4/127.0.0.1/tcp/0", nil, nil)
		b := htStart(t, ids[1], m, "/ip4/127.0.0.1/tcp/0", a.h.Addrs(), nil)
		htWaitMesh(t, a, b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		msg := htSign(ids[0], 3, 1)
		if err := a.h.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
		d := a.blobs.put([]byte("a small blob"))
		if _, err := b.h.Fetch(ctx, ids[0].ID, d); err != nil {
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
		b.h.Close()
		a.h.Close()
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
