package round

import "maps"

// RoundMessages returns the current round's valid announcements and this
// member's own Haves, for a new leader that asks to catch up at once.
func (m *Machine) RoundMessages() []*Message {
	var out []*Message
	for _, a := range m.cur.anns {
		out = append(out, a)
	}
	sortAnnouncements(out)
	if sa := m.cur.sa; sa != nil {
		for _, as := range sa.anns {
			var ph []*Message
			for _, a := range as {
				ph = append(ph, a)
			}
			sortAnnouncements(ph)
			out = append(out, ph...)
		}
		if sa.ownEcho != nil {
			out = append(out, sa.ownEcho)
		}
	}
	return append(out, m.cur.myHaves...)
}

// Status is a summary of the machine for operators.
type Status struct {
	Round     uint64 // next round (the one in progress)
	Applied   State
	Phase     string // "training", "collecting", "closing", "done" or "halted"
	Leader    uint64
	IsLeader  bool
	Members   int
	Voters    int
	Announced int // valid announcements seen this round
	Sampled   bool
	Halted    string
	Counters  Counters
}

// Status reports where the member is.
func (m *Machine) Status() Status {
	s := Status{Round: m.cur.round, Applied: m.st, Leader: m.Leader(), IsLeader: m.IsLeader(), Members: len(m.members),
		Voters: len(m.p.Voters), Announced: len(m.cur.anns), Halted: m.halted, Counters: m.Counters}
	s.Counters.RaftRefused = maps.Clone(m.Counters.RaftRefused)
	s.Sampled = contains(m.Sample(m.cur.round), m.self.ID)
	switch {
	case m.halted != "":
		s.Phase = "halted"
	case m.Done():
		s.Phase = "done"
	case m.cur.aggregating || m.cur.proposed >= 0 || m.pending != nil:
		s.Phase = "closing"
	case s.Sampled && m.cur.trained && m.cur.own == nil && !m.cur.declined:
		s.Phase = "training"
	default:
		s.Phase = "collecting"
	}
	return s
}
