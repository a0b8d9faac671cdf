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
)

// MemNet is an in-memory network joining the members of one process. It
// delivers by calling the receiver's Handler directly, drops a seeded
// fraction of gossip and Raft messages on request, and cuts links for
// partitions. Blobs are fetched straight from the holder's store.
type MemNet struct {
	mu       sync.Mutex
	ends     map[string]*memEnd
	order    []string // join order, for deterministic fan-out
	cut      map[[2]string]bool
	rng      *rand.Rand
	dropRate float64
	dropped  int
}

type memEnd struct {
	id      identity.PeerID
	handler Handler
	blob    func(round.Digest) ([]byte, error)
}

// NewMemNet returns an empty network whose drops follow seed.
func NewMemNet(seed uint64) *MemNet {
	return &MemNet{ends: map[string]*memEnd{}, cut: map[[2]string]bool{}, rng: rand.New(rand.NewPCG(seed, 0xd50b))}
}

// ErrUnreachable is returned for a member that is down or cut off.
var ErrUnreachable = errors.New("node: member unreachable")

// Join attaches a member: its traffic goes to h, its blobs are read with blob.
func (net *MemNet) Join(id identity.PeerID, h Handler, blob func(round.Digest) ([]byte, error)) Network {
	net.mu.Lock()
	defer net.mu.Unlock()
	k := string(id)
	if !slices.Contains(net.order, k) {
		net.order = append(net.order, k)
	}
	net.ends[k] = &memEnd{id: id, handler: h, blob: blob}
	return &memConn{net: net, self: id}
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

// Dropped returns how many messages were dropped.
func (net *MemNet) Dropped() int {
	net.mu.Lock()
	defer net.mu.Unlock()
	return net.dropped
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
			net.dropped++
			continue
		}
		out = append(out, e)
	}
	return out
}

type memConn struct {
	net  *MemNet
	self identity.PeerID
}

func (c *memConn) Publish(_ context.Context, msg []byte) error {
	for _, e := range c.net.route(c.self, nil, true) {
		e.handler.HandleGossip(c.self, slices.Clone(msg))
	}
	return nil
}

func (c *memConn) SendRaft(_ context.Context, to identity.PeerID, msg []byte) error {
	for _, e := range c.net.route(c.self, to, true) {
		e.handler.HandleRaft(c.self, slices.Clone(msg))
	}
	return nil
}

// Fetch asks the hinted holder first, then every reachable member.
func (c *memConn) Fetch(ctx context.Context, from identity.PeerID, d round.Digest) ([]byte, error) {
	ends := c.net.route(c.self, nil, false)
	slices.SortStableFunc(ends, func(a, b *memEnd) int {
		return boolRank(identity.Compare(a.id, from) != 0) - boolRank(identity.Compare(b.id, from) != 0)
	})
	for _, e := range ends {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if b, err := e.blob(d); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w: no reachable member holds %s", ErrUnreachable, d.String()[:12])
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}
