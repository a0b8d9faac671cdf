package round

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/globalbrain/globalbrain/identity"
)

// Errors a gossiped message can be refused with.
var (
	ErrStale       = errors.New("round: stale")        // outside the window: ignore
	ErrNotMember   = errors.New("round: not a member") // reject
	ErrNotSampled  = errors.New("round: not sampled")  // reject
	ErrEquivocated = errors.New("round: equivocation") // a second, different announcement: reject, kept
	ErrWrongBase   = errors.New("round: wrong base")   // reject
	ErrBadLength   = errors.New("round: wrong length") // reject
	ErrOverCap     = errors.New("round: example count above the cap")
	ErrHalted      = errors.New("round: halted")
	ErrRaftRefused = errors.New("round: raft message refused")
)

// StepRaft feeds a Raft message from another member, after the Raft
// boundary (raftgate.go) checked it: a refused message is counted in
// Counters.RaftRefused by reason and returned as ErrRaftRefused.
func (m *Machine) StepRaft(msg *pb.Message) (err error) {
	if m.halted != "" {
		return ErrHalted
	}
	if reason := m.checkRaft(msg); reason != "" {
		m.refuseRaft(reason)
		return fmt.Errorf("%w: %s %s from %x", ErrRaftRefused, reason, msg.GetType(), msg.GetFrom())
	}
	m.guard("step "+msg.GetType().String(), func() { err = m.rn.Step(msg) })
	return err
}

// Step feeds a gossiped message. The error says whether to reject it
// (forged, malformed, not a member: feeds peer scoring) or to ignore it
// (ErrStale: outside the window [applied-1, applied+2]).
func (m *Machine) Step(msg *Message) error {
	if err := m.step(msg); err != nil {
		if errors.Is(err, ErrStale) {
			m.Counters.IgnoredMessages++
		} else {
			m.Counters.RejectedMessages++
		}
		return err
	}
	return nil
}

func (m *Machine) step(msg *Message) error {
	if !contains(m.members, msg.Author) {
		return fmt.Errorf("%w: %s", ErrNotMember, msg.Author.Short())
	}
	if !inWindow(msg.Round, m.st.Round) {
		return fmt.Errorf("%w: round %d, applied %d", ErrStale, msg.Round, m.st.Round)
	}
	author := string(msg.Author)
	if _, voter := m.voters[RaftID(msg.Author)]; (msg.Kind == KindAttest || msg.Kind == KindHave) && !voter {
		return nil // only voters' attestations and Haves count: no need to verify the rest
	}
	if !msg.verified && !m.seen(msg) {
		if err := m.gate.verify(msg, m.p.Consortium); err != nil {
			return err
		}
	}
	switch msg.Kind {
	case KindAttest:
		if _, ok := m.voters[RaftID(msg.Author)]; ok && len(m.attests[msg.Round]) < 4*len(m.p.Voters) {
			m.recordAttest(msg)
			m.checkAttestations(msg.Round)
		}
		return nil
	case KindInvalid:
		// The reason is the author's text: bounded, and one alarm per
		// (member, round) however many it sends; every report is counted.
		m.Counters.InvalidReports++
		if m.invalidSeen[author] != msg.Round {
			m.invalidSeen[author] = msg.Round
			m.alarm("member %s skipped entry %d of round %d: %s", msg.Author.Short(), msg.Index, msg.Round, clip(msg.Reason, 200))
		}
		return nil
	}
	if msg.Round != m.cur.round {
		if msg.Round == m.cur.round+1 && msg.Kind != KindAttest && msg.Kind != KindInvalid {
			m.keepEarly(msg)
		}
		return nil // a neighbouring round's traffic: valid, nothing to do with it now
	}
	switch msg.Kind {
	case KindKeyAd, KindShares, KindInput, KindEcho, KindReveal:
		return m.stepSecAgg(msg)
	case KindAnnounce:
		if m.cur.sa != nil {
			return fmt.Errorf("%w: an update in the clear under secure aggregation", ErrMalformed)
		}
		if err := m.checkAnnouncement(msg); err != nil {
			return err
		}
		if prev, ok := m.cur.anns[author]; ok {
			if sameAnnouncement(prev, msg) {
				if m.cur.bad[author] == "" {
					m.want(msg.Digest, msg.Author) // a failed fetch is retried on the repeat
				}
				return nil
			}
			m.keepEvidence(&Evidence{Round: msg.Round, Author: msg.Author, First: prev, Second: msg})
			return fmt.Errorf("%w: %s round %d", ErrEquivocated, msg.Author.Short(), msg.Round)
		}
		m.cur.anns[author] = msg
		m.gate.Serve(msg.Digest)
		m.want(msg.Digest, msg.Author)
	case KindHave:
		m.recordHave(msg)
	case KindDecline:
		if !contains(m.Sample(msg.Round), msg.Author) {
			return fmt.Errorf("%w: %s declined round %d", ErrNotSampled, msg.Author.Short(), msg.Round)
		}
		m.cur.declines[author] = true
	}
	m.maybeClose()
	return nil
}

// maxEarly bounds the messages kept per author for the next round (or a
// later phase of this one): its own phase messages, and a Have of every
// member's blobs.
func (m *Machine) maxEarly() int { return 8 + 3*len(m.members) }

// keepEarly keeps a verified message of the next round, which members
// that applied the current round before this one did are already sending,
// or of a later secure-aggregation phase: it is stepped when the round
// (or phase) starts, rather than heard only when it is repeated, a
// quarter deadline later.
func (m *Machine) keepEarly(msg *Message) {
	if m.early == nil {
		m.early = map[string][]*Message{}
	}
	a := string(msg.Author)
	for _, k := range m.early[a] {
		if bytes.Equal(k.Sig, msg.Sig) {
			return // a repeat
		}
	}
	if len(m.early[a]) < m.maxEarly() {
		m.early[a] = append(m.early[a], msg)
	}
}

// stepEarly steps the kept messages of the round that just started.
func (m *Machine) stepEarly() {
	early := m.early
	m.early = nil
	for _, a := range sortedKeys(early) {
		for _, msg := range early[a] {
			if msg.Round == m.cur.round {
				_ = m.Step(msg)
			}
		}
	}
}

func sortedKeys(ms map[string][]*Message) []string {
	out := make([]string, 0, len(ms))
	for k := range ms {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// recordHave notes a signed Have of the current round (a voter's, or this
// member's own).
func (m *Machine) recordHave(h *Message) {
	author := string(h.Author)
	if m.cur.haves[h.Digest] == nil {
		m.cur.haves[h.Digest] = map[string]bool{}
		m.cur.haveMsgs[h.Digest] = map[string]*Message{}
	}
	m.cur.haves[h.Digest][author] = true
	m.cur.haveMsgs[h.Digest][author] = h
}

// seen reports whether msg repeats, signature included, a message already
// verified and recorded for the current round: repeats are common (members
// re-announce every deadline/4) and need no second verification.
func (m *Machine) seen(msg *Message) bool {
	if msg.Round != m.cur.round {
		return false
	}
	switch msg.Kind {
	case KindAnnounce:
		prev, ok := m.cur.anns[string(msg.Author)]
		return ok && sameAnnouncement(prev, msg) && bytes.Equal(prev.Sig, msg.Sig)
	case KindHave:
		return m.cur.haves[msg.Digest][string(msg.Author)]
	}
	return false
}

// checkAnnouncement is the validity of an announcement for the current round.
func (m *Machine) checkAnnouncement(a *Message) error {
	switch {
	case a.Kind != KindAnnounce:
		return fmt.Errorf("%w: %s is not an announcement", ErrMalformed, a.Kind)
	case !contains(m.Sample(a.Round), a.Author):
		return fmt.Errorf("%w: %s in round %d", ErrNotSampled, a.Author.Short(), a.Round)
	case a.Base != m.st.Model && a.Round == m.st.Round+1:
		return fmt.Errorf("%w: %s trained from %s", ErrWrongBase, a.Author.Short(), a.Base.String()[:12])
	case a.Length != m.p.UpdateBytes:
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadLength, a.Length, m.p.UpdateBytes)
	case a.Examples < 1 || (m.p.MaxExamples > 0 && a.Examples > m.p.MaxExamples):
		return fmt.Errorf("%w: %d examples, cap %d", ErrOverCap, a.Examples, m.p.MaxExamples)
	}
	return nil
}

func (m *Machine) want(d Digest, from identity.PeerID) {
	m.wantSized(d, from, m.p.UpdateBytes, KindAnnounce)
}

func (m *Machine) wantSized(d Digest, from identity.PeerID, size int64, kind Kind) {
	if m.cur.have[d] || m.cur.fetching[d] {
		return
	}
	m.cur.fetching[d] = true
	m.out.Fetch = append(m.out.Fetch, FetchTask{Digest: d, From: from, Size: size, Kind: kind})
}

// BlobStored tells the Machine that a blob is stored and verified locally.
func (m *Machine) BlobStored(d Digest) {
	m.wantedStored(d)
	if m.cur.have[d] {
		return
	}
	m.cur.have[d] = true
	delete(m.cur.fetching, d)
	for _, a := range m.roundAnnouncements() {
		if a.Digest == d {
			h := &Message{Kind: KindHave, Round: m.cur.round, Digest: d}
			m.gossip(h)
			m.cur.myHaves = append(m.cur.myHaves, h)
			m.recordHave(h)
			break
		}
	}
	m.maybeClose()
}

// roundAnnouncements are the current round's announcements of blobs:
// updates, or secure aggregation's share, input and reveal blobs.
func (m *Machine) roundAnnouncements() []*Message {
	var out []*Message
	for _, a := range m.cur.anns {
		out = append(out, a)
	}
	if sa := m.cur.sa; sa != nil {
		for _, as := range sa.anns[PhaseShares:] {
			for _, a := range as {
				out = append(out, a)
			}
		}
		for _, e := range sa.entries {
			out = append(out, e.Included...)
		}
	}
	return out
}

// BadBlob tells the Machine that the update blob d, fetched and matching
// its digest and signed length, failed CheckUpdate (it does not decode, or
// holds NaN or Inf). Its author is flagged and left out of the round: no
// Have is gossiped for it, it is never included, and the round closes
// without waiting for it. The author pays, not the round.
func (m *Machine) BadBlob(d Digest, why error) {
	delete(m.cur.fetching, d)
	for _, a := range m.roundAnnouncements() {
		if author := string(a.Author); a.Digest == d && m.cur.bad[author] == "" {
			m.cur.bad[author] = why.Error()
			m.Counters.ExcludedUpdates++
			m.alarm("round %d: update of %s excluded: %s", m.cur.round, a.Author.Short(), clip(why.Error(), 200))
		}
	}
	m.maybeClose()
}

// clip bounds attacker-influenced text in alarms.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// FetchFailed tells the Machine a fetch failed; it is handed out again.
func (m *Machine) FetchFailed(d Digest) {
	delete(m.cur.fetching, d)
	if w, ok := m.wanted[d]; ok {
		w.inflight = false // fetched again on the next tick
		if w.fails++; w.fails == max(m.p.DeadlineTicks, 1) {
			// A committed entry names it with a majority of voters' Haves,
			// so a holder exists: say so, and keep asking every member.
			m.alarm("blob %s needed by round %d not fetched after %d attempts from any member", d.String()[:12], m.cur.round, w.fails)
		}
	}
}

// Trained reports this member's own update for round r, already persisted as a blob.
func (m *Machine) Trained(r uint64, d Digest, length, examples int64) {
	if r != m.cur.round || m.cur.own != nil || m.halted != "" {
		return
	}
	a := &Message{Kind: KindAnnounce, Round: r, Base: m.st.Model, Digest: d, Length: length, Examples: examples}
	a.Sign(m.p.Consortium, m.self)
	m.gate.Serve(d)
	m.cur.own = a
	m.out.Gossip = append(m.out.Gossip, a)
	_ = m.step(a)
	m.BlobStored(d)
}

// Decline reports that this member will not train round r, and why: the
// reason travels in the signed Decline (Message.Reason), so the others can
// see it (a privacy budget exhausted, a training failure).
func (m *Machine) Decline(r uint64, reason string) {
	if r != m.cur.round || m.cur.declined || m.cur.own != nil {
		return
	}
	m.cur.declined = true
	msg := &Message{Kind: KindDecline, Round: r, Reason: reason}
	m.gossip(msg)
	_ = m.step(msg)
}
