package p2p

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/wire"
)

// htConsortium is the consortium ID of the host tests.
var htConsortium = [32]byte{0x67, 0x62, 1}

// htLog collects a test's log lines: they are printed through t.Log (shown
// on failure or with -v) and kept for assertions.
type htLog struct {
	t    testing.TB
	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

// htLogger returns a debug logger writing into an htLog.
func htLogger(t testing.TB) (*slog.Logger, *htLog) {
	l := &htLog{t: t}
	t.Cleanup(func() { l.mu.Lock(); l.done = true; l.mu.Unlock() }) // registered first, runs last
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})), l
}

func (l *htLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.done {
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *htLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// htIDs returns the peer IDs of ids, a membership.
func htIDs(ids ...identity.Identity) []identity.PeerID {
	var out []identity.PeerID
	for _, id := range ids {
		out = append(out, id.ID)
	}
	return out
}

// htConfig is a valid loopback config for member id of the consortium
// members, its Gate the node's (round.Gate) for that membership.
func htConfig(id identity.Identity, members []identity.PeerID, log *slog.Logger) Config {
	return Config{
		Identity:    id,
		Consortium:  htConsortium,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Members:     members,
		Gate:        round.NewGate(htConsortium, members),
		Logger:      log,
	}
}

// htLibp2p starts a bare libp2p host with the options and gater a Host
// uses, and returns it with the allow-list its gater reads.
func htLibp2p(t testing.TB, c Config, stats *Stats) (host.Host, *allowList) {
	t.Helper()
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	allow := newAllowList(c.Members)
	g := newGater(allow, stats, c.Logger)
	g.open()
	h, err := libp2p.New(c.libp2pOptions(g, metrics.NewBandwidthCounter())...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, allow
}

// htWait polls cond until it holds or timeout passes.
func htWait(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func htInfo(h host.Host) peer.AddrInfo { return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()} }

func htConnected(a, b host.Host) bool {
	return len(a.Network().ConnsToPeer(b.ID())) > 0
}

func TestGaterAllowList(t *testing.T) {
	a, b, x := identity.Derive(1, 0), identity.Derive(1, 1), identity.Derive(1, 99)
	members := htIDs(a, b)
	logA, linesA := htLogger(t)
	statsA, statsB, statsX := &Stats{}, &Stats{}, &Stats{}
	ha, allowA := htLibp2p(t, htConfig(a, members, logA), statsA)
	hb, _ := htLibp2p(t, htConfig(b, members, slog.New(slog.DiscardHandler)), statsB)
	// The stranger believes it belongs: only the members' gaters keep it out.
	hx, _ := htLibp2p(t, htConfig(x, htIDs(a, b, x), slog.New(slog.DiscardHandler)), statsX)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Members connect.
	if err := ha.Connect(ctx, htInfo(hb)); err != nil {
		t.Fatalf("member A dialling member B: %v", err)
	}
	htWait(t, 5*time.Second, "A and B connected both ways", func() bool { return htConnected(ha, hb) && htConnected(hb, ha) })

	// A stranger dialling a member: its Connect may even return nil (its side
	// of the handshake completes), but no connection survives on either side.
	_ = hx.Connect(ctx, htInfo(ha))
	htWait(t, 5*time.Second, "A's gater to count the stranger", func() bool { return statsA.Get("gater", wire.ReasonNotMember) >= 1 })
	htWait(t, 5*time.Second, "the stranger's connection to be gone on both sides", func() bool {
		return !htConnected(ha, hx) && !htConnected(hx, ha)
	})
	time.Sleep(200 * time.Millisecond)
	if htConnected(ha, hx) || htConnected(hx, ha) {
		t.Fatal("a connection between member A and the stranger came back")
	}
	if !strings.Contains(linesA.String(), hx.ID().String()) {
		t.Errorf("A's log does not name the refused peer %s:\n%s", hx.ID(), linesA)
	}

	// A member does not dial a stranger.
	ha.Peerstore().AddAddrs(hx.ID(), hx.Addrs(), time.Minute)
	err := ha.Connect(ctx, htInfo(hx))
	if err == nil {
		t.Fatal("member A dialled the stranger")
	}
	if statsA.Get("gater", ReasonDialNotMember) != 1 {
		t.Errorf("dial refusals counted: %v", statsA.Snapshot())
	}
	if htConnected(ha, hx) || htConnected(hx, ha) {
		t.Fatal("a refused dial left a connection")
	}

	// The allow-list is read afresh on every check: once the stranger is a
	// member of A's membership, it connects.
	allowA.set(htIDs(a, b, x))
	if err := hx.Connect(ctx, htInfo(ha)); err != nil {
		t.Fatalf("new member dialling A: %v", err)
	}
	htWait(t, 5*time.Second, "the new member connected", func() bool { return htConnected(ha, hx) && htConnected(hx, ha) })
}

func TestPSK(t *testing.T) {
	ids := []identity.Identity{identity.Derive(2, 0), identity.Derive(2, 1), identity.Derive(2, 2)}
	members := htIDs(ids...)
	psk, other := NewPSK(), NewPSK()
	var hs []host.Host
	for i, id := range ids {
		c := htConfig(id, members, slog.New(slog.DiscardHandler))
		c.PSK = psk
		if i == 2 {
			c.PSK = other
		}
		h, _ := htLibp2p(t, c, &Stats{})
		hs = append(hs, h)
	}
	for _, a := range hs[0].Addrs() {
		if !isPlainTCP(a) {
			t.Errorf("a PSK host listens on %s", a)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs[0].Connect(ctx, htInfo(hs[1])); err != nil {
		t.Fatalf("same PSK: %v", err)
	}
	if hs[0].Network().Connectedness(hs[1].ID()) != network.Connected {
		t.Fatal("same PSK: not connected")
	}
	// A mismatch usually fails at once; sometimes the garbled handshake
	// waits for bytes that never come, until the dial's deadline.
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if err := hs[0].Connect(short, htInfo(hs[2])); err == nil {
		t.Fatal("different PSKs connected")
	}
	if htConnected(hs[0], hs[2]) || htConnected(hs[2], hs[0]) {
		t.Fatal("different PSKs left a connection")
	}
}

func TestConfigRefusals(t *testing.T) {
	id := identity.Derive(3, 0)
	members := htIDs(id)
	for _, c := range []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"PSK with QUIC", func(c *Config) {
			c.PSK = NewPSK()
			c.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
		}, "QUIC"},
		{"PSK with WebSocket", func(c *Config) {
			c.PSK = NewPSK()
			c.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0/ws"}
		}, "only plain TCP"},
		{"short PSK", func(c *Config) { c.PSK = []byte("short") }, "5 bytes, want 32"},
		{"no listen address", func(c *Config) { c.ListenAddrs = nil }, "ListenAddrs: none"},
		{"bad listen address", func(c *Config) { c.ListenAddrs = []string{"127.0.0.1:4001"} }, `ListenAddrs: "127.0.0.1:4001"`},
		{"address without peer ID", func(c *Config) { c.AddressBook = []string{"/ip4/127.0.0.1/tcp/4001"} }, "/p2p/<peer ID>"},
		{"no gate", func(c *Config) { c.Gate = nil }, "Gate: required"},
		{"negative inbox", func(c *Config) { c.InboxSize = -1 }, "InboxSize: -1"},
		{"zero consortium", func(c *Config) { c.Consortium = [32]byte{} }, "Consortium"},
		{"key and ID disagree", func(c *Config) { c.Identity.ID = identity.Derive(3, 1).ID }, "does not match"},
	} {
		cfg := htConfig(id, members, nil)
		c.modify(&cfg)
		err := cfg.validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.name, err, c.want)
		}
		if err != nil && !errors.Is(err, ErrConfig) && !errors.Is(err, ErrPSK) {
			t.Errorf("%s: err = %v is neither ErrConfig nor ErrPSK", c.name, err)
		}
	}
	ok := htConfig(id, members, nil)
	ok.ListenAddrs = append(ok.ListenAddrs, "/ip4/127.0.0.1/udp/0/quic-v1")
	if err := ok.validate(); err != nil {
		t.Errorf("QUIC without a PSK: %v", err)
	}
	if ok.InboxSize != defaultInboxSize {
		t.Errorf("InboxSize 0 became %d, want %d", ok.InboxSize, defaultInboxSize)
	}
}
