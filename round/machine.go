package round

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
)

// State is the applied state: where the member is in the history of the
// global brain. It is a pure function of the applied log.
type State struct {
	Index uint64 // Raft index of the last applied outcome
	Round uint64 // last decided round
	Model Digest // G(Round)
	Chain Digest // hash chain over all outcomes up to Round
}

// Config configures a Machine.
type Config struct {
	Params  Params
	Self    identity.Identity
	Genesis Digest // digest of G(0)
	// Restart state, from the member's store. Zero values start a fresh member.
	Applied   State
	HardState *pb.HardState
	Snapshot  *pb.Snapshot
	Entries   []*pb.Entry
	Logger    raft.Logger // nil: discard
	// Joining is set for a member that is not in the genesis manifest and
	// waits for its AddMember entry to be applied.
	Joining bool
}

// TrainTask asks the member to train round Round from the model Base.
type TrainTask struct {
	Round uint64
	Base  Digest
}

// FetchTask asks the member to obtain and verify a blob; From holds it.
type FetchTask struct {
	Digest Digest
	From   identity.PeerID
}

// AggregateTask asks the leader to compute the outcome of the included
// updates on Base and report its digest through Aggregated.
type AggregateTask struct {
	Round    uint64
	Base     Digest
	Included []*Message
}

// ApplyTask asks the member to compute (for a commit), verify and persist a
// committed outcome, then report through Applied. Entries are handed out one
// at a time, in log order.
type ApplyTask struct {
	Index   uint64
	Entry   *Entry
	Encoded []byte
	Chain   Digest // the chain hash once this entry is applied
}

// Ready is the work the Machine hands out. The caller carries it out in
// order (persist, then send, then the tasks) and calls Advance.
type Ready struct {
	HardState *pb.HardState // persist, if not nil
	Entries   []*pb.Entry   // persist (discarding persisted entries from Entries[0].Index on)
	Snapshot  *pb.Snapshot  // persist, if not nil
	MustSync  bool

	Messages []*pb.Message // Raft messages to send, after persisting
	Gossip   []*Message    // signed messages to publish

	Train     *TrainTask
	Fetch     []FetchTask
	Aggregate *AggregateTask
	Apply     *ApplyTask
	// Install is set when the member adopted a snapshot's state: obtain its
	// model blob and persist the applied state (the raft snapshot itself
	// is in Snapshot).
	Install *State
	// Compact asks the member to persist a snapshot it created and compact
	// its persisted log.
	Compact *CompactTask
	// Sync is set when this member just became the leader: pull the
	// round's current announcements from the others.
	Sync   uint64
	Alarms []string
	raft   *raft.Ready
}

// Empty reports whether there is nothing to do.
func (rd *Ready) Empty() bool {
	return rd.HardState == nil && len(rd.Entries) == 0 && rd.Snapshot == nil && len(rd.Messages) == 0 &&
		len(rd.Gossip) == 0 && rd.Train == nil && len(rd.Fetch) == 0 && rd.Aggregate == nil && rd.Apply == nil &&
		len(rd.Alarms) == 0 && rd.raft == nil && rd.Install == nil && rd.Compact == nil && rd.Sync == 0
}

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
)

// roundState is what the member has seen of the current round.
type roundState struct {
	round       uint64
	anns        map[string]*Message        // valid announcements by author
	haves       map[Digest]map[string]bool // members holding each blob (voters count for inclusion)
	declines    map[string]bool
	fetching    map[Digest]bool
	have        map[Digest]bool // blobs this member holds and verified
	ticks       int             // leader ticks since the round (or leadership) began
	proposed    int             // ticks at the last proposal; -1: none
	aggregating bool
	trained     bool              // own training handed out
	own         *Message          // own announcement, re-gossiped every deadline/4
	myHaves     []*Message        // own Haves, re-gossiped with it
	sample      []identity.PeerID // sample(round) over the membership at the round's start
	declined    bool
}

// Machine is one member's round state machine around an etcd raft RawNode.
// It does no I/O, reads no clock and starts no goroutines: ticks and
// messages come in, Ready work goes out.
type Machine struct {
	p       Params
	self    identity.Identity
	id      uint64
	rn      *raft.RawNode
	storage *raft.MemoryStorage
	voters  map[uint64]identity.PeerID

	st      State
	queue   []*pb.Entry // committed, not yet applied
	pending *ApplyTask
	cur     roundState

	leaderTerm   uint64                         // term in which this member leads and its empty entry applied
	idleTicks    int                            // ticks without an applied outcome (voters ask for leadership)
	stalls       uint64                         // times the current round stalled for 2 deadlines
	attests      map[uint64]map[string]*Message // signed attestations of voters, by round
	hist         []histEntry                    // recent applied outcomes, oldest first
	snapRound    uint64                         // round of the latest snapshot
	snapDue      bool                           // an outcome was applied since Advance
	cs           *pb.ConfState
	members      []identity.PeerID // applied membership, sorted
	roundMembers []identity.PeerID // membership at the start of the current round
	halted       string
	bootSnap     *pb.Snapshot
	out          Ready
	Counters     Counters
}

// Counters counts what the Machine refused or skipped.
type Counters struct {
	StaleEntries, InvalidEntries, RejectedMessages, IgnoredMessages, Reproposals uint64
}

// New builds a Machine. A fresh member (no HardState, Snapshot or Entries)
// bootstraps the genesis configuration, identically on every member.
func New(c Config) (*Machine, error) {
	p := c.Params
	p.Members = slices.Clone(p.Members)
	p.Voters = slices.Clone(p.Voters)
	slices.SortFunc(p.Members, identity.Compare)
	slices.SortFunc(p.Voters, identity.Compare)
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if !contains(p.Members, c.Self.ID) && !c.Joining {
		return nil, fmt.Errorf("%w: %s", ErrNotMember, c.Self.ID)
	}
	m := &Machine{p: p, self: c.Self, id: RaftID(c.Self.ID), storage: raft.NewMemoryStorage(),
		voters: map[uint64]identity.PeerID{}, attests: map[uint64]map[string]*Message{}}
	for _, v := range p.Voters {
		m.voters[RaftID(v)] = v
	}
	m.members = p.Members
	m.st = c.Applied
	if c.HardState == nil && c.Snapshot == nil && len(c.Entries) == 0 {
		if m.st != (State{}) {
			return nil, errors.New("round: applied state without a raft log")
		}
		m.st = State{Model: c.Genesis}
		cs := &pb.ConfState{}
		for _, id := range p.Members {
			if contains(p.Voters, id) {
				cs.Voters = append(cs.Voters, RaftID(id))
			} else {
				cs.Learners = append(cs.Learners, RaftID(id))
			}
		}
		snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: proto.Uint64(1), Term: proto.Uint64(1), ConfState: cs}}
		if err := m.storage.ApplySnapshot(snap); err != nil {
			return nil, err
		}
		m.st.Index = 1
		m.bootSnap = snap
		m.cs = cs
	} else {
		if c.Snapshot != nil {
			if err := m.storage.ApplySnapshot(c.Snapshot); err != nil {
				return nil, err
			}
			m.cs = c.Snapshot.GetMetadata().GetConfState()
			if s, err := DecodeSnapshot(c.Snapshot.GetData()); err == nil && s.State.Round > m.st.Round {
				m.st = s.State // installed, but the member stopped before persisting its applied state
			}
			if s, err := DecodeSnapshot(c.Snapshot.GetData()); err == nil {
				m.snapRound = s.State.Round
				m.members = s.Members
			}
		}
		if c.HardState != nil {
			if err := m.storage.SetHardState(c.HardState); err != nil {
				return nil, err
			}
		}
		if err := m.storage.Append(c.Entries); err != nil {
			return nil, err
		}
	}
	logger := c.Logger
	if logger == nil {
		logger = discardLogger{}
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:            m.id,
		ElectionTick:  p.ElectionTicks,
		HeartbeatTick: 1,
		Storage:       m.storage,
		// Entries after the snapshot are replayed: membership changes are
		// applied again, outcomes already applied are recognised as decided.
		Applied:                   m.firstIndex() - 1,
		MaxSizePerMsg:             1 << 20,
		MaxInflightMsgs:           256,
		CheckQuorum:               true,
		PreVote:                   true,
		DisableProposalForwarding: true,
		Logger:                    logger,
	})
	if err != nil {
		return nil, err
	}
	m.rn = rn
	m.startRound()
	return m, nil
}

// State returns the applied state.
func (m *Machine) State() State { return m.st }

// Params returns the protocol parameters.
func (m *Machine) Params() Params { return m.p }

// Halted returns why the member halted, or "".
func (m *Machine) Halted() string { return m.halted }

// Done reports whether the configured last round is decided.
func (m *Machine) Done() bool { return m.p.Rounds > 0 && m.st.Round >= m.p.Rounds }

// IsLeader reports whether this member is the Raft leader.
func (m *Machine) IsLeader() bool { return m.rn.BasicStatus().RaftState == raft.StateLeader }

// Leader returns the Raft ID of the current leader, 0 if none is known.
func (m *Machine) Leader() uint64 { return m.rn.BasicStatus().Lead }

// ID returns this member's Raft node ID.
func (m *Machine) ID() uint64 { return m.id }

// Campaign makes this member stand for election at once (tests and bootstrap).
func (m *Machine) Campaign() error { return m.rn.Campaign() }

// Sample returns sample(r) over the genesis membership, over-selection included.
func (m *Machine) Sample(r uint64) []identity.PeerID {
	if r == m.cur.round && m.cur.sample != nil {
		return m.cur.sample
	}
	ms := m.roundMembers
	return Sample(m.p.Consortium[:], r, ms, m.p.Target(len(ms))+m.p.OverSelect)
}

func (m *Machine) firstIndex() uint64 {
	i, _ := m.storage.FirstIndex()
	return i
}

func (m *Machine) startRound() {
	r := m.st.Round + 1
	m.cur = roundState{round: r, anns: map[string]*Message{}, haves: map[Digest]map[string]bool{},
		declines: map[string]bool{}, fetching: map[Digest]bool{}, have: map[Digest]bool{}, proposed: -1}
	m.roundMembers = slices.Clone(m.members)
	m.cur.sample = m.Sample(r)
	m.idleTicks, m.stalls = 0, 0
	for old := range m.attests {
		if old+uint64(2*m.p.RetainRounds+16) < r {
			delete(m.attests, old)
		}
	}
}

func (m *Machine) alarm(format string, args ...any) {
	m.out.Alarms = append(m.out.Alarms, fmt.Sprintf(format, args...))
}

func (m *Machine) gossip(msg *Message) {
	msg.Sign(m.p.Consortium, m.self)
	m.out.Gossip = append(m.out.Gossip, msg)
}

// Tick advances logical time by one tick.
func (m *Machine) Tick() {
	m.rn.Tick()
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
		m.out.Gossip = append(m.out.Gossip, m.cur.myHaves...)
	}
	if m.IsLeader() {
		m.idleTicks = 0 // a leader's own stall is for the others to judge
	}
	if m.idleTicks >= 2*m.p.DeadlineTicks && m.isVoter() {
		// No progress for 2 deadlines: one designated voter asks for
		// leadership (several at once would abort each other's transfers).
		m.idleTicks = 0
		m.stalls++
		if m.successor() == m.id {
			m.rn.TransferLeader(m.id)
		}
	}
	if m.IsLeader() && m.cur.proposed >= 0 && m.cur.ticks-m.cur.proposed >= m.p.DeadlineTicks/2 {
		m.cur.proposed = -1 // the proposal was dropped: propose again
		m.Counters.Reproposals++
	}
	m.maybeClose()
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

func (m *Machine) isVoter() bool { _, ok := m.voters[m.id]; return ok }

// StepRaft feeds a Raft message from another member.
func (m *Machine) StepRaft(msg *pb.Message) error {
	if m.halted != "" {
		return ErrHalted
	}
	return m.rn.Step(msg)
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
	if msg.Round+1 < m.st.Round || msg.Round > m.st.Round+2 {
		return fmt.Errorf("%w: round %d, applied %d", ErrStale, msg.Round, m.st.Round)
	}
	author := string(msg.Author)
	if _, voter := m.voters[RaftID(msg.Author)]; (msg.Kind == KindAttest || msg.Kind == KindHave) && !voter {
		return nil // only voters' attestations and Haves count: no need to verify the rest
	}
	if !m.seen(msg) {
		if err := msg.Verify(m.p.Consortium); err != nil {
			return err
		}
	}
	switch msg.Kind {
	case KindAttest:
		if _, ok := m.voters[RaftID(msg.Author)]; ok {
			m.recordAttest(msg)
			m.checkAttestations(msg.Round)
		}
		return nil
	case KindInvalid:
		m.alarm("member %s skipped entry %d of round %d: %s", msg.Author.Short(), msg.Index, msg.Round, msg.Reason)
		return nil
	}
	if msg.Round != m.cur.round {
		return nil // a neighbouring round's traffic: valid, nothing to do with it now
	}
	switch msg.Kind {
	case KindAnnounce:
		if err := m.checkAnnouncement(msg); err != nil {
			return err
		}
		if prev, ok := m.cur.anns[author]; ok {
			if sameAnnouncement(prev, msg) {
				m.want(msg.Digest, msg.Author) // a failed fetch is retried on the repeat
				return nil
			}
			m.alarm("equivocation: %s announced two updates for round %d (%s, %s)", msg.Author.Short(), msg.Round, prev.Digest.String()[:12], msg.Digest.String()[:12])
			return fmt.Errorf("%w: %s round %d", ErrEquivocated, msg.Author.Short(), msg.Round)
		}
		m.cur.anns[author] = msg
		m.want(msg.Digest, msg.Author)
	case KindHave:
		if m.cur.haves[msg.Digest] == nil {
			m.cur.haves[msg.Digest] = map[string]bool{}
		}
		m.cur.haves[msg.Digest][author] = true
	case KindDecline:
		if !contains(m.Sample(msg.Round), msg.Author) {
			return fmt.Errorf("%w: %s declined round %d", ErrNotSampled, msg.Author.Short(), msg.Round)
		}
		m.cur.declines[author] = true
	}
	m.maybeClose()
	return nil
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
	if m.cur.have[d] || m.cur.fetching[d] {
		return
	}
	m.cur.fetching[d] = true
	m.out.Fetch = append(m.out.Fetch, FetchTask{Digest: d, From: from})
}

// BlobStored tells the Machine that a blob is stored and verified locally.
func (m *Machine) BlobStored(d Digest) {
	if m.cur.have[d] {
		return
	}
	m.cur.have[d] = true
	delete(m.cur.fetching, d)
	for _, a := range m.cur.anns {
		if a.Digest == d {
			h := &Message{Kind: KindHave, Round: m.cur.round, Digest: d}
			m.gossip(h)
			m.cur.myHaves = append(m.cur.myHaves, h)
			if m.cur.haves[d] == nil {
				m.cur.haves[d] = map[string]bool{}
			}
			m.cur.haves[d][string(m.self.ID)] = true
			break
		}
	}
	m.maybeClose()
}

// FetchFailed tells the Machine a fetch failed; it is handed out again.
func (m *Machine) FetchFailed(d Digest) { delete(m.cur.fetching, d) }

// Trained reports this member's own update for round r, already persisted as a blob.
func (m *Machine) Trained(r uint64, d Digest, length, examples int64) {
	if r != m.cur.round || m.cur.own != nil || m.halted != "" {
		return
	}
	a := &Message{Kind: KindAnnounce, Round: r, Base: m.st.Model, Digest: d, Length: length, Examples: examples}
	a.Sign(m.p.Consortium, m.self)
	m.cur.own = a
	m.out.Gossip = append(m.out.Gossip, a)
	_ = m.step(a)
	m.BlobStored(d)
}

// Decline reports that this member will not train round r.
func (m *Machine) Decline(r uint64) {
	if r != m.cur.round || m.cur.declined || m.cur.own != nil {
		return
	}
	m.cur.declined = true
	msg := &Message{Kind: KindDecline, Round: r}
	m.gossip(msg)
	_ = m.step(msg)
}

// Aggregated reports the outcome the leader computed for an AggregateTask.
func (m *Machine) Aggregated(t *AggregateTask, result Digest, err error) {
	if t.Round != m.cur.round || t.Base != m.st.Model {
		return // a task of a decided round
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
		Aggregator: m.p.Aggregator, Result: result}
	m.propose(e)
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
	need := (len(m.p.Voters) - 1) / 2
	var out []*Message
	for _, a := range m.cur.anns {
		if !m.cur.have[a.Digest] {
			continue
		}
		others := 0
		for h := range m.cur.haves[a.Digest] {
			if _, voter := m.voters[RaftID(identity.PeerID(h))]; voter && h != string(m.self.ID) {
				others++
			}
		}
		if others >= need {
			out = append(out, a)
		}
	}
	sortAnnouncements(out)
	return out
}

// maybeClose is the leader's closing rule for the current round.
func (m *Machine) maybeClose() {
	if !m.IsLeader() || m.leaderTerm != m.term() || m.halted != "" || m.Done() ||
		m.pending != nil || len(m.queue) > 0 || m.cur.aggregating || m.cur.proposed >= 0 {
		return
	}
	sample := m.Sample(m.cur.round)
	target := m.p.Target(len(m.roundMembers))
	inc := m.includable()
	resolved := true
	for _, id := range sample {
		if m.cur.declines[string(id)] {
			continue
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

// Ready returns the work to carry out now.
func (m *Machine) Ready() *Ready {
	rd := m.out
	m.out = Ready{}
	if m.bootSnap != nil {
		rd.Snapshot, m.bootSnap = m.bootSnap, nil
	}
	if m.rn.HasReady() {
		r := m.rn.Ready()
		rd.raft = &r
		if r.HardState != nil && !raft.IsEmptyHardState(r.HardState) {
			rd.HardState = r.HardState
		}
		rd.Entries = r.Entries
		if r.Snapshot != nil && !raft.IsEmptySnap(r.Snapshot) {
			rd.Snapshot = r.Snapshot
			m.installSnapshot(r.Snapshot)
		}
		rd.MustSync = r.MustSync
		rd.Messages = r.Messages
		m.queue = append(m.queue, r.CommittedEntries...)
		if r.SoftState != nil && r.SoftState.RaftState != raft.StateLeader {
			m.leaderTerm = 0
		}
	}
	if rd.Apply == nil {
		rd.Apply = m.nextApply()
	}
	if rd.Train == nil && m.halted == "" && !m.Done() && !m.cur.trained && !m.cur.declined && m.pending == nil &&
		len(m.queue) == 0 && contains(m.Sample(m.cur.round), m.self.ID) {
		m.cur.trained = true
		rd.Train = &TrainTask{Round: m.cur.round, Base: m.st.Model}
	}
	// Work queued while assembling this Ready goes out with it.
	rd.Gossip = append(rd.Gossip, m.out.Gossip...)
	rd.Fetch = append(rd.Fetch, m.out.Fetch...)
	rd.Alarms = append(rd.Alarms, m.out.Alarms...)
	if rd.Aggregate == nil {
		rd.Aggregate = m.out.Aggregate
	}
	if rd.Install == nil {
		rd.Install = m.out.Install
	}
	if rd.Compact == nil {
		rd.Compact = m.out.Compact
	}
	if rd.Sync == 0 {
		rd.Sync = m.out.Sync
	}
	m.out = Ready{}
	return &rd
}

// Advance tells the Machine the Ready was carried out: its Raft state is
// persisted and its messages sent.
func (m *Machine) Advance(rd *Ready) {
	if rd.raft != nil {
		if rd.raft.Snapshot != nil && !raft.IsEmptySnap(rd.raft.Snapshot) {
			_ = m.storage.ApplySnapshot(rd.raft.Snapshot)
		}
		if rd.raft.HardState != nil && !raft.IsEmptyHardState(rd.raft.HardState) {
			_ = m.storage.SetHardState(rd.raft.HardState)
		}
		_ = m.storage.Append(rd.raft.Entries)
		m.rn.Advance(*rd.raft)
	}
	if m.snapDue {
		m.snapDue = false
		m.maybeSnapshot()
	}
}

// nextApply walks the committed queue: stale and invalid entries are
// skipped here; the first valid outcome is handed out as an ApplyTask.
func (m *Machine) nextApply() *ApplyTask {
	for m.pending == nil && len(m.queue) > 0 && m.halted == "" {
		ent := m.queue[0]
		m.queue = m.queue[1:]
		switch ent.GetType() {
		case pb.EntryConfChange, pb.EntryConfChangeV2:
			m.applyConfChange(ent)
			continue
		}
		if ent.GetIndex() <= m.st.Index && ent.GetType() == pb.EntryNormal && len(ent.GetData()) > 0 {
			// Replaying an entry at or below the applied outcome: decided.
			m.roundMembers = slices.Clone(m.members)
			m.cur.sample = nil
			m.cur.sample = m.Sample(m.cur.round)
			continue
		}
		if len(ent.GetData()) == 0 {
			if m.IsLeader() && ent.GetTerm() == m.term() && m.leaderTerm != ent.GetTerm() {
				m.leaderTerm = ent.GetTerm() // our term's empty entry applied: we may propose
				m.cur.ticks, m.cur.proposed = 0, -1
				m.out.Sync = m.cur.round
			}
			continue
		}
		e, err := DecodeEntry(ent.GetData())
		if err == nil {
			err = m.validate(e)
		}
		switch {
		case errors.Is(err, ErrStale):
			if ent.GetIndex() <= m.st.Index {
				// Replaying: a round boundary.
				m.roundMembers = slices.Clone(m.members)
				m.cur.sample = nil
				m.cur.sample = m.Sample(m.cur.round)
			} else {
				m.Counters.StaleEntries++
			}
			continue
		case err != nil:
			m.Counters.InvalidEntries++
			m.invalid(ent, e, err)
			continue
		}
		enc := ent.GetData()
		m.pending = &ApplyTask{Index: ent.GetIndex(), Entry: e, Encoded: enc, Chain: ChainHash(m.st.Chain, enc)}
		return m.pending
	}
	return nil
}

func (m *Machine) invalid(ent *pb.Entry, e *Entry, err error) {
	r := m.st.Round + 1
	if e != nil {
		r = e.Round
	}
	m.alarm("invalid entry %d (term %d) for round %d skipped: %v", ent.GetIndex(), ent.GetTerm(), r, err)
	m.gossip(&Message{Kind: KindInvalid, Round: max(r, 1), Index: ent.GetIndex(), Reason: err.Error()})
	if m.IsLeader() && ent.GetTerm() == m.term() {
		// We proposed an invalid entry: give up leadership.
		m.leaderTerm = 0
		for id := range m.voters {
			if id != m.id {
				m.rn.TransferLeader(id)
				break
			}
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
		if e.Result != e.Base || len(e.Included) > 0 {
			return errors.New("abandon must keep the model and include nothing")
		}
		return nil
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
		// member happened to see (a repeat's unsigned fields may differ).
		if err := a.Verify(m.p.Consortium); err != nil {
			return err
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
	m.pending = nil
	if err == nil && model != t.Entry.Result {
		err = fmt.Errorf("recomputed model %s, entry says %s", model.String()[:12], t.Entry.Result.String()[:12])
	}
	if err != nil {
		m.Counters.InvalidEntries++
		m.invalid(&pb.Entry{Index: proto.Uint64(t.Index)}, t.Entry, err)
		return
	}
	m.st = State{Index: t.Index, Round: t.Entry.Round, Model: model, Chain: t.Chain}
	att := &Message{Kind: KindAttest, Round: m.st.Round, Index: t.Index, Digest: model}
	m.gossip(att)
	if m.isVoter() {
		m.recordAttest(att)
	}
	m.checkAttestations(m.st.Round)
	m.hist = append(m.hist, histEntry{m.st, slices.Clone(m.members)})
	if len(m.hist) > 2*m.p.RetainRounds+2 {
		m.hist = m.hist[1:]
	}
	m.snapDue = true // after Advance: the entry must be in storage first
	m.startRound()
}

// Retry hands a pending ApplyTask out again: the caller could not carry it
// out yet (a blob it names was still being fetched).
func (m *Machine) Retry(t *ApplyTask) {
	if m.pending != nil && m.pending.Index == t.Index {
		m.out.Apply = m.pending
	}
}

// checkAttestations applies the halt rule: a member whose applied digest for
// round r contradicts signed attestations from a majority of voters halts.
func (m *Machine) checkAttestations(r uint64) {
	if r != m.st.Round || m.halted != "" {
		return
	}
	against := 0
	for _, a := range m.attests[r] {
		if a.Digest != m.st.Model {
			against++
		}
	}
	if against > len(m.p.Voters)/2 {
		m.halted = fmt.Sprintf("round %d: applied model %s contradicts %d voters' attestations", r, m.st.Model.String()[:12], against)
		m.alarm("halted: %s", m.halted)
	}
}

func (m *Machine) recordAttest(a *Message) {
	if m.attests[a.Round] == nil {
		m.attests[a.Round] = map[string]*Message{}
	}
	m.attests[a.Round][string(a.Author)] = a
}

type discardLogger struct{}

func (discardLogger) Debug(...interface{})            {}
func (discardLogger) Debugf(string, ...interface{})   {}
func (discardLogger) Error(...interface{})            {}
func (discardLogger) Errorf(string, ...interface{})   {}
func (discardLogger) Info(...interface{})             {}
func (discardLogger) Infof(string, ...interface{})    {}
func (discardLogger) Warning(...interface{})          {}
func (discardLogger) Warningf(string, ...interface{}) {}
func (discardLogger) Fatal(v ...interface{})          { panic(fmt.Sprint(v...)) }
func (discardLogger) Fatalf(f string, v ...interface{}) {
	panic(fmt.Sprintf(f, v...))
}
func (discardLogger) Panic(v ...interface{})            { panic(fmt.Sprint(v...)) }
func (discardLogger) Panicf(f string, v ...interface{}) { panic(fmt.Sprintf(f, v...)) }

func (m *Machine) term() uint64 { return m.rn.BasicStatus().HardState.GetTerm() }

// RoundMessages returns the current round's valid announcements and this
// member's own Haves, for a new leader that asks to catch up at once.
func (m *Machine) RoundMessages() []*Message {
	var out []*Message
	for _, a := range m.cur.anns {
		out = append(out, a)
	}
	sortAnnouncements(out)
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
