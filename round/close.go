package round

import (
	"fmt"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
)

// Tick advances logical time by one tick.
func (m *Machine) Tick() {
	if m.halted != "" {
		return
	}
	m.guard("tick", m.rn.Tick)
	m.retryWanted()
	if m.halted != "" || m.Done() {
		return
	}
	m.cur.ticks++
	m.idleTicks++
	if q := max(m.p.DeadlineTicks/4, 1); m.cur.ticks%q == 0 {
		// Repeat the announcement and the Haves until the round closes, so
		// a new or restarted leader hears them.
		if m.cur.own != nil {
			m.out.Gossip = append(m.out.Gossip, m.cur.own)
		}
		if m.ownAttest != nil && m.ownAttest.Round == m.st.Round && !m.attested() {
			m.out.Gossip = append(m.out.Gossip, m.ownAttest)
		}
		m.out.Gossip = append(m.out.Gossip, m.cur.myHaves...)
	}
	m.secAggTick(m.cur.ticks%max(m.p.DeadlineTicks/4, 1) == 0)
	if m.IsLeader() {
		m.idleTicks = 0 // a leader's own stall is for the others to judge
	}
	if m.idleTicks >= 2*m.p.DeadlineTicks && m.isVoter() {
		// No progress for 2 deadlines: one designated voter asks for
		// leadership (several at once would abort each other's transfers).
		m.idleTicks = 0
		m.stalls++
		if m.successor() == m.id {
			if m.stalls == 1 {
				m.rn.TransferLeader(m.id) // ask politely first
			} else {
				m.forceCampaign()
			}
		}
	}
	if m.IsLeader() && m.cur.proposed >= 0 && m.cur.ticks-m.cur.proposed >= m.p.DeadlineTicks/2 {
		m.cur.proposed = -1 // the proposal was dropped: propose again
		m.Counters.Reproposals++
	}
	m.maybeClose()
}

// forceCampaign stands for election without the leader's consent: the
// leader has let the round stall for 4 deadlines and ignored a transfer.
// The vote requests carry raft's transfer context, which voters honour
// even while they still hear the idle leader's heartbeats (its lease), so
// a leader that heartbeats but never proposes is replaced.
func (m *Machine) forceCampaign() {
	m.Counters.ForcedCampaigns++
	m.alarm("round %d: no progress for %d deadlines under leader %x; standing for election", m.cur.round, 2*m.stalls, m.Leader())
	m.guard("campaign", func() {
		_ = m.rn.Step(&pb.Message{Type: pb.MessageType_MsgTimeoutNow.Enum(), From: proto.Uint64(m.Leader()),
			To: proto.Uint64(m.id), Term: proto.Uint64(m.term())})
	})
}

// successor is the voter that asks for leadership after a stall: the same
// on every member, a different one after each further stall.
func (m *Machine) successor() uint64 {
	lead := m.Leader()
	var cands []uint64
	for _, v := range m.p.Voters {
		if id := RaftID(v); id != lead {
			cands = append(cands, id)
		}
	}
	return cands[(m.st.Round+m.stalls)%uint64(len(cands))]
}

// Aggregated reports the outcome the leader computed for an AggregateTask.
func (m *Machine) Aggregated(t *AggregateTask, result Digest, err error) {
	if t.Round != m.cur.round || t.Base != m.st.Model {
		return // a task of a decided round
	}
	if m.IsLeader() && m.needMissing(err, t.Included, aggHints(t)...) {
		m.waitAgg = t // still aggregating: handed out again once the blobs are stored
		return
	}
	m.cur.aggregating = false
	if !m.IsLeader() {
		return
	}
	if err != nil {
		// Aggregation is deterministic: every member would fail the same
		// way, so retrying cannot help. Close the round without a model.
		m.alarm("round %d: aggregation failed, abandoning the round: %v", t.Round, err)
		m.propose(&Entry{Kind: EntryAbandon, Round: t.Round, Base: m.st.Model, Prev: m.st.Chain, Result: m.st.Model,
			Reason: fmt.Sprintf("aggregation failed: %v", err)})
		return
	}
	e := &Entry{Kind: EntryCommit, Round: t.Round, Base: t.Base, Prev: m.st.Chain, Included: t.Included,
		Haves: m.inclusionHaves(t.Included), Aggregator: m.p.Aggregator, Result: result}
	if t.SecAgg != nil {
		e.Reveals, e.Haves, e.Phases = t.SecAgg.Reveals, m.inclusionHaves(t.SecAgg.Reveals), slices.Clone(m.cur.sa.digests)
	}
	m.propose(e)
}

// aggHints are the holders of the blobs a secure aggregation reads besides
// the inputs: the revealers.
func aggHints(t *AggregateTask) []*Message {
	if t.SecAgg == nil {
		return nil
	}
	return t.SecAgg.Reveals
}

func (m *Machine) propose(e *Entry) {
	if err := m.rn.Propose(e.Encode()); err != nil {
		m.alarm("round %d: proposal dropped: %v", e.Round, err)
		return
	}
	m.cur.proposed = m.cur.ticks
}

// includable returns the current round's announcements the leader may include:
// it holds the blob and at least floor((voters-1)/2) other voters said Have.
func (m *Machine) includable() []*Message {
	var out []*Message
	for _, a := range m.cur.anns {
		if !m.cur.have[a.Digest] {
			continue
		}
		voters := 0
		for h := range m.cur.haveMsgs[a.Digest] {
			if _, voter := m.voters[RaftID(identity.PeerID(h))]; voter {
				voters++
			}
		}
		if voters >= m.p.Majority() {
			out = append(out, a)
		}
	}
	sortAnnouncements(out)
	return out
}

// inclusionHaves are the signed Haves of voters for the included updates,
// by digest then author: the proof, carried in the Commit, that a majority
// of voters hold every included blob, so every member can fetch it.
func (m *Machine) inclusionHaves(inc []*Message) []*Message {
	var out []*Message
	for _, a := range inc {
		var hs []*Message
		for author, h := range m.cur.haveMsgs[a.Digest] {
			if _, voter := m.voters[RaftID(identity.PeerID(author))]; voter {
				hs = append(hs, h)
			}
		}
		slices.SortFunc(hs, func(x, y *Message) int { return identity.Compare(x.Author, y.Author) })
		out = append(out, hs...)
	}
	return out
}

// maybeClose is the leader's closing rule for the current round.
func (m *Machine) maybeClose() {
	if !m.IsLeader() || m.leaderTerm != m.term() || m.halted != "" || m.Done() ||
		m.pending != nil || len(m.queue) > 0 || m.cur.aggregating || m.cur.proposed >= 0 {
		return
	}
	if m.cur.sa != nil {
		m.maybeCloseSecAgg()
		return
	}
	sample := m.Sample(m.cur.round)
	target := m.p.Target(len(m.roundMembers))
	inc := m.includable()
	resolved := true
	for _, id := range sample {
		if m.cur.declines[string(id)] || m.cur.bad[string(id)] != "" {
			continue // declined, or its update failed the edge checks: nothing to wait for
		}
		if !slices.ContainsFunc(inc, func(a *Message) bool { return identity.Compare(a.Author, id) == 0 }) {
			resolved = false
			break
		}
	}
	late := m.cur.ticks >= m.p.DeadlineTicks
	switch {
	case len(inc) >= m.p.MinParticipants && (len(inc) >= target || resolved || late):
		m.cur.aggregating = true
		m.out.Aggregate = &AggregateTask{Round: m.cur.round, Base: m.st.Model, Included: inc}
	case late || resolved:
		m.propose(&Entry{Kind: EntryAbandon, Round: m.cur.round, Base: m.st.Model, Prev: m.st.Chain, Result: m.st.Model,
			Reason: fmt.Sprintf("%d includable updates, min_participants %d", len(inc), m.p.MinParticipants)})
	}
}
