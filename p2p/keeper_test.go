package p2p

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/wire"
)

// TestKeeperCyclesMemberMissingFromTopic: a member that stays connected but
// never shows up on the gossip topic gets its connection closed, and the
// keeper dials it again.
func TestKeeperCyclesMemberMissingFromTopic(t *testing.T) {
	ids := []identity.Identity{identity.Derive(30, 0), identity.Derive(30, 1)}
	m := htIDs(ids...)
	log, _ := htLogger(t)
	stats := &Stats{}
	a, allow := htLibp2p(t, htConfig(ids[0], m, log), stats)
	b, _ := htLibp2p(t, htConfig(ids[1], m, slog.New(slog.DiscardHandler)), &Stats{})
	a.Peerstore().AddAddrs(b.ID(), b.Addrs(), peerstore.PermanentAddrTTL)

	p := htFastKeeper
	p.meshGrace = 200 * time.Millisecond
	k, err := startKeeper(a, allow, func() []peer.ID { return nil }, p, stats, log)
	if err != nil {
		t.Fatal(err)
	}
	defer k.stop()

	htWait(t, 5*time.Second, "the keeper to dial B", func() bool { return htConnected(a, b) })
	htWait(t, 5*time.Second, "the connection cycled", func() bool { return stats.Get("keeper", ReasonPubsubReset) == 1 })
	htWait(t, 5*time.Second, "the keeper to dial B again", func() bool { return htConnected(a, b) })
	// At most one cycle per 4 x meshGrace.
	time.Sleep(400 * time.Millisecond)
	if got := stats.Get("keeper", ReasonPubsubReset); got != 1 {
		t.Errorf("%d cycles within 4 x meshGrace", got)
	}
}

// TestGaterClosedUntilOpen: a host refuses even members until its
// protocols are registered.
func TestGaterClosedUntilOpen(t *testing.T) {
	ids := []identity.Identity{identity.Derive(31, 0), identity.Derive(31, 1)}
	m := htIDs(ids...)
	stats := &Stats{}
	c := htConfig(ids[0], m, slog.New(slog.DiscardHandler))
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	g := newGater(newAllowList(c.Members), stats, c.Logger)
	a, err := libp2p.New(c.libp2pOptions(g, metrics.NewBandwidthCounter())...)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, _ := htLibp2p(t, htConfig(ids[1], m, slog.New(slog.DiscardHandler)), &Stats{})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.Connect(ctx, htInfo(a))
	htWait(t, 5*time.Second, "the refusal counted", func() bool { return stats.Get("gater", wire.ReasonStarting) >= 1 })
	htWait(t, 5*time.Second, "no connection", func() bool { return !htConnected(a, b) && !htConnected(b, a) })

	g.open()
	if err := a.Connect(ctx, htInfo(b)); err != nil {
		t.Fatalf("after open: %v", err)
	}
}
