package p2p

import (
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/wire"
)

// Reasons the gater counts under "gater/...", besides wire.ReasonNotMember
// (an inbound connection of a stranger) and wire.ReasonStarting (a
// connection refused while the host is still registering its protocols).
const (
	// ReasonDialNotMember counts dials to a peer that is not a member,
	// refused before any packet is sent.
	ReasonDialNotMember = "dial_not_member"
	// ReasonEvicted counts connections closed because their peer left the
	// membership (Host.SetMembers).
	ReasonEvicted = "evicted"
)

// gaterLogEvery limits the refusal log to one line per peer per interval: a
// stranger that redials in a loop must not flood the log.
const gaterLogEvery = time.Minute

// allowList is the host's membership: Config.Members at start, replaced by
// Host.SetMembers. The gater, the gossip validator and peer filter, the
// stream guards and the keeper all read it, on every check and from many
// goroutines; a read is one atomic load and a map lookup, and never waits
// on the node.
type allowList struct {
	p atomic.Pointer[allowSet]
}

// allowSet is one membership, never modified once stored.
type allowSet struct {
	ids []identity.PeerID // sorted, without duplicates
	has map[peer.ID]struct{}
}

func newAllowList(ids []identity.PeerID) *allowList {
	a := &allowList{}
	a.set(ids)
	return a
}

// set replaces the membership by ids (copied).
func (a *allowList) set(ids []identity.PeerID) {
	s := &allowSet{has: make(map[peer.ID]struct{}, len(ids))}
	for _, id := range ids {
		p := toPeer(id)
		if _, dup := s.has[p]; dup {
			continue
		}
		s.has[p] = struct{}{}
		s.ids = append(s.ids, slices.Clone(id))
	}
	slices.SortFunc(s.ids, identity.Compare)
	a.p.Store(s)
}

// has reports whether p is a member.
func (a *allowList) has(p peer.ID) bool {
	_, ok := a.p.Load().has[p]
	return ok
}

// list returns the members in peer-ID order; the caller must not modify it.
func (a *allowList) list() []identity.PeerID { return a.p.Load().ids }

// gater is an allow-list connection gater: only members connect, in either
// direction. The libp2p bundled gater (conngater) is a block-list, the
// opposite of what a consortium needs.
//
// Outbound, InterceptPeerDial refuses before dialling. Inbound, the peer ID
// is known only once the security handshake has authenticated it, so
// InterceptAccept admits every connection and InterceptSecured decides; the
// stranger's own Connect may then return nil, but neither side keeps the
// connection.
//
// Until open is called the gater refuses every connection: a member that
// connects before gossipsub is up can end with each side's pubsub believing
// the other does not speak it (both opened their pubsub stream while the
// other had not registered the protocol yet), a state pubsub never leaves
// until the connection is closed. Connections therefore start only once
// every protocol is registered.
type gater struct {
	isMember *allowList
	stats    *Stats
	log      *slog.Logger
	ready    atomic.Bool

	mu     sync.Mutex
	logged map[peer.ID]time.Time // last refusal logged per peer
}

var _ connmgr.ConnectionGater = (*gater)(nil)

func newGater(isMember *allowList, stats *Stats, log *slog.Logger) *gater {
	return &gater{isMember: isMember, stats: stats, log: log, logged: map[peer.ID]time.Time{}}
}

// open admits members from now on.
func (g *gater) open() { g.ready.Store(true) }

// InterceptPeerDial refuses to dial a peer that is not a member.
func (g *gater) InterceptPeerDial(p peer.ID) bool {
	if !g.ready.Load() {
		g.stats.Inc("gater", wire.ReasonStarting)
		return false
	}
	if g.isMember.has(p) {
		return true
	}
	g.refuse(p, network.DirOutbound, ReasonDialNotMember)
	return false
}

// InterceptAddrDial admits every address of a peer InterceptPeerDial admitted.
func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }

// InterceptAccept admits every inbound connection: the remote peer is not
// authenticated yet (InterceptSecured decides).
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured admits a connection, in either direction, only if the
// authenticated remote peer is a member.
func (g *gater) InterceptSecured(dir network.Direction, p peer.ID, addrs network.ConnMultiaddrs) bool {
	if !g.ready.Load() {
		g.stats.Inc("gater", wire.ReasonStarting)
		g.log.Debug("connection refused: starting", "peer", p.String(), "direction", dir.String())
		return false
	}
	if g.isMember.has(p) {
		return true
	}
	g.refuse(p, dir, wire.ReasonNotMember, "remote", addrs.RemoteMultiaddr())
	return false
}

// InterceptUpgraded admits every connection InterceptSecured admitted.
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// refuse counts a refusal and logs it, at most once per peer per
// gaterLogEvery.
func (g *gater) refuse(p peer.ID, dir network.Direction, reason string, attrs ...any) {
	g.stats.Inc("gater", reason)
	now := time.Now()
	g.mu.Lock()
	last, seen := g.logged[p]
	log := !seen || now.Sub(last) >= gaterLogEvery
	if log {
		if len(g.logged) >= 1024 { // bounded: forget everyone rather than grow
			clear(g.logged)
		}
		g.logged[p] = now
	}
	g.mu.Unlock()
	if log {
		g.log.Warn("connection refused: not a member", append([]any{"peer", p.String(), "direction", dir.String(), "reason", reason}, attrs...)...)
	}
}
