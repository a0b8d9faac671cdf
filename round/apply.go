package round

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
)

func (m *Machine) invalid(ent *pb.Entry, e *Entry, err error) {
	r := m.st.Round + 1
	if e != nil {
		r = e.Round
	}
	m.alarm("invalid entry %d (term %d) for round %d skipped: %v", ent.GetIndex(), ent.GetTerm(), r, err)
	m.skipped[ent.GetIndex()] = true
	m.checkAttestations(r)
	m.gossip(&Message{Kind: KindInvalid, Round: max(r, 1), Index: ent.GetIndex(), Reason: err.Error()})
	if m.IsLeader() && ent.GetTerm() == m.term() {
		// We proposed an invalid entry: give up leadership.
		m.leaderTerm = 0
		if next := m.successor(); next != m.id {
			m.rn.TransferLeader(next) // the same choice on every run, not map order
		}
	}
}

// validate is the validity function: a pure function of the applied state and
// the entry (the recomputed model digest is checked by the ApplyTask).
func (m *Machine) validate(e *Entry) error {
	r := m.st.Round + 1
	switch {
	case e.Round < r:
		return fmt.Errorf("%w: entry for decided round %d", ErrStale, e.Round)
	case e.Round > r:
		return fmt.Errorf("entry for round %d, next is %d", e.Round, r)
	case e.Base != m.st.Model:
		return fmt.Errorf("base %s, applied model is %s", e.Base.String()[:12], m.st.Model.String()[:12])
	case e.Prev != m.st.Chain:
		return fmt.Errorf("chain hash does not follow the applied outcome")
	}
	if e.Kind == EntryAbandon {
		if e.Result != e.Base || len(e.Included) > 0 || len(e.Haves) > 0 || len(e.Reveals) > 0 || len(e.Phases) > 0 {
			return errors.New("abandon must keep the model and include nothing")
		}
		return nil
	}
	if m.secAggOn() {
		return m.validateSecAgg(e)
	}
	if e.Kind != EntryCommit || len(e.Reveals) > 0 || len(e.Phases) > 0 {
		return fmt.Errorf("a %s entry without secure aggregation", e.Kind)
	}
	if e.Aggregator != m.p.Aggregator {
		return fmt.Errorf("aggregator %q, want %q", e.Aggregator, m.p.Aggregator)
	}
	if len(e.Included) < m.p.MinParticipants {
		return fmt.Errorf("%d included, min_participants %d", len(e.Included), m.p.MinParticipants)
	}
	sample := m.Sample(r)
	for i, a := range e.Included {
		if a == nil {
			return errors.New("empty inclusion")
		}
		if i > 0 && identity.Compare(e.Included[i-1].Author, a.Author) >= 0 {
			return errors.New("inclusions not in strictly increasing peer-ID order")
		}
		if a.Kind != KindAnnounce || a.Round != r {
			return fmt.Errorf("inclusion %d is not an announcement for round %d", i, r)
		}
		if !contains(sample, a.Author) {
			return fmt.Errorf("%w: %s", ErrNotSampled, a.Author.Short())
		}
		if err := m.checkAnnouncement(a); err != nil {
			return err
		}
		// Always verified: validity must not depend on what gossip this
		// member happened to see (a repeat's unsigned fields may differ);
		// the gate's cache answers as Verify would, from the signed bytes.
		if err := m.gate.verify(a, m.p.Consortium); err != nil {
			return err
		}
	}
	return m.checkHavesOf(e, e.Included)
}

// checkHaves is the part of validity that does not trust the proposer: every
// inclusion must come with signed Haves of its blob from a majority of
// voters, so at least one voter that is not the proposer vouches that the
// blob exists and can be fetched (a proposer can no longer commit an update
// nobody serves and leave every member waiting for it).
func (m *Machine) checkHavesOf(e *Entry, named []*Message) error {
	if len(e.Haves) > len(named)*len(m.p.Voters) {
		return fmt.Errorf("%d Haves for %d inclusions and %d voters", len(e.Haves), len(named), len(m.p.Voters))
	}
	held := map[Digest]map[string]bool{}
	for _, h := range e.Haves {
		if h == nil || h.Kind != KindHave || h.Round != e.Round {
			return errors.New("a Have that is not a Have of the round")
		}
		if _, voter := m.voters[RaftID(h.Author)]; !voter {
			return fmt.Errorf("a Have of %s, not a voter", h.Author.Short())
		}
		if err := m.gate.verify(h, m.p.Consortium); err != nil {
			return err
		}
		if held[h.Digest] == nil {
			held[h.Digest] = map[string]bool{}
		}
		held[h.Digest][string(h.Author)] = true
	}
	for _, a := range named {
		if n := len(held[a.Digest]); n < m.p.Majority() {
			return fmt.Errorf("the update of %s has Haves of %d voters, a majority is %d", a.Author.Short(), n, m.p.Majority())
		}
	}
	return nil
}

// Applied reports the result of an ApplyTask: the recomputed model digest, or
// an error if the outcome could not be computed from the named blobs (an
// invalid entry). On success the caller has already persisted the outcome.
func (m *Machine) Applied(t *ApplyTask, model Digest, err error) {
	if m.pending == nil || t.Index != m.pending.Index {
		return
	}
	if m.needMissing(err, append(slices.Clone(t.Entry.Included), t.Entry.Reveals...), t.Entry.Haves...) {
		// Members never skip an entry for a missing blob: fetch it and
		// hand the task out again once it is stored.
		m.waitApply = true
		return
	}
	m.pending = nil
	if err == nil && model != t.Entry.Result {
		err = fmt.Errorf("recomputed model %s, entry says %s", model.String()[:12], t.Entry.Result.String()[:12])
	}
	if err != nil {
		m.Counters.InvalidEntries++
		m.invalid(&pb.Entry{Index: proto.Uint64(t.Index), Term: proto.Uint64(t.Term)}, t.Entry, err)
		return
	}
	m.st = State{Index: t.Index, Round: t.Entry.Round, Model: model, Chain: t.Chain}
	m.gate.Serve(model)
	m.attest()
	m.checkAttestations(m.st.Round)
	m.hist = append(m.hist, histEntry{m.st, slices.Clone(m.members)})
	if len(m.hist) > 2*m.p.RetainRounds+2 {
		m.hist = m.hist[1:]
	}
	m.snapDue = true // after Advance: the entry must be in storage first
	m.startRound()
	m.stepEarly()
}

// checkAttestations applies the halt rule: a member whose applied digest for
// round r contradicts signed attestations from a majority of voters halts.
func (m *Machine) checkAttestations(r uint64) {
	if m.halted != "" {
		return
	}
	index, digest, n := m.majorityAttest(r)
	if n < m.p.Majority() {
		return
	}
	switch {
	case r == m.st.Round && digest != m.st.Model:
		m.halted = fmt.Sprintf("round %d: applied model %s, but a majority of voters (%d) attest %s", r, m.st.Model.String()[:12], n, digest.String()[:12])
	case r == m.st.Round+1 && m.skipped[index]:
		m.halted = fmt.Sprintf("round %d: this member judged entry %d invalid, but a majority of voters (%d) applied it (model %s)", r, index, n, digest.String()[:12])
	default:
		return
	}
	m.alarm("halted: %s", m.halted)
}

// majorityAttest is the (index, digest) most voters attest for round r, and
// how many do: the halt rule counts agreement on one outcome, not
// disagreement with ours.
func (m *Machine) majorityAttest(r uint64) (uint64, Digest, int) {
	type outcome struct {
		index  uint64
		digest Digest
	}
	counts := map[outcome]int{}
	var best outcome
	for _, a := range m.attests[r] {
		o := outcome{a.Index, a.Digest}
		counts[o]++
		if counts[o] > counts[best] || (counts[o] == counts[best] && (o.index < best.index || (o.index == best.index && bytes.Compare(o.digest[:], best.digest[:]) < 0))) {
			best = o
		}
	}
	return best.index, best.digest, counts[best]
}

// attest signs and gossips this member's attestation of its applied
// outcome; it is repeated every deadline/4 until a majority of voters
// attest the same (Tick), and made again after a restart, so a crash
// between apply and send loses nothing.
func (m *Machine) attest() {
	if m.st.Round == 0 {
		return
	}
	att := &Message{Kind: KindAttest, Round: m.st.Round, Index: m.st.Index, Digest: m.st.Model}
	m.gossip(att)
	m.ownAttest = att
	if m.isVoter() {
		m.recordAttest(att)
	}
}

// attested reports whether a majority of voters attest this member's
// applied outcome.
func (m *Machine) attested() bool {
	n := 0
	for _, a := range m.attests[m.st.Round] {
		if a.Index == m.st.Index && a.Digest == m.st.Model {
			n++
		}
	}
	return n >= m.p.Majority()
}

func (m *Machine) recordAttest(a *Message) {
	if m.attests[a.Round] == nil {
		m.attests[a.Round] = map[string]*Message{}
	}
	m.attests[a.Round][string(a.Author)] = a
}

// Installed reports the result of an Install task: nil once the snapshot's
// applied state is persisted with its model, or the error that kept it
// from being (a missing model blob is fetched and the task handed out
// again once it is stored).
func (m *Machine) Installed(st *State, err error) {
	if err == nil || st.Round != m.st.Round {
		return
	}
	if m.needMissing(err, nil) {
		m.waitInstall = st
		return
	}
	m.alarm("round %d: installing the snapshot failed: %v", st.Round, err)
}
