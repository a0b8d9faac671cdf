package member

import (
	"github.com/globalbrain/globalbrain/api"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/wire"
)

// countingGate is the member's round.Gate as the transport sees it: the
// same verdicts, and other members' update announcements counted by result
// and reason in /metrics, from the one decode the gate does.
type countingGate struct {
	gate    *round.Gate
	self    identity.PeerID
	metrics *api.Metrics // nil: not counted
}

func (g countingGate) Validate(author identity.PeerID, b []byte) (wire.Verdict, string, any) {
	msg, v, reason := g.gate.Check(author, b)
	if g.metrics != nil && msg != nil && msg.Kind == round.KindAnnounce && identity.Compare(author, g.self) != 0 {
		result := api.ResultAccepted
		if v != wire.Accept {
			result = api.ResultRejected
		}
		g.metrics.CountUpdate(result, reason)
	}
	if v != wire.Accept {
		return v, reason, nil
	}
	return v, "", msg
}

func (g countingGate) ValidateSigned(b []byte) (identity.PeerID, wire.Verdict, string, any) {
	return g.gate.ValidateSigned(b)
}

func (g countingGate) Servable(d [32]byte) bool { return g.gate.Servable(d) }

// The transport and the store are what the node needs them to be.
var (
	_ node.Network = (*p2p.Host)(nil)
	_ node.Store   = (*store.DB)(nil)
	_ p2p.Gate     = countingGate{}
	_ p2p.Gate     = (*round.Gate)(nil)
)
