package sim

import (
	"fmt"
	"net"

	"github.com/globalbrain/globalbrain/member"
	"github.com/globalbrain/globalbrain/p2p"
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

// libp2pConfig is member sn's libp2p host on its fixed 127.0.0.1 port,
// with every other member in its address book.
func (s *nodeSim) libp2pConfig(sn *simNode) *member.Libp2p {
	var book []string
	for _, o := range s.nodes {
		if o != sn {
			book = append(book, fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", o.port, o.id.ID))
		}
	}
	return &member.Libp2p{Listen: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", sn.port)}, AddressBook: book, Limits: p2p.DefaultLimits()}
}
