package sim

import (
	"context"
	"fmt"
	"net"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/store"
)

// freeLoopbackPort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// assignPorts gives every member a fixed loopback port, so a restarted
// member comes back at the address the others have in their address books.
func (s *nodeSim) assignPorts() error {
	for _, sn := range s.nodes {
		p, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		sn.port = p
	}
	return nil
}

// libp2pNetwork starts a real libp2p host for member sn on 127.0.0.1,
// wired to the member's node through late-bound callbacks.
func (s *nodeSim) libp2pNetwork(ctx context.Context, sn *simNode, db *store.DB) (node.Network, error) {
	var book []string
	for _, o := range s.nodes {
		if o != sn {
			book = append(book, fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", o.port, o.id.ID))
		}
	}
	genesis := s.man.MemberIDs()
	current := func() *node.Node { return sn.handler.n.Load() }
	h, err := p2p.New(ctx, p2p.Config{
		Identity:    sn.id,
		Consortium:  s.man.ConsortiumID(),
		ListenAddrs: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", sn.port)},
		AddressBook: book,
		Members: func() []identity.PeerID {
			if n := current(); n != nil {
				return n.Members()
			}
			return genesis
		},
		Validate: func(author identity.PeerID, msg []byte) (p2p.Verdict, string) {
			n := current()
			if n == nil {
				return p2p.Ignore, "starting"
			}
			v, reason := n.CheckGossip(author, msg)
			switch v {
			case node.GossipAccept:
				return p2p.Accept, ""
			case node.GossipIgnore:
				return p2p.Ignore, reason
			}
			return p2p.Reject, reason
		},
		Handler: &sn.handler,
		Blobs:   db,
		Servable: func(d [32]byte) bool {
			n := current()
			return n != nil && n.Servable(d)
		},
		Sync: func(r uint64) [][]byte {
			if n := current(); n != nil {
				return n.RoundMessages(ctx, r)
			}
			return nil
		},
		Limits: p2p.DefaultLimits(),
	})
	if err != nil {
		return nil, fmt.Errorf("sim: member %d: libp2p host: %w", sn.idx, err)
	}
	sn.mu.Lock()
	sn.host = h
	sn.mu.Unlock()
	return h, nil
}
