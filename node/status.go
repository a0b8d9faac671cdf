package node

import (
	"sync/atomic"

	"github.com/globalbrain/globalbrain/round"
)

// Status is a node's state for operators (/status).
type Status struct {
	Peer     string   `json:"peer"`
	Round    uint64   `json:"round"`
	Phase    string   `json:"phase"`
	Applied  uint64   `json:"applied_round"`
	Model    string   `json:"model_digest"`
	Leader   bool     `json:"leader"`
	LeaderID string   `json:"leader_id,omitempty"`
	Members  int      `json:"members"`
	Halted   string   `json:"halted,omitempty"`
	Alarms   []string `json:"alarms,omitempty"`
	// Evidence are the latest equivocations this member holds proof of
	// (the whole record, both signed messages, is in its store).
	Evidence []EvidenceSummary `json:"evidence,omitempty"`
	Counters round.Counters    `json:"counters"`
	// Privacy is the node's privacy budget, under a mode that keeps one.
	Privacy *PrivacyStatus `json:"privacy,omitempty"`
}

// Board holds a node's latest Status for readers on other goroutines (the
// API, the log handler). A member creates it before the node, so whatever
// is built before the node can read it; it reads as "starting" until the
// node publishes.
type Board struct{ p atomic.Pointer[Status] }

// Load returns the latest status; the zero Status with phase "starting"
// before the node published one.
func (b *Board) Load() Status {
	if s := b.p.Load(); s != nil {
		return *s
	}
	return Status{Phase: "starting"}
}

// evidenceBucket is the store bucket of equivocation evidence.
const evidenceBucket = "evidence"

// EvidenceSummary names an equivocation in status.
type EvidenceSummary struct {
	Round  uint64 `json:"round"`
	Author string `json:"author"`
	First  string `json:"first_digest"`
	Second string `json:"second_digest"`
}

func (n *Node) noteEvidence(e *round.Evidence) {
	if e.First == nil || e.Second == nil {
		return
	}
	n.evidence = append(n.evidence, EvidenceSummary{Round: e.Round, Author: e.Author.String(), First: e.First.Digest.String(), Second: e.Second.Digest.String()})
	if len(n.evidence) > maxEvidence {
		n.evidence = n.evidence[len(n.evidence)-maxEvidence:]
	}
}

// publishState refreshes the status that other goroutines read. On the loop.
func (n *Node) publishState() {
	st := n.m.Status()
	s := &Status{Peer: n.cfg.Identity.ID.String(), Round: st.Round, Phase: st.Phase, Applied: st.Applied.Round,
		Model: st.Applied.Model.String(), Leader: st.IsLeader, Members: st.Members, Halted: st.Halted,
		Alarms: append([]string(nil), n.alarms...), Evidence: append([]EvidenceSummary(nil), n.evidence...), Counters: st.Counters}
	if n.budget != nil {
		s.Privacy = n.budget.status()
	}
	if lead, ok := n.raftPeer[st.Leader]; ok {
		s.LeaderID = lead.String()
	}
	n.board.p.Store(s)
}

// Status returns the node's latest state (safe from any goroutine).
func (n *Node) Status() Status { return n.board.Load() }
