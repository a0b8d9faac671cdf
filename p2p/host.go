package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/round"
)

// ErrNoPeer reports a request that no member could be asked.
var ErrNoPeer = errors.New("p2p: no member to ask")

// protectTag marks members in the connection manager, which never trims them.
const protectTag = "globalbrain-member"

// pullConcurrency bounds the sync requests Pull has in flight.
const pullConcurrency = 8

// Host is a member's libp2p node: the host behind the allow-list gater, the
// consortium's gossip topic, the blob, Raft and sync protocols, and the
// keeper that redials members. Its methods are safe for concurrent use.
type Host struct {
	cfg      Config
	log      *slog.Logger
	h        host.Host
	self     peer.ID
	isMember members
	stats    *Stats

	gossip *gossip
	blob   *BlobService
	raft   *RaftService
	sync   *SyncService
	keeper *keeper

	mu        sync.Mutex
	protected map[peer.ID]bool // members protected in the connection manager

	closeOnce sync.Once
	closeErr  error

	bw *metrics.BandwidthCounter // bytes by protocol, for benchmarks and metrics
}

// Traffic is the bytes a host sent and received on one protocol.
type Traffic struct{ In, Out int64 }

// Traffic returns the bytes moved so far by protocol: "gossip" (the
// gossipsub protocol), "blob", "raft", "sync", and "other" (identify and
// the rest), as counted by libp2p below the stream multiplexer.
func (h *Host) Traffic() map[string]Traffic {
	out := map[string]Traffic{}
	if h.bw == nil {
		return out
	}
	for proto, st := range h.bw.GetBandwidthByProtocol() {
		name := "other"
		p := string(proto)
		switch {
		case strings.Contains(p, "/meshsub/"):
			name = "gossip"
		case strings.HasSuffix(p, "/blob/1"):
			name = "blob"
		case strings.HasSuffix(p, "/raft/1"):
			name = "raft"
		case strings.HasSuffix(p, "/sync/1"):
			name = "sync"
		}
		t := out[name]
		t.In += st.TotalIn
		t.Out += st.TotalOut
		out[name] = t
	}
	return out
}

// New starts a member's host: libp2p listening on c.ListenAddrs behind the
// allow-list gater (with the pre-shared key if set), the gossip topic, the
// blob, Raft and sync protocols, and the keeper, which dials the members of
// the address book. ctx bounds the start only; the host runs until Close.
func New(ctx context.Context, c Config) (*Host, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	stats := new(Stats)
	log := c.Logger.With("peer", c.Identity.ID.Short())
	g := newGater(members(c.Members), stats, log.With("component", "gater"))
	bw := metrics.NewBandwidthCounter()
	h, err := libp2p.New(c.libp2pOptions(g, bw)...)
	if err != nil {
		return nil, fmt.Errorf("p2p: start libp2p on %v: %w", c.ListenAddrs, err)
	}
	hh, err := attach(c, h, stats, log, g.open)
	if err != nil {
		h.Close()
		return nil, err
	}
	hh.bw = bw
	return hh, nil
}

// attach builds a Host on a running libp2p host h and takes ownership of
// it. c must be validated. Once every protocol is registered it calls open,
// which lets connections in, then starts the keeper. Tests call it with
// mocknet hosts.
func attach(c Config, h host.Host, stats *Stats, log *slog.Logger, open func()) (*Host, error) {
	hh := &Host{
		cfg: c, log: log, h: h, self: h.ID(), isMember: members(c.Members), stats: stats,
		protected: map[peer.ID]bool{},
	}
	for _, s := range c.AddressBook {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: AddressBook: %q: %v", ErrConfig, s, err)
		}
		if ai.ID != hh.self {
			h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
		}
	}
	g, err := newGossip(h, &c, hh.isMember, stats, log)
	if err != nil {
		return nil, err
	}
	hh.gossip = g
	hh.blob = NewBlobService(h, protocolID(c.Consortium, "blob/1"), c.Blobs, hh.isMember.has, c.Servable, c.Limits, stats, log)
	hh.raft = NewRaftService(h, protocolID(c.Consortium, "raft/1"), hh.isMember.has, func(from peer.ID, msg []byte) {
		c.Handler.HandleRaft(FromPeerID(from), msg)
	}, c.Limits, stats, log)
	hh.sync = NewSyncService(h, protocolID(c.Consortium, "sync/1"), hh.isMember.has, c.Sync, c.Limits, stats, log)
	hh.protect()
	open()
	k, err := startKeeper(h, hh.isMember, g.peers, c.keeper, stats, log.With("component", "keeper"))
	if err != nil {
		hh.closeServices()
		return nil, err
	}
	hh.keeper = k
	log.Info("p2p host started", "id", hh.self.String(), "addrs", hh.Addrs(), "psk", c.PSK != nil)
	return hh, nil
}

// ID returns the member's peer ID.
func (h *Host) ID() identity.PeerID { return FromPeerID(h.self) }

// Addrs returns the addresses other members can dial, each ending in
// /p2p/<peer ID>, ready for their address books.
func (h *Host) Addrs() []string {
	var out []string
	for _, a := range h.h.Addrs() {
		out = append(out, a.String()+"/p2p/"+h.self.String())
	}
	return out
}

// Publish gossips msg (a signed round message of at most
// round.MaxMessageBytes) to every member. The member's own validator judges
// it first; a refusal comes back as an error. msg is copied.
func (h *Host) Publish(ctx context.Context, msg []byte) error {
	return h.gossip.publish(ctx, msg)
}

// SendRaft queues an encoded Raft message for member to. It does not wait
// for the network; a full queue drops the message (ErrQueueFull), which
// Raft retransmits.
func (h *Host) SendRaft(ctx context.Context, to identity.PeerID, msg []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return h.raft.Send(PeerID(to), msg)
}

// Fetch returns the blob with digest d, its SHA-256 verified. It asks from
// first (it may be nil), then the other connected members in random order,
// which spreads the load over every member holding the blob.
func (h *Host) Fetch(ctx context.Context, from identity.PeerID, d round.Digest) ([]byte, error) {
	var cands []peer.ID
	if len(from) > 0 && PeerID(from) != h.self {
		cands = append(cands, PeerID(from))
	}
	others := h.connectedMembers()
	rand.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	for _, p := range others {
		if !slices.Contains(cands, p) {
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("p2p: fetch %x: %w", d[:8], ErrNoPeer)
	}
	var errs []error
	for _, p := range cands {
		b, err := h.blob.Fetch(ctx, p, d)
		if err == nil {
			return b, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("p2p: fetch %x from %d members: %w", d[:8], len(errs), errors.Join(errs...))
}

// Pull asks every connected member for its gossip messages of round r (a
// new leader catching up) and returns each distinct message once, in peer
// order. It keeps only messages of other members that Config.Validate
// accepts; the others are counted under "sync/pulled_<reason>" (the
// member's own messages are dropped silently, as gossip does). Members that
// fail to answer are skipped.
func (h *Host) Pull(ctx context.Context, r uint64) [][]byte {
	peers := h.connectedMembers()
	slices.SortFunc(peers, func(a, b peer.ID) int { return identity.Compare(FromPeerID(a), FromPeerID(b)) })
	answers := make([][][]byte, len(peers))
	sem := make(chan struct{}, pullConcurrency)
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			msgs, err := h.sync.Pull(ctx, p, r)
			if err != nil {
				h.log.Debug("sync pull failed", "from", p, "round", r, "err", err)
				return
			}
			answers[i] = msgs
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	var out [][]byte
	for _, msgs := range answers {
		for _, m := range msgs {
			if seen[string(m)] {
				continue
			}
			seen[string(m)] = true
			v, reason := h.judgePulled(m)
			if reason == "own" {
				continue
			}
			if v != Accept {
				h.stats.Inc(syncName, "pulled_"+reason)
				continue
			}
			out = append(out, m)
		}
	}
	return out
}

// judgePulled checks a message obtained by sync: no gossip author vouches
// for it, so its signer must be a member and Validate must accept it.
func (h *Host) judgePulled(b []byte) (Verdict, string) {
	m, err := round.DecodeMessage(b)
	if err != nil {
		return Reject, ReasonMalformed
	}
	if PeerID(m.Author) == h.self {
		return Ignore, "own"
	}
	if !h.isMember.has(PeerID(m.Author)) {
		return Reject, ReasonNotMember
	}
	v, reason := h.cfg.Validate(m.Author, b)
	if reason == "" {
		reason = v.String()
	}
	return v, reason
}

// Reload applies a membership change: it closes the connections of peers
// that are no longer members, protects the members in the connection
// manager and has the keeper dial new ones. Members() is read again; the
// gater and validators read it on every check anyway.
func (h *Host) Reload() {
	for _, p := range h.h.Network().Peers() {
		if !h.isMember.has(p) {
			h.log.Info("closing connection: no longer a member", "peer", p.String())
			h.stats.Inc("gater", "evicted")
			_ = h.h.Network().ClosePeer(p)
		}
	}
	h.protect()
	h.keeper.wake()
}

// protect protects members in the connection manager and unprotects those
// that left.
func (h *Host) protect() {
	now := map[peer.ID]bool{}
	for _, id := range h.cfg.Members() {
		if p := PeerID(id); p != h.self {
			now[p] = true
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	cm := h.h.ConnManager()
	for p := range now {
		if !h.protected[p] {
			cm.Protect(p, protectTag)
		}
	}
	for p := range h.protected {
		if !now[p] {
			cm.Unprotect(p, protectTag)
		}
	}
	h.protected = now
}

// Connected returns the members connected now, in peer-ID order.
func (h *Host) Connected() []identity.PeerID {
	var out []identity.PeerID
	for _, p := range h.connectedMembers() {
		out = append(out, FromPeerID(p))
	}
	slices.SortFunc(out, identity.Compare)
	return out
}

// connectedMembers returns the connected peers that are members.
func (h *Host) connectedMembers() []peer.ID {
	var out []peer.ID
	for _, p := range h.h.Network().Peers() {
		if p != h.self && h.h.Network().Connectedness(p) == network.Connected && h.isMember.has(p) {
			out = append(out, p)
		}
	}
	return out
}

// Stats returns the counters shared by the gater, the gossip validator
// ("gossip/<reason>") and the stream protocols, and the bytes they moved.
func (h *Host) Stats() *Stats { return h.stats }

// Close stops the keeper, the protocols and gossip, then the libp2p host,
// and waits for their goroutines. It is idempotent.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.keeper.stop()
		h.closeServices()
		h.closeErr = h.h.Close()
		h.log.Info("p2p host closed")
	})
	return h.closeErr
}

// closeServices stops the protocols and gossip.
func (h *Host) closeServices() {
	_ = h.sync.Close()
	_ = h.raft.Close()
	_ = h.blob.Close()
	h.gossip.close()
}
