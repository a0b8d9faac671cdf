package p2p

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Reasons the keeper counts under "keeper/...".
const (
	ReasonDialFailed  = "dial_failed"  // a redial of a member failed
	ReasonPubsubReset = "pubsub_reset" // a connected member missing from the topic had its connection cycled
)

// keeper keeps the host connected to every member it has an address for.
// One goroutine owns its state: it wakes on a ticker, on connectedness
// events and on SetMembers, dials each unconnected member (one dial per member
// at a time, jittered exponential backoff after failures, bypassing the
// swarm's own dial backoff), and cycles the connection of a member that
// stays connected but absent from the gossip topic, the state in which
// pubsub never recovers on its own (LIBP2P.md, "publisher loses the
// receiver").
type keeper struct {
	h          host.Host
	isMember   *allowList
	topicPeers func() []peer.ID
	p          keeperParams
	stats      *Stats
	log        *slog.Logger

	sub    event.Subscription
	poke   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup // the loop and its dials
}

// memberState is the keeper's view of one member; only the loop touches it.
type memberState struct {
	next         time.Time     // earliest next dial
	backoff      time.Duration // delay after the next failure
	dialing      bool
	missingSince time.Time // connected but absent from the topic since
	lastCycle    time.Time // last pubsub_reset
}

type dialResult struct {
	p   peer.ID
	err error
}

func startKeeper(h host.Host, isMember *allowList, topicPeers func() []peer.ID, p keeperParams, stats *Stats, log *slog.Logger) (*keeper, error) {
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return nil, fmt.Errorf("p2p: keeper: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &keeper{
		h: h, isMember: isMember, topicPeers: topicPeers, p: p.withDefaults(), stats: stats, log: log,
		sub: sub, poke: make(chan struct{}, 1), cancel: cancel,
	}
	k.wg.Add(1)
	go k.loop(ctx)
	return k, nil
}

// wake makes the keeper look at the membership now.
func (k *keeper) wake() {
	select {
	case k.poke <- struct{}{}:
	default:
	}
}

// stop ends the loop and its dials and waits for them.
func (k *keeper) stop() {
	k.cancel()
	k.wg.Wait()
	_ = k.sub.Close()
}

func (k *keeper) loop(ctx context.Context) {
	defer k.wg.Done()
	state := map[peer.ID]*memberState{}
	results := make(chan dialResult)
	ticker := time.NewTicker(k.p.tick)
	defer ticker.Stop()
	k.scan(ctx, state, results)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-k.poke:
		case e, ok := <-k.sub.Out():
			if !ok {
				return
			}
			k.onEvent(e.(event.EvtPeerConnectednessChanged), state)
		case r := <-results:
			k.onResult(r, state)
		}
		k.scan(ctx, state, results)
	}
}

// onEvent logs members coming and going; a member that just left is
// redialled soon, without waiting out an old backoff.
func (k *keeper) onEvent(e event.EvtPeerConnectednessChanged, state map[peer.ID]*memberState) {
	if !k.isMember.has(e.Peer) {
		return
	}
	st := state[e.Peer]
	switch e.Connectedness {
	case network.Connected:
		k.log.Info("member connected", "member", e.Peer.String())
		if st != nil {
			st.backoff = k.p.backoffMin
		}
	case network.NotConnected:
		k.log.Info("member disconnected", "member", e.Peer.String())
		if st != nil && !st.dialing {
			st.backoff = k.p.backoffMin
			st.next = time.Now().Add(k.jitter(k.p.backoffMin / 2))
		}
	}
}

// onResult records a finished dial.
func (k *keeper) onResult(r dialResult, state map[peer.ID]*memberState) {
	st := state[r.p]
	if st == nil {
		return // no longer a member
	}
	st.dialing = false
	if r.err == nil {
		st.backoff = k.p.backoffMin
		return
	}
	k.stats.Inc("keeper", ReasonDialFailed)
	k.log.Debug("redial failed", "member", r.p.String(), "retry_in", st.backoff, "err", r.err)
	st.next = time.Now().Add(k.jitter(st.backoff))
	st.backoff = min(2*st.backoff, k.p.backoffMax)
}

// scan starts a dial to every member that is due, and cycles connections
// that pubsub has lost track of.
func (k *keeper) scan(ctx context.Context, state map[peer.ID]*memberState, results chan<- dialResult) {
	now := time.Now()
	self := k.h.ID()
	var inTopic []peer.ID
	if k.topicPeers != nil {
		inTopic = k.topicPeers()
	}
	current := map[peer.ID]bool{}
	for _, id := range k.isMember.list() {
		p := toPeer(id)
		if p == self {
			continue
		}
		current[p] = true
		st := state[p]
		if st == nil {
			st = &memberState{next: now, backoff: k.p.backoffMin}
			state[p] = st
		}
		if k.h.Network().Connectedness(p) == network.Connected {
			k.watchTopic(p, st, inTopic, now)
			continue
		}
		st.missingSince = time.Time{}
		if st.dialing || now.Before(st.next) || len(k.h.Peerstore().Addrs(p)) == 0 {
			continue
		}
		st.dialing = true
		k.wg.Add(1)
		go k.dial(ctx, p, results)
	}
	for p, st := range state {
		if !current[p] && !st.dialing {
			delete(state, p)
		}
	}
}

// watchTopic cycles the connection of a member that has been connected but
// absent from the gossip topic for meshGrace, at most once per 4 meshGrace.
func (k *keeper) watchTopic(p peer.ID, st *memberState, inTopic []peer.ID, now time.Time) {
	if k.topicPeers == nil || slices.Contains(inTopic, p) {
		st.missingSince = time.Time{}
		return
	}
	if st.missingSince.IsZero() {
		st.missingSince = now
		return
	}
	if now.Sub(st.missingSince) < k.p.meshGrace || now.Sub(st.lastCycle) < 4*k.p.meshGrace {
		return
	}
	k.stats.Inc("keeper", ReasonPubsubReset)
	k.log.Warn("member connected but absent from the gossip topic; reconnecting", "member", p.String(), "since", st.missingSince)
	st.missingSince, st.lastCycle = time.Time{}, now
	st.next = now.Add(k.jitter(k.p.backoffMin / 2))
	_ = k.h.Network().ClosePeer(p)
}

// dial connects to p with the addresses in the peerstore.
func (k *keeper) dial(ctx context.Context, p peer.ID, results chan<- dialResult) {
	defer k.wg.Done()
	dctx, cancel := context.WithTimeout(ctx, k.p.dialTimeout)
	defer cancel()
	err := k.h.Connect(network.WithForceDirectDial(dctx, "keeper"), peer.AddrInfo{ID: p})
	select {
	case results <- dialResult{p, err}:
	case <-ctx.Done():
	}
}

// jitter spreads d over [0.75d, 1.25d) so members do not redial in step.
func (k *keeper) jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.75 + 0.5*rand.Float64()))
}
