package member

import (
	"slices"
	"strings"

	"github.com/globalbrain/globalbrain/api"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/p2p"
)

// source is the running member as the API reads it.
func (m *Member) source() api.Source {
	n := m.node
	src := api.Source{
		Status:  n.Status,
		Members: n.Members,
		Leader: func() identity.PeerID {
			id, err := identity.ParsePeerID(n.Status().LeaderID)
			if err != nil {
				return nil
			}
			return id
		},
		ProposeAddMember: n.ProposeAddMember,
		Consortium:       m.o.Manifest.ConsortiumID(),
	}
	if e := m.o.Evaluator; e != nil {
		src.Accuracy = func() *api.Accuracy {
			r := e.Last()
			if r == nil {
				return nil
			}
			return &api.Accuracy{Round: r.Round, Model: r.Model.String(), Accuracy: r.Accuracy, Loss: r.Loss, Examples: r.Examples}
		}
	}
	if h := m.host; h != nil {
		src.Connected = func(id identity.PeerID) bool {
			return slices.ContainsFunc(h.Connected(), func(p identity.PeerID) bool { return identity.Compare(p, id) == 0 })
		}
		src.Traffic = func() api.Traffic { return traffic(h) }
	}
	return src
}

// traffic is the transport's counters for /metrics: its bytes, and what
// it cut off (every counter but those of work done: served, resumed,
// accepted).
func traffic(h *p2p.Host) api.Traffic {
	s := h.Stats()
	in, out := s.Bytes()
	cut := s.Snapshot()
	for key := range cut {
		if _, reason, _ := strings.Cut(key, "/"); reason == p2p.ReasonServed || reason == p2p.ReasonResumed || reason == p2p.ReasonAccepted {
			delete(cut, key)
		}
	}
	return api.Traffic{BytesIn: in, BytesOut: out, Cut: cut}
}
