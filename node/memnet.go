package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/wire"
)

// MemNet is an in-memory network joining the members of one process. It
// judges gossip with the receiver's gate and delivers into the receiver's
// bounded inbox as the libp2p transport does, drops a seeded fraction of
// gossip and Raft messages on request, and cuts links for partitions.
// Blobs are fetched straight from the holder's store.
type MemNet struct {
	mu       sync.Mutex
	ends     map[string]*memEnd
	order    []string // join order, for deterministic fan-out
	cut      map[[2]string]bool
	rng      *rand.Rand
	dropRate float64
	tap      func(from identity.PeerID, msg []byte)
}

// memInbox bounds each member's inbox; a full inbox drops, as the libp2p host does.
const memInbox = 4096

type memEnd struct {
	id    identity.PeerID
	gate  *round.Gate
	inbox chan wire.Inbound
	blob  func(round.Digest) ([]byte, error)
}

// NewMemNet returns an empty network whose drops follow seed.
func NewMemNet(seed uint64) *MemNet {
	return &MemNet{ends: map[string]*memEnd{}, cut: map[[2]string]bool{}, rng: rand.New(rand.NewPCG(seed, 0xd50b))}
}

// errUnreachable is returned for a member that is down or cut off.
var errUnreachable = errors.New("node: member unreachable")

// Join attaches a member: gossip for it is judged by gate, its blobs are
// read with blob. A member that joins again (restarted) gets a new inbox.
func (net *MemNet) Join(id identity.PeerID, gate *round.Gate, blob func(round.Digest) ([]byte, error)) Network {
	net.mu.Lock()
	defer net.mu.Unlock()
	k := string(id)
	if !slices.Contains(net.order, k) {
		net.order = append(net.order, k)
	}
	e := &memEnd{id: id, gate: gate, inbox: make(chan wire.Inbound, memInbox), blob: blob}
	net.ends[k] = e
	return &memConn{net: net, self: id, end: e}
}

// deliver puts in into e's inbox, or drops it when full.
func (net *MemNet) deliver(e *memEnd, in wire.Inbound) {
	select {
	case e.inbox <- in:
	default: // dropped: members repeat what matters every deadline/4
	}
}

// Leave detaches a member (crashed or stopped).
func (net *MemNet) Leave(id identity.PeerID) {
	net.mu.Lock()
	defer net.mu.Unlock()
	delete(net.ends, string(id))
}

// SetDropRate drops this fraction of gossip and Raft messages.
func (net *MemNet) SetDropRate(p float64) {
	net.mu.Lock()
	defer net.mu.Unlock()
	net.dropRate = p
}

// Partition cuts every link between the groups, both ways.
func (net *MemNet) Partition(groups ...[]identity.PeerID) {
	net.mu.Lock()
	defer net.mu.Unlock()
	for gi, g := range groups {
		for gj, h := range groups {
			if gi != gj {
				for _, a := range g {
					for _, b := range h {
						net.cut[[2]string{string(a), string(b)}] = true
					}
				}
			}
		}
	}
}

// Heal restores every link.
func (net *MemNet) Heal() {
	net.mu.Lock()
	defer net.mu.Unlock()
	net.cut = map[[2]string]bool{}
}

// route returns the receivers of a message from `from` (one: to; all others: nil to).
func (net *MemNet) route(from identity.PeerID, to identity.PeerID, drop bool) []*memEnd {
	net.mu.Lock()
	defer net.mu.Unlock()
	if net.ends[string(from)] == nil {
		return nil // a member that left sends nothing
	}
	var out []*memEnd
	for _, k := range net.order {
		e := net.ends[k]
		if e == nil || k == string(from) || (to != nil && k != string(to)) || net.cut[[2]string{string(from), k}] {
			continue
		}
		if drop && net.dropRate > 0 && net.rng.Float64() < net.dropRate {
			continue
		}
		out = append(out, e)
	}
	return out
}

type memConn struct {
	net  *MemNet
	self identity.PeerID
	end  *memEnd
}

func (c *memConn) Inbox() <-chan wire.Inbound { return c.end.inbox }

// SetMembers is a no-op: the in-memory network has no connections to
// refuse; each receiver's gate judges membership.
func (c *memConn) SetMembers([]identity.PeerID) {}

// Tap calls f with every gossip message a member publishes, on the
// publisher's goroutine, before any receiver sees it (tests: what a member
// had persisted when it published).
func (net *MemNet) Tap(f func(from identity.PeerID, msg []byte)) {
	net.mu.Lock()
	defer net.mu.Unlock()
	net.tap = f
}

func (c *memConn) Publish(_ context.Context, msg []byte) error {
	c.net.mu.Lock()
	tap := c.net.tap
	c.net.mu.Unlock()
	if tap != nil {
		tap(c.self, msg)
	}
	for _, e := range c.net.route(c.self, nil, true) {
		if v, _, m := e.gate.Validate(c.self, msg); v == wire.Accept {
			c.net.deliver(e, wire.Inbound{Kind: wire.Gossip, From: c.self, Data: slices.Clone(msg), Msg: m})
		}
	}
	return nil
}

func (c *memConn) SendRaft(_ context.Context, to identity.PeerID, msg []byte) error {
	for _, e := range c.net.route(c.self, to, true) {
		c.net.deliver(e, wire.Inbound{Kind: wire.Raft, From: c.self, Data: slices.Clone(msg)})
	}
	return nil
}

// Pull returns nothing: in one process every message reaches every
// linked member directly, and members repeat theirs every deadline/4, so a
// new leader hears the round without asking.
func (c *memConn) Pull(context.Context, uint64) []wire.Inbound { return nil }

// Fetch asks the hinted holder first, then every reachable member.
func (c *memConn) Fetch(ctx context.Context, from identity.PeerID, d round.Digest, size int64) ([]byte, error) {
	ends := c.net.route(c.self, nil, false)
	slices.SortStableFunc(ends, func(a, b *memEnd) int {
		return boolRank(identity.Compare(a.id, from) != 0) - boolRank(identity.Compare(b.id, from) != 0)
	})
	for _, e := range ends {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if b, err := e.blob(d); err == nil && (size <= 0 || int64(len(b)) == size) {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w: no reachable member holds %s", errUnreachable, d.String()[:12])
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Inject delivers in to member to as if the network had (tests: traffic
// no honest member sends).
func (net *MemNet) Inject(to identity.PeerID, in wire.Inbound) {
	net.mu.Lock()
	e := net.ends[string(to)]
	net.mu.Unlock()
	if e != nil {
		net.deliver(e, in)
	}
}
