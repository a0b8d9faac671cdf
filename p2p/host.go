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
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/wire"
)

// ErrNoPeer reports a request that no member could be asked.
var ErrNoPeer = errors.New("p2p: no member to ask")

// protectTag marks members in the connection manager, which never trims them.
const protectTag = "globalbrain-member"

// pullConcurrency bounds the sync requests Pull has in flight.
const pullConcurrency = 8

// syncReplyWait bounds how long the sync server waits for the node to answer
// a request. The wait is also at most half of Limits.ReadTimeout: the
// requester waits ReadTimeout for the answer and must get it in time.
const syncReplyWait = 5 * time.Second

// Host is a member's libp2p node: the host behind the allow-list gater, the
// consortium's gossip topic, the blob, Raft and sync protocols, and the
// keeper that redials members. What arrives for the node waits in a bounded
// inbox (Inbox). Its methods are safe for concurrent use.
type Host struct {
	cfg      Config
	log      *slog.Logger
	h        host.Host
	self     peer.ID
	isMember *allowList
	stats    *Stats
	inbox    *inbox
	syncWait time.Duration // how long the sync server waits for the node

	gossip *gossip
	blob   *blobService
	raft   *raftService
	sync   *syncService
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
// It is built before the node, with the node's Gate; the node then pulls
// Inbox.
func New(ctx context.Context, c Config) (*Host, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	stats := new(Stats)
	log := c.Logger.With("peer", c.Identity.ID.Short())
	allow := newAllowList(c.Members)
	g := newGater(allow, stats, log.With("component", "gater"))
	bw := metrics.NewBandwidthCounter()
	h, err := libp2p.New(c.libp2pOptions(g, bw)...)
	if err != nil {
		return nil, fmt.Errorf("p2p: start libp2p on %v: %w", c.ListenAddrs, err)
	}
	hh, err := attach(c, h, allow, stats, log, g.open)
	if err != nil {
		h.Close()
		return nil, err
	}
	hh.bw = bw
	return hh, nil
}

// attach builds a Host on a running libp2p host h, whose gater reads
// allow, and takes ownership of it. c must be validated. Once every
// protocol is registered it calls open, which lets connections in, then
// starts the keeper.
func attach(c Config, h host.Host, allow *allowList, stats *Stats, log *slog.Logger, open func()) (*Host, error) {
	hh := &Host{
		cfg: c, log: log, h: h, self: h.ID(), isMember: allow, stats: stats,
		inbox:     newInbox(c.InboxSize, stats, log),
		syncWait:  min(syncReplyWait, c.Limits.withDefaults().ReadTimeout/2),
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
	g, err := newGossip(h, &c, hh.isMember, hh.inbox, stats, log)
	if err != nil {
		return nil, err
	}
	hh.gossip = g
	hh.blob = newBlobService(h, protocolID(c.Consortium, "blob/1"), c.Blobs, hh.isMember.has, c.Gate.Servable, c.Limits, stats, log)
	hh.raft = newRaftService(h, protocolID(c.Consortium, "raft/1"), hh.isMember.has, func(from peer.ID, msg []byte) {
		hh.inbox.push(raftName, wire.Inbound{Kind: wire.Raft, From: fromPeer(from), Data: msg})
	}, c.Limits, stats, log)
	hh.sync = newSyncService(h, protocolID(c.Consortium, "sync/1"), hh.isMember.has, hh.askNode, c.Limits, stats, log)
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

// Inbox returns what arrives for the node, in arrival order per sender:
// gossip the Gate accepted (wire.Gossip, with the Gate's decoded value in
// Msg), Raft messages (wire.Raft) and members' sync requests
// (wire.SyncRequest: answer once on Reply, which is buffered, so answering
// never blocks; an answer later than the host's wait, 5 s at most, is
// dropped and the member got an empty one). It is
// bounded (Config.InboxSize): the host never waits for the node, and drops
// what arrives while it is full, counting "<protocol>/inbox_full". It is
// never closed; nothing arrives after Close.
func (h *Host) Inbox() <-chan wire.Inbound { return h.inbox.ch }

// askNode hands member from's sync request for round r to the node and
// waits for its answer, at most syncWait or until ctx ends; without an
// answer the reply is empty.
func (h *Host) askNode(ctx context.Context, from peer.ID, r uint64) [][]byte {
	reply := make(chan [][]byte, 1)
	if !h.inbox.push(syncName, wire.Inbound{Kind: wire.SyncRequest, From: fromPeer(from), Round: r, Reply: reply}) {
		return nil
	}
	t := time.NewTimer(h.syncWait)
	defer t.Stop()
	select {
	case msgs := <-reply:
		return msgs
	case <-t.C:
		h.stats.Inc(syncName, ReasonUnanswered)
		h.log.Debug("sync request unanswered", "from", from, "round", r, "waited", h.syncWait)
		return nil
	case <-ctx.Done():
		return nil
	}
}

// ID returns the member's peer ID.
func (h *Host) ID() identity.PeerID { return fromPeer(h.self) }

// Addrs returns the addresses other members can dial, each ending in
// /p2p/<peer ID>, ready for their address books.
func (h *Host) Addrs() []string {
	var out []string
	for _, a := range h.h.Addrs() {
		out = append(out, a.String()+"/p2p/"+h.self.String())
	}
	return out
}

// Publish gossips msg (a signed round message of at most 64 KiB, the bound
// of round.MaxMessageBytes) to every member. The member's own validator
// judges it first; a refusal comes back as an error. msg is copied.
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
	return h.raft.Send(toPeer(to), msg)
}

// Fetch returns the blob with digest d, its SHA-256 verified, and of
// length size when size > 0 (a server announcing another length is refused
// before the blob is read). It asks from first (it may be nil), then the
// other connected members in random order, which spreads the load over
// every member holding the blob.
func (h *Host) Fetch(ctx context.Context, from identity.PeerID, d fedavg.Digest, size int64) ([]byte, error) {
	var cands []peer.ID
	if len(from) > 0 && toPeer(from) != h.self {
		cands = append(cands, toPeer(from))
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
		b, err := h.blob.FetchSize(ctx, p, d, size)
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
// order, as the gossip loop would have: Inbound{Kind: wire.Gossip} with its
// author in From and the Gate's decoded value in Msg. It keeps only messages
// of other members that the Gate accepts; the others are counted under
// "sync/pulled_<reason>" (the member's own messages are dropped silently,
// as gossip does). Members that fail to answer are skipped.
func (h *Host) Pull(ctx context.Context, r uint64) []wire.Inbound {
	peers := h.connectedMembers()
	slices.SortFunc(peers, func(a, b peer.ID) int { return identity.Compare(fromPeer(a), fromPeer(b)) })
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
	var out []wire.Inbound
	for _, msgs := range answers {
		for _, m := range msgs {
			if seen[string(m)] {
				continue
			}
			seen[string(m)] = true
			author, v, reason, decoded := h.judgePulled(m)
			if reason == "own" {
				continue
			}
			if v != wire.Accept {
				h.stats.Inc(syncName, "pulled_"+reason)
				continue
			}
			out = append(out, wire.Inbound{Kind: wire.Gossip, From: author, Data: m, Msg: decoded})
		}
	}
	return out
}

// judgePulled checks a message obtained by sync. No gossip author vouches
// for it: the Gate finds its author in its signature and judges it as
// gossip from that author; the author must also be on the allow-list.
func (h *Host) judgePulled(b []byte) (identity.PeerID, wire.Verdict, string, any) {
	author, v, reason, decoded := h.cfg.Gate.ValidateSigned(b)
	switch {
	case author != nil && toPeer(author) == h.self:
		return author, wire.Ignore, "own", nil
	case v == wire.Accept && !h.isMember.has(toPeer(author)):
		return author, wire.Reject, wire.ReasonNotMember, nil
	case v != wire.Accept && v != wire.Ignore && v != wire.Reject:
		return author, wire.Reject, ReasonBadVerdict, nil
	case reason == "" && v != wire.Accept:
		reason = v.String()
	}
	return author, v, reason, decoded
}

// SetMembers applies a membership change: ids replace the allow-list
// (Config.Members at start) that the gater, the gossip validator, the
// stream protocols and the keeper read. It closes the connections of peers
// that are no longer members, protects the members in the connection
// manager and has the keeper dial new ones.
func (h *Host) SetMembers(ids []identity.PeerID) {
	h.isMember.set(ids)
	for _, p := range h.h.Network().Peers() {
		if !h.isMember.has(p) {
			h.log.Info("closing connection: no longer a member", "peer", p.String())
			h.stats.Inc("gater", ReasonEvicted)
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
	for _, id := range h.isMember.list() {
		if p := toPeer(id); p != h.self {
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
		out = append(out, fromPeer(p))
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
// ("gossip/<reason>"), the inbox and the stream protocols, and the bytes
// they moved.
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
