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
	// Gate is the gossip gate the member's transport validates with; the
	// Machine keeps its applied round and membership current. Nil: the
	// Machine makes its own.
	Gate *Gate
}

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
	bad         map[string]string              // authors whose update blob failed CheckUpdate, with why
	haveMsgs    map[Digest]map[string]*Message // voters' signed Haves (own included), carried in a Commit
	sa          *saRound                       // secure aggregation's phases (nil: a plain round)
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

	invalidSeen  map[string]uint64 // round of the last Invalid report alarmed, by author (bounded by the membership)
	evidenceSeen map[string]bool   // Evidence.Key of the equivocations handed out (recent rounds)
	skipped      map[uint64]bool   // log indexes of entries this member judged invalid (recent)
	ownAttest    *Message          // this member's attestation of its applied outcome, repeated until a majority agrees
	gate         *Gate
	gateMembers  []identity.PeerID // the membership last handed to the gate
	// wanted are blobs a waiting task needs (an apply, an aggregation, an
	// installed snapshot's model): fetched, and fetched again on a tick
	// after a failure, until stored; then the tasks are handed out again.
	early       map[string][]*Message // verified messages of the next round, by author (keepEarly)
	wanted      map[Digest]*want
	waitApply   bool           // the pending ApplyTask waits for wanted blobs
	waitAgg     *AggregateTask // an AggregateTask waiting for wanted blobs
	waitInstall *State         // an installed snapshot waiting for its model
}

// Counters counts what the Machine refused or skipped.
type Counters struct {
	StaleEntries, InvalidEntries, RejectedMessages, IgnoredMessages, Reproposals uint64
	// ExcludedUpdates counts update blobs that failed CheckUpdate: their
	// authors were left out of the round.
	ExcludedUpdates uint64
	// ForcedCampaigns counts elections this member forced against an idle
	// leader.
	ForcedCampaigns uint64
	// InvalidReports counts other members' signed Invalid reports.
	InvalidReports uint64
	// Equivocations counts members caught announcing two updates for one
	// round (each kept as Evidence).
	Equivocations uint64
	// RaftRefused counts Raft messages refused at the boundary, by reason
	// (raftgate.go).
	RaftRefused map[string]uint64 `json:"raft_refused,omitempty"`
}

// MaxRaftAppendBytes bounds the entries of one Raft append (raft's
// MaxSizePerMsg); the transport's Raft frame cap must leave room for it.
const MaxRaftAppendBytes = 1 << 20

// want is a blob a task needs.
type want struct {
	from     identity.PeerID // a member likely to hold it, nil for any
	inflight bool
	fails    int // fetches that failed; an alarm after a deadline's worth
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
	m.gate = c.Gate
	if m.gate == nil {
		m.gate = NewGate(p.Consortium, p.Members)
	}
	m.wanted = map[Digest]*want{}
	m.invalidSeen = map[string]uint64{}
	m.evidenceSeen = map[string]bool{}
	m.skipped = map[uint64]bool{}
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
			if s, err := DecodeSnapshot(c.Snapshot.GetData()); err == nil {
				// Adopted only if it checks against a majority of voters'
				// signed attestations, like a snapshot raft hands over.
				if verr := m.verifySnapshot(s); verr != nil {
					m.halted = fmt.Sprintf("persisted snapshot of round %d: %v", s.State.Round, verr)
					m.alarm("halted: %s", m.halted)
				} else {
					if s.State.Round > m.st.Round {
						m.st = s.State // installed, but the member stopped before persisting its applied state
					}
					m.snapRound = s.State.Round
					m.members = s.Members
				}
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
		MaxSizePerMsg:             MaxRaftAppendBytes,
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
	m.attest() // a restarted member attests its applied outcome again
	m.gate.pin(c.Genesis)
	m.gate.Serve(m.st.Model)
	m.syncGate()
	return m, nil
}

// Gate returns the member's gossip gate.
func (m *Machine) Gate() *Gate { return m.gate }

// syncGate hands the applied round and membership to the gate, and reports
// a membership change in the Ready.
func (m *Machine) syncGate() {
	m.gate.applied.Store(m.st.Round)
	if v := m.gate.view.Load(); v == nil || v.round != m.cur.round || v.base != m.st.Model {
		sampled := map[string]bool{}
		for _, id := range m.Sample(m.cur.round) {
			sampled[string(id)] = true
		}
		m.gate.setRound(&roundView{round: m.cur.round, base: m.st.Model, sampled: sampled,
			updateBytes: m.p.UpdateBytes, maxExamples: m.p.MaxExamples, secagg: m.secAggOn()})
	}
	for _, e := range m.gate.takeEvidence() {
		m.keepEvidence(e)
	}
	if !slices.EqualFunc(m.gateMembers, m.members, func(a, b identity.PeerID) bool { return identity.Compare(a, b) == 0 }) {
		m.gateMembers = slices.Clone(m.members)
		m.gate.setMembers(m.gateMembers)
		m.out.Members = slices.Clone(m.gateMembers)
	}
}

// Need asks for blob d, which a task needs (from: a member likely to hold
// it, nil for any): it is fetched, and fetched again on each tick after a
// failure, until BlobStored reports it.
func (m *Machine) Need(d Digest, from identity.PeerID) {
	if w, ok := m.wanted[d]; ok {
		if w.from == nil {
			w.from = from
		}
		return
	}
	m.wanted[d] = &want{from: from, inflight: true}
	m.out.Fetch = append(m.out.Fetch, FetchTask{Digest: d, From: from})
}

// needMissing turns a task's missing-blob error into Needs; it reports
// whether err was one.
func (m *Machine) needMissing(err error, inc []*Message, haves ...*Message) bool {
	var missing *MissingBlobError
	if !errors.As(err, &missing) {
		return false
	}
	for _, d := range missing.Digests {
		var from identity.PeerID
		for _, a := range inc {
			if a.Digest == d {
				from = a.Author
			}
		}
		// A voter that signed a Have for it holds it: ask it first, not
		// the author, who may be the one trickling the blob.
		for _, h := range haves {
			if h != nil && h.Digest == d && identity.Compare(h.Author, from) != 0 && identity.Compare(h.Author, m.self.ID) != 0 {
				from = h.Author
				break
			}
		}
		m.Need(d, from)
	}
	return true
}

// wantedStored is called when a blob is stored: once no wanted blob is
// missing, the tasks that waited are handed out again.
func (m *Machine) wantedStored(d Digest) {
	if _, ok := m.wanted[d]; !ok {
		return
	}
	delete(m.wanted, d)
	if len(m.wanted) > 0 {
		return
	}
	m.resumeWaiting()
}

func (m *Machine) resumeWaiting() {
	if sa := m.cur.sa; sa != nil && sa.wait != nil {
		t := sa.wait
		sa.wait = nil
		if t.Round == m.cur.round {
			t.View = m.secAggView()
			m.out.SecAgg = append(m.out.SecAgg, t)
		}
	}
	if m.waitApply && m.pending != nil {
		m.waitApply = false
		m.out.Apply = m.pending
	}
	if t := m.waitAgg; t != nil {
		m.waitAgg = nil
		if t.Round == m.cur.round && t.Base == m.st.Model {
			m.out.Aggregate = t
		} else {
			m.cur.aggregating = false
		}
	}
	if st := m.waitInstall; st != nil {
		m.waitInstall = nil
		m.out.Install = st
	}
}

// retryWanted hands out again, on a tick, the fetches of wanted blobs that
// failed.
func (m *Machine) retryWanted() {
	for _, d := range sortedDigests(m.wanted) {
		if w := m.wanted[d]; !w.inflight {
			w.inflight = true
			m.out.Fetch = append(m.out.Fetch, FetchTask{Digest: d, From: w.from})
		}
	}
}

func sortedDigests(ws map[Digest]*want) []Digest {
	out := make([]Digest, 0, len(ws))
	for d := range ws {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Digest) int { return bytes.Compare(a[:], b[:]) })
	return out
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

// Sample returns sample(r) over the membership at the round's start,
// over-selection included.
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
		declines: map[string]bool{}, fetching: map[Digest]bool{}, have: map[Digest]bool{}, proposed: -1,
		bad: map[string]string{}, haveMsgs: map[Digest]map[string]*Message{}}
	m.roundMembers = slices.Clone(m.members)
	m.cur.sample = m.Sample(r)
	m.startSecAgg()
	m.idleTicks, m.stalls = 0, 0
	if keep := uint64(2*max(m.p.RetainRounds, 1) + 1); r > keep {
		m.gate.prune(r - keep)
	}
	for i := range m.skipped {
		if i+uint64(8*len(m.p.Voters)+64) < m.st.Index {
			delete(m.skipped, i)
		}
	}
	if len(m.evidenceSeen) > 0 {
		m.evidenceSeen = map[string]bool{} // past rounds' announcements are out of the window
	}
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

func (m *Machine) isVoter() bool { _, ok := m.voters[m.id]; return ok }

func (m *Machine) term() uint64 { return m.rn.BasicStatus().HardState.GetTerm() }
