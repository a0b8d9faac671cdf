package round

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/privacy/dp"
	"github.com/globalbrain/globalbrain/privacy/secagg"
)

// A secure-aggregation round (PRIVACY.md section 1) runs in four phases, the
// Raft leader driving them and every decision a committed entry that every
// member validates:
//
//	keys    sampled members gossip KeyAds; the leader commits Keys (U1)
//	shares  U1 gossip share blobs and b-commitments; the leader commits Shares (U2)
//	input   U2 gossip masked inputs; the leader commits Unmask (U3, D = U2 \ U3)
//	reveal  U2 echo the Unmask; U3 reveal shares; the leader commits the Commit
//
// No member ever sees another member's update: plain announcements are
// refused, the own update stays in the node's private store, and what is
// fetched is masked inputs, sealed shares and reveals.

// SecAggPhase names a phase of a secure-aggregation round.
type SecAggPhase int

// The phases, in order.
const (
	PhaseKeys SecAggPhase = iota
	PhaseShares
	PhaseInput
	PhaseReveal
)

func (p SecAggPhase) String() string {
	return [...]string{"keys", "shares", "input", "reveal"}[p]
}

// keyLen is the size of an X25519 public key.
const keyLen = 32

// SecAggView is what a phase's work needs to know of the round: the
// committed participant sets with the signed messages that fixed them.
type SecAggView struct {
	Round uint64
	Base  Digest
	T     int // the reconstruction threshold t
	// Noise is the round's distributed-DP encoding (NoiseFor), nil in
	// mode secagg.
	Noise   *dp.DistributedNoise
	KeyAds  []*Message // U1's KeyAds, by peer ID
	Shares  []*Message // U2's share announcements, by peer ID
	Inputs  []*Message // U3's input announcements, by peer ID
	Reveals []*Message // commit: the t reveals used, by peer ID
}

// Session is the secagg session of the view's round.
func (v *SecAggView) Session(consortium [32]byte) secagg.Session {
	return secagg.Session{Consortium: consortium, Round: v.Round}
}

// Dropped returns D = U2 \ U3, by peer ID.
func (v *SecAggView) Dropped() []*Message {
	var out []*Message
	for _, s := range v.Shares {
		if !slices.ContainsFunc(v.Inputs, func(i *Message) bool { return bytes.Equal(i.Author, s.Author) }) {
			out = append(out, s)
		}
	}
	return out
}

// SecAggTask asks the node for a participant's work in a phase: make and
// persist the round's keys (PhaseKeys), deal and seal shares (PhaseShares),
// mask its update (PhaseInput), or open and reveal shares (PhaseReveal).
// The node persists what it will publish before it reports, and after a
// restart republishes those bytes, never new ones.
type SecAggTask struct {
	Phase SecAggPhase
	Round uint64
	Base  Digest
	View  *SecAggView
}

// saRound is what the member has seen of a secure-aggregation round.
type saRound struct {
	phase    SecAggPhase
	ticks    int // ticks since the phase began (or leadership did)
	t        int
	gamma    int
	anns     [4]map[string]*Message // by phase: KeyAds, share, input and reveal announcements, by author
	entries  []*Entry               // the applied Keys, Shares and Unmask entries
	digests  []Digest               // their digests
	echoes   map[string]Digest      // U2 members' echoes of the Unmask
	conflict string                 // why this member will not reveal
	own      [4]*Message            // own announcements, repeated until the phase closes
	ownEcho  *Message
	trained  bool // own update kept privately
	asked    [4]bool
	wait     *SecAggTask // a task waiting for wanted blobs
}

func (m *Machine) secAggOn() bool { return m.p.SecAgg != nil }

// startSecAgg begins a round's phase machine, and asks a sampled member for
// its keys.
func (m *Machine) startSecAgg() {
	if !m.secAggOn() {
		return
	}
	n := len(m.cur.sample)
	t, gamma, _ := m.p.SecAgg.Threshold(n)
	sa := &saRound{t: t, gamma: gamma, echoes: map[string]Digest{}}
	for i := range sa.anns {
		sa.anns[i] = map[string]*Message{}
	}
	m.cur.sa = sa
}

// secAggTasks hands out the participant's next piece of work.
func (m *Machine) secAggTasks() {
	sa := m.cur.sa
	if sa == nil || m.halted != "" || m.Done() || !contains(m.cur.sample, m.self.ID) {
		return
	}
	task := func(p SecAggPhase) {
		if sa.asked[p] {
			return
		}
		sa.asked[p] = true
		m.out.SecAgg = append(m.out.SecAgg, &SecAggTask{Phase: p, Round: m.cur.round, Base: m.st.Model, View: m.secAggView()})
	}
	switch sa.phase {
	case PhaseKeys:
		task(PhaseKeys)
	case PhaseShares:
		if m.inSet(sa.entries[0], m.self.ID) {
			task(PhaseShares)
		}
	case PhaseInput:
		if sa.trained && m.inSet(sa.entries[1], m.self.ID) {
			task(PhaseInput)
		}
	case PhaseReveal:
		if m.inSet(sa.entries[2], m.self.ID) && m.mayReveal() {
			task(PhaseReveal)
		}
	}
}

func (m *Machine) inSet(e *Entry, id identity.PeerID) bool {
	return slices.ContainsFunc(e.Included, func(a *Message) bool { return bytes.Equal(a.Author, id) })
}

// secAggView is the view of the phases applied so far.
func (m *Machine) secAggView() *SecAggView {
	sa := m.cur.sa
	v := &SecAggView{Round: m.cur.round, Base: m.st.Model, T: sa.t, Noise: m.p.SecAgg.NoiseFor(sa.t, sa.gamma)}
	if len(sa.entries) > 0 {
		v.KeyAds = sa.entries[0].Included
	}
	if len(sa.entries) > 1 {
		v.Shares = sa.entries[1].Included
	}
	if len(sa.entries) > 2 {
		v.Inputs = sa.entries[2].Included
	}
	return v
}

// mayReveal is the echo rule: reveal only holding valid echoes of the
// applied Unmask from more than (|U2| + gamma)/2 members of U2, and none of
// another.
func (m *Machine) mayReveal() bool {
	sa := m.cur.sa
	if sa.conflict != "" || len(sa.entries) < 3 {
		return false
	}
	want := sa.digests[2]
	n := 0
	for _, d := range sa.echoes {
		if d == want {
			n++
		}
	}
	return 2*n > len(sa.entries[1].Included)+sa.gamma
}

// SecAggTrained reports that the member's own update for round r is kept
// in its private store (never as a blob).
func (m *Machine) SecAggTrained(r uint64) {
	if sa := m.cur.sa; sa != nil && r == m.cur.round && !sa.trained {
		sa.trained = true
		m.secAggTasks()
	}
}

// SecAggDone reports a participant's phase work: msg is the announcement
// to sign and gossip (its Kind, Digest, Length and Data filled in), already
// persisted with what it names.
func (m *Machine) SecAggDone(t *SecAggTask, msg *Message) {
	sa := m.cur.sa
	if sa == nil || t.Round != m.cur.round || t.Base != m.st.Model || m.halted != "" || sa.own[t.Phase] != nil {
		return
	}
	msg.Round, msg.Base = t.Round, t.Base
	msg.Sign(m.p.Consortium, m.self)
	msg.verified = true
	sa.own[t.Phase] = msg
	if msg.Digest != (Digest{}) {
		m.gate.Serve(msg.Digest)
	}
	m.out.Gossip = append(m.out.Gossip, msg)
	if err := m.step(msg); err != nil {
		m.alarm("round %d: own %s refused: %v", t.Round, msg.Kind, err)
		return
	}
	if msg.Digest != (Digest{}) {
		m.BlobStored(msg.Digest)
	}
}

// SecAggFailed reports a phase's work that could not be done. A missing
// blob is fetched and the task handed out again; anything else is an alarm
// (the member drops out of the round, which survives dropouts).
func (m *Machine) SecAggFailed(t *SecAggTask, err error) {
	sa := m.cur.sa
	if sa == nil || t.Round != m.cur.round || t.Base != m.st.Model {
		return
	}
	var inc []*Message
	for _, as := range sa.anns {
		for _, a := range as {
			inc = append(inc, a)
		}
	}
	if m.needMissing(err, inc) {
		sa.wait = t
		return
	}
	m.alarm("round %d: secure aggregation %s phase failed; this member drops out: %v", t.Round, t.Phase, err)
}

// stepSecAgg takes a secure-aggregation message of the current round.
func (m *Machine) stepSecAgg(msg *Message) error {
	sa := m.cur.sa
	if sa == nil {
		return fmt.Errorf("%w: %s without secure aggregation", ErrMalformed, msg.Kind)
	}
	author := string(msg.Author)
	if !contains(m.cur.sample, msg.Author) {
		return fmt.Errorf("%w: %s in round %d", ErrNotSampled, msg.Author.Short(), msg.Round)
	}
	if msg.Kind != KindEcho && msg.Base != m.st.Model {
		return fmt.Errorf("%w: %s of %s", ErrWrongBase, msg.Kind, msg.Author.Short())
	}
	var phase SecAggPhase
	switch msg.Kind {
	case KindKeyAd:
		phase = PhaseKeys
		if err := checkKeyAd(msg); err != nil {
			return err
		}
	case KindShares:
		phase = PhaseShares
		if msg.Length > maxShareBlob(len(m.cur.sample)) {
			return fmt.Errorf("%w: share blob of %d bytes", ErrBadLength, msg.Length)
		}
	case KindInput:
		phase = PhaseInput
		if msg.Length != m.inputBytes() {
			return fmt.Errorf("%w: input of %d bytes, want %d", ErrBadLength, msg.Length, m.inputBytes())
		}
	case KindReveal:
		phase = PhaseReveal
		if msg.Length > maxRevealBlob(len(m.cur.sample)) {
			return fmt.Errorf("%w: reveal blob of %d bytes", ErrBadLength, msg.Length)
		}
	case KindEcho:
		return m.stepEcho(msg)
	}
	if prev, ok := sa.anns[phase][author]; ok {
		if sameSecAgg(prev, msg) {
			if msg.Digest != (Digest{}) && sa.phase == phase {
				m.wantSized(msg.Digest, msg.Author, msg.Length, msg.Kind)
			}
			return nil
		}
		m.keepEvidence(&Evidence{Round: msg.Round, Author: msg.Author, First: prev, Second: msg})
		return fmt.Errorf("%w: %s %s round %d", ErrEquivocated, msg.Author.Short(), msg.Kind, msg.Round)
	}
	switch {
	case phase < sa.phase:
		return nil // the phase is closed: late inputs are ignored for ever
	case phase > sa.phase:
		m.keepEarly(msg) // stepped again when the phase begins
		return nil
	case phase > PhaseKeys && !m.inSet(sa.entries[phase-1], msg.Author):
		return fmt.Errorf("%w: %s is not in the %s phase's set", ErrNotSampled, msg.Author.Short(), phase)
	}
	sa.anns[phase][author] = msg
	if msg.Digest != (Digest{}) {
		m.gate.Serve(msg.Digest)
		m.wantSized(msg.Digest, msg.Author, msg.Length, msg.Kind)
	}
	m.maybeClose()
	return nil
}

func (m *Machine) stepEcho(msg *Message) error {
	sa := m.cur.sa
	if len(sa.entries) < 3 {
		m.keepEarly(msg) // stepped again once the Unmask is applied
		return nil
	}
	if !m.inSet(sa.entries[1], msg.Author) {
		return fmt.Errorf("%w: echo of %s, not in U2", ErrNotSampled, msg.Author.Short())
	}
	author := string(msg.Author)
	if prev, ok := sa.echoes[author]; ok {
		if prev != msg.Digest {
			m.keepEvidence(&Evidence{Round: msg.Round, Author: msg.Author, First: &Message{Kind: KindEcho, Round: msg.Round, Digest: prev, Author: msg.Author}, Second: msg})
			sa.conflict = fmt.Sprintf("%s echoed two Unmask digests", msg.Author.Short())
			m.alarm("round %d: %s; not revealing", m.cur.round, sa.conflict)
			return fmt.Errorf("%w: %s echoed two digests", ErrEquivocated, msg.Author.Short())
		}
		return nil
	}
	sa.echoes[author] = msg.Digest
	if msg.Digest != sa.digests[2] && sa.conflict == "" {
		sa.conflict = fmt.Sprintf("%s echoed Unmask %s, this member applied %s", msg.Author.Short(), msg.Digest.String()[:12], sa.digests[2].String()[:12])
		m.alarm("round %d: %s; not revealing", m.cur.round, sa.conflict)
	}
	m.secAggTasks()
	return nil
}

func checkKeyAd(msg *Message) error {
	if _, _, err := KeyAdKeys(msg); err != nil {
		return fmt.Errorf("%w: KeyAd of %s: %v", ErrMalformed, msg.Author.Short(), err)
	}
	return nil
}

func sameSecAgg(a, b *Message) bool {
	return a.Kind == b.Kind && a.Round == b.Round && a.Base == b.Base && a.Digest == b.Digest &&
		a.Length == b.Length && bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Author, b.Author)
}

// inputBytes is the length of a masked input: [w, w*x] mod 2^64.
func (m *Machine) inputBytes() int64 { return 8 * int64(m.p.SecAgg.InputWords(int(m.p.UpdateBytes/4))) }

// Bounds on the share and reveal blobs of a sample of n (secagg_blob.go).
func maxShareBlob(n int) int64  { return int64(64 + n*(shareEntryMax)) }
func maxRevealBlob(n int) int64 { return int64(64 + n*(revealEntryMax)) }

// secAggTick advances the phase clock and repeats the own announcements.
func (m *Machine) secAggTick(repeat bool) {
	sa := m.cur.sa
	if sa == nil {
		return
	}
	sa.ticks++
	if q := max(m.p.SecAgg.PhaseTicks/4, 1); repeat || sa.ticks%q == 0 {
		for p, own := range sa.own {
			if own != nil && SecAggPhase(p) >= sa.phase {
				m.out.Gossip = append(m.out.Gossip, own)
			}
		}
		if sa.ownEcho != nil {
			m.out.Gossip = append(m.out.Gossip, sa.ownEcho)
		}
	}
}

// phaseDeadline is the phase's deadline in ticks: the input phase includes
// the training and has the round's.
func (m *Machine) phaseDeadline(p SecAggPhase) int {
	if p == PhaseInput {
		return m.p.DeadlineTicks
	}
	return m.p.SecAgg.PhaseTicks
}

// includableOf are a phase's announcements the leader may name in an
// entry: it holds the blob (if any) and a majority of voters said Have.
func (m *Machine) includableOf(anns map[string]*Message) []*Message {
	var out []*Message
	for _, a := range anns {
		if m.cur.bad[string(a.Author)] != "" {
			continue // its blob failed the edge checks
		}
		if a.Digest != (Digest{}) {
			if !m.cur.have[a.Digest] {
				continue
			}
			voters := 0
			for h := range m.cur.haveMsgs[a.Digest] {
				if _, voter := m.voters[RaftID(identity.PeerID(h))]; voter {
					voters++
				}
			}
			if voters < m.p.Majority() {
				continue
			}
		}
		out = append(out, a)
	}
	sortAnnouncements(out)
	return out
}

// maybeCloseSecAgg is the leader's closing rule for each phase.
func (m *Machine) maybeCloseSecAgg() {
	sa := m.cur.sa
	n := len(m.cur.sample)
	abandon := func(why string) {
		m.propose(&Entry{Kind: EntryAbandon, Round: m.cur.round, Base: m.st.Model, Prev: m.st.Chain, Result: m.st.Model,
			Reason: fmt.Sprintf("secure aggregation, %s phase: %s", sa.phase, why)})
	}
	if _, _, ok := m.p.SecAgg.Threshold(n); !ok {
		abandon(fmt.Sprintf("a sample of %d cannot meet the threshold %d", n, sa.t))
		return
	}
	late := sa.ticks >= m.phaseDeadline(sa.phase)
	inc := m.includableOf(sa.anns[sa.phase])
	var set int // the phase's full set
	switch sa.phase {
	case PhaseKeys:
		set = n
	default:
		set = len(sa.entries[sa.phase-1].Included)
	}
	if sa.phase == PhaseReveal {
		if len(inc) >= sa.t {
			m.cur.aggregating = true
			v := m.secAggView()
			v.Reveals = inc[:sa.t] // the t lowest-ID revealers
			m.out.Aggregate = &AggregateTask{Round: m.cur.round, Base: m.st.Model, Included: v.Inputs, SecAgg: v}
		} else if late {
			abandon(fmt.Sprintf("%d reveals, threshold %d", len(inc), sa.t))
		}
		return
	}
	if len(inc) < set && !late {
		return
	}
	if len(inc) < sa.t {
		abandon(fmt.Sprintf("%d of %d, threshold %d", len(inc), set, sa.t))
		return
	}
	kind := [...]EntryKind{EntryKeys, EntryShares, EntryUnmask}[sa.phase]
	e := &Entry{Kind: kind, Round: m.cur.round, Base: m.st.Model, Prev: m.st.Chain, Included: inc, Result: m.st.Model}
	if sa.phase != PhaseKeys {
		e.Haves = m.inclusionHaves(inc)
	}
	m.propose(e)
}

// validateSecAgg is the validity of a secure-aggregation round's entries,
// after validate's checks of round, base and chain.
func (m *Machine) validateSecAgg(e *Entry) error {
	sa := m.cur.sa
	if sa == nil {
		return fmt.Errorf("%s entry without secure aggregation", e.Kind)
	}
	if e.Kind == EntryAbandon {
		return nil
	}
	if e.Kind == EntryCommit {
		return m.validateSecAggCommit(e)
	}
	phase := map[EntryKind]SecAggPhase{EntryKeys: PhaseKeys, EntryShares: PhaseShares, EntryUnmask: PhaseInput}[e.Kind]
	switch {
	case int(phase) != len(sa.entries):
		return fmt.Errorf("a %s entry after %d phase entries (no phase twice, none skipped)", e.Kind, len(sa.entries))
	case e.Result != e.Base || e.Aggregator != "" || len(e.Reveals) > 0 || len(e.Phases) > 0 || e.Reason != "":
		return fmt.Errorf("a %s entry keeps the model and names only its set", e.Kind)
	case len(e.Included) < sa.t:
		return fmt.Errorf("%s names %d participants, threshold %d", e.Kind, len(e.Included), sa.t)
	}
	kind := [...]Kind{KindKeyAd, KindShares, KindInput}[phase]
	for i, a := range e.Included {
		if err := m.checkNamed(a, kind, e, i); err != nil {
			return err
		}
		if phase > PhaseKeys && !m.inSet(sa.entries[phase-1], a.Author) {
			return fmt.Errorf("%s names %s, not in the previous phase's set", e.Kind, a.Author.Short())
		}
		var err error
		switch phase {
		case PhaseKeys:
			err = checkKeyAd(a)
		case PhaseShares:
			if a.Length > maxShareBlob(len(m.cur.sample)) {
				err = fmt.Errorf("share blob of %d bytes", a.Length)
			}
		case PhaseInput:
			if a.Length != m.inputBytes() {
				err = fmt.Errorf("input of %d bytes", a.Length)
			}
		}
		if err != nil {
			return err
		}
	}
	if phase == PhaseKeys {
		if len(e.Haves) > 0 {
			return errors.New("a Keys entry carries no Haves")
		}
		return nil
	}
	return m.checkHavesOf(e, e.Included)
}

// checkNamed checks the i-th signed message an entry names.
func (m *Machine) checkNamed(a *Message, kind Kind, e *Entry, i int) error {
	if a == nil {
		return errors.New("empty inclusion")
	}
	if i > 0 {
		prev := e.Included
		if kind == KindReveal {
			prev = e.Reveals
		}
		if identity.Compare(prev[i-1].Author, a.Author) >= 0 {
			return fmt.Errorf("%s messages not in strictly increasing peer-ID order", kind)
		}
	}
	if a.Kind != kind || a.Round != e.Round || a.Base != e.Base {
		return fmt.Errorf("message %d is not a %s of round %d on the base", i, kind, e.Round)
	}
	if !contains(m.cur.sample, a.Author) {
		return fmt.Errorf("%w: %s", ErrNotSampled, a.Author.Short())
	}
	return a.Verify(m.p.Consortium)
}

// validateSecAggCommit checks a secure-aggregation Commit: it names the
// Unmask's U3 verbatim, exactly t reveals of members of U3, and the
// round's phase entries; the sum itself is recomputed by the ApplyTask.
func (m *Machine) validateSecAggCommit(e *Entry) error {
	sa := m.cur.sa
	switch {
	case len(sa.entries) != 3:
		return fmt.Errorf("a Commit after %d phase entries, want 3", len(sa.entries))
	case !slices.Equal(e.Phases, sa.digests):
		return errors.New("the Commit names other phase entries than the applied ones")
	case e.Aggregator != m.p.Aggregator:
		return fmt.Errorf("aggregator %q, want %q", e.Aggregator, m.p.Aggregator)
	case len(e.Reveals) != sa.t:
		return fmt.Errorf("%d reveals, want exactly t = %d", len(e.Reveals), sa.t)
	case len(e.Included) < m.p.MinParticipants:
		return fmt.Errorf("%d included, min_participants %d", len(e.Included), m.p.MinParticipants)
	}
	u3 := sa.entries[2].Included
	if len(e.Included) != len(u3) {
		return errors.New("the Commit's inputs are not the Unmask's U3")
	}
	for i := range u3 {
		if !bytes.Equal(e.Included[i].Encode(), u3[i].Encode()) {
			return errors.New("the Commit's inputs are not the Unmask's U3")
		}
	}
	for i, r := range e.Reveals {
		if err := m.checkNamed(r, KindReveal, e, i); err != nil {
			return err
		}
		if !m.inSet(sa.entries[2], r.Author) {
			return fmt.Errorf("a reveal of %s, not in U3", r.Author.Short())
		}
		if r.Length > maxRevealBlob(len(m.cur.sample)) {
			return fmt.Errorf("reveal blob of %d bytes", r.Length)
		}
	}
	return m.checkHavesOf(e, e.Reveals)
}

// applyPhase applies a validated phase entry: the next phase begins.
func (m *Machine) applyPhase(enc []byte, e *Entry) {
	sa := m.cur.sa
	sa.entries = append(sa.entries, e)
	sa.digests = append(sa.digests, sha256.Sum256(enc))
	sa.phase++
	sa.ticks = 0
	m.cur.proposed = -1
	for _, a := range e.Included {
		if a.Digest != (Digest{}) {
			m.gate.Serve(a.Digest)
			m.wantSized(a.Digest, a.Author, a.Length, a.Kind) // every member verifies the committed blobs
		}
	}
	m.stepEarly() // what came before the phase did
	if sa.phase == PhaseReveal && m.inSet(sa.entries[1], m.self.ID) {
		echo := &Message{Kind: KindEcho, Round: m.cur.round, Digest: sa.digests[2]}
		m.gossip(echo)
		sa.ownEcho = echo
		_ = m.stepEcho(echo)
	}
	m.secAggTasks()
}

// secAggView for a Commit being applied: the applied phases and its reveals.
func (m *Machine) commitView(e *Entry) *SecAggView {
	v := m.secAggView()
	v.Reveals = e.Reveals
	return v
}
