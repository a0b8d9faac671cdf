// Package roundtest runs a consortium of round.Machines in one process over
// an in-memory network whose delivery order comes from a seeded source, with
// helpers to drop, delay, partition, crash and restart members, and a fake
// trainer (each member moves the model toward a target vector of its own).
// After every step it checks the protocol's invariant: for every round, every
// member that applied the round's outcome applied the same entry and holds
// the same model digest.
//
// The scenarios are data-driven scripts, testdata/*.txt, run by
// InteractionEnv on 20 seeds; go test -rewrite rewrites their golden blocks.
package roundtest

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/round"
)

// Dim is the fake model's parameter count.
const Dim = 16

// Options shape an Env.
type Options struct {
	Members         int
	Voters          int // the first Voters members in index order; the rest are learners
	Fraction        float64
	MinParticipants int
	DeadlineTicks   int
	Strategy        string // fedavg strategy name; "" is fedavg
	RetainRounds    int    // snapshot and compaction interval; 0: never
	Joiners         int    // members beyond Members, not in genesis: they wait to be added
	Seed            uint64
}

// Outcome is what a member applied for a round.
type Outcome struct {
	Index    uint64
	Model    round.Digest
	Chain    round.Digest
	Kind     round.EntryKind
	Included int
}

// Member is one simulated member and what it has persisted.
type Member struct {
	Index     int
	ID        identity.Identity
	M         *round.Machine
	Down      bool
	Silent    bool // never trains nor declines
	Byzantine bool // as leader, proposes commits with a wrong result digest
	Lazy      bool // as leader, stops proposing (raft still heartbeats)
	// IgnoreTransfer drops the leadership transfer requests sent to this
	// member: a leader that will not step aside.
	IgnoreTransfer bool
	Joining        bool // not a genesis member

	// persisted
	hard    *pb.HardState
	snap    *pb.Snapshot
	ents    []*pb.Entry
	applied round.State
	blobs   map[round.Digest][]byte
	History map[uint64]Outcome

	Alarms    []string
	Installed int // snapshots installed
}

type envelope struct {
	from, to int
	raft     *pb.Message
	gossip   *round.Message
}

// Env is a simulated consortium.
type Env struct {
	Members  []*Member
	Params   round.Params
	strategy fedavg.Strategy
	genesis  *fedavg.Global
	rng      *rand.Rand
	inflight []envelope
	cut      map[[2]int]bool
	DropRate float64
	Ticks    int
	// Decided is, per round, the outcome the first member to apply it applied.
	Decided map[uint64]Outcome
	byRaft  map[uint64]int
}

// New builds an Env; every member starts fresh from the same genesis model.
func New(o Options) (*Env, error) {
	if o.Fraction == 0 {
		o.Fraction = 1
	}
	if o.MinParticipants == 0 {
		o.MinParticipants = 1
	}
	if o.DeadlineTicks == 0 {
		o.DeadlineTicks = 40
	}
	if o.Strategy == "" {
		o.Strategy = "fedavg"
	}
	sc := fedavg.DefaultConfig()
	sc.Strategy = o.Strategy
	strategy, err := fedavg.New(sc)
	if err != nil {
		return nil, err
	}
	e := &Env{rng: rand.New(rand.NewPCG(o.Seed, 0x5eed)), cut: map[[2]int]bool{}, strategy: strategy,
		Decided: map[uint64]Outcome{}, byRaft: map[uint64]int{}}
	w := make([]float32, Dim)
	for i := range w {
		w[i] = float32(i) / Dim
	}
	e.genesis = fedavg.NewGlobal(w)
	var ids, voters []identity.PeerID
	for i := range o.Members + o.Joiners {
		id := identity.Derive(o.Seed, i)
		if i < o.Members {
			ids = append(ids, id.ID)
		}
		if i < o.Voters {
			voters = append(voters, id.ID)
		}
		e.Members = append(e.Members, &Member{Index: i, ID: id, blobs: map[round.Digest][]byte{}, History: map[uint64]Outcome{}, Joining: i >= o.Members})
		e.byRaft[round.RaftID(id.ID)] = i
	}
	var cid [32]byte
	binary.BigEndian.PutUint64(cid[:], o.Seed)
	e.Params = round.Params{Consortium: cid, Members: ids, Voters: voters, Fraction: o.Fraction,
		MinParticipants: o.MinParticipants, DeadlineTicks: o.DeadlineTicks, ElectionTicks: 10,
		MaxExamples: 1000, UpdateBytes: 4 * Dim, Aggregator: o.Strategy, RetainRounds: o.RetainRounds}
	for _, m := range e.Members {
		m.blobs[e.genesis.Digest()] = e.genesis.Encode()
		if err := e.start(m); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *Env) start(m *Member) error {
	mc, err := round.New(round.Config{Params: e.Params, Self: m.ID, Genesis: e.genesis.Digest(), Applied: m.applied,
		HardState: m.hard, Snapshot: m.snap, Entries: slices.Clone(m.ents), Joining: m.Joining})
	if err != nil {
		return err
	}
	m.M, m.Down = mc, false
	return nil
}

// Crash stops member i; it keeps only what it persisted.
func (e *Env) Crash(i int) {
	m := e.Members[i]
	m.Down, m.M = true, nil
	e.inflight = slices.DeleteFunc(e.inflight, func(x envelope) bool { return x.to == i || x.from == i })
}

// Restart brings member i back from its persisted state.
func (e *Env) Restart(i int) error { return e.start(e.Members[i]) }

// Cut drops every message from a to b (one way).
func (e *Env) Cut(a, b int) { e.cut[[2]int{a, b}] = true }

// Partition cuts every link between the groups, both ways.
func (e *Env) Partition(groups ...[]int) {
	for gi, g := range groups {
		for gj, h := range groups {
			if gi == gj {
				continue
			}
			for _, a := range g {
				for _, b := range h {
					e.Cut(a, b)
				}
			}
		}
	}
}

// Heal restores every link.
func (e *Env) Heal() { e.cut = map[[2]int]bool{} }

func (e *Env) linked(a, b int) bool {
	return !e.cut[[2]int{a, b}] && !e.Members[a].Down && !e.Members[b].Down
}

func (e *Env) send(env envelope) {
	if !e.linked(env.from, env.to) || (e.DropRate > 0 && e.rng.Float64() < e.DropRate) {
		return
	}
	if env.raft != nil && env.raft.GetType() == pb.MessageType_MsgTransferLeader && e.Members[env.to].IgnoreTransfer {
		return
	}
	e.inflight = append(e.inflight, env)
}

// Leader returns the index of a live member that believes it leads, or -1.
func (e *Env) Leader() int {
	for i, m := range e.Members {
		if !m.Down && m.M.IsLeader() {
			return i
		}
	}
	return -1
}

// Step does one unit of work: it drains every member's Ready, then delivers
// one in-flight message chosen by the seeded source, or, when nothing is in
// flight, ticks every live member. It returns the invariant's verdict.
func (e *Env) Step() error {
	for _, m := range e.Members {
		if err := e.drain(m); err != nil {
			return err
		}
	}
	if len(e.inflight) > 0 {
		i := e.rng.IntN(len(e.inflight))
		env := e.inflight[i]
		e.inflight = slices.Delete(e.inflight, i, i+1)
		to := e.Members[env.to]
		if to.Down {
			return nil
		}
		if env.raft != nil {
			_ = to.M.StepRaft(env.raft)
		} else {
			_ = to.M.Step(env.gossip)
		}
		return e.check()
	}
	e.Ticks++
	for _, m := range e.Members {
		if m.Down {
			continue
		}
		m.M.Tick()
	}
	return e.check()
}

// Run steps until cond holds or maxTicks ticks pass.
func (e *Env) Run(maxTicks int, cond func() bool) error {
	start := e.Ticks
	for !cond() {
		if e.Ticks-start > maxTicks {
			return fmt.Errorf("roundtest: condition not reached in %d ticks", maxTicks)
		}
		if err := e.Step(); err != nil {
			return err
		}
	}
	return nil
}

// RunTicks steps for n ticks.
func (e *Env) RunTicks(n int) error {
	end := e.Ticks + n
	for e.Ticks < end {
		if err := e.Step(); err != nil {
			return err
		}
	}
	return nil
}

// AllApplied reports whether every live member in idx (all if nil) applied round r.
func (e *Env) AllApplied(r uint64, idx ...int) bool {
	if idx == nil {
		for i := range e.Members {
			idx = append(idx, i)
		}
	}
	for _, i := range idx {
		m := e.Members[i]
		if m.Down || m.M.State().Round < r {
			return false
		}
	}
	return true
}

// check is the invariant.
func (e *Env) check() error {
	for _, m := range e.Members {
		for r, o := range m.History {
			d, ok := e.Decided[r]
			if !ok {
				e.Decided[r] = o
				continue
			}
			if d.Index != o.Index || d.Model != o.Model || d.Chain != o.Chain {
				return fmt.Errorf("roundtest: round %d: member %d applied %+v, another applied %+v", r, m.Index, o, d)
			}
		}
	}
	return nil
}

// Target is member i's fake training target.
func Target(i int) []float32 {
	t := make([]float32, Dim)
	for j := range t {
		t[j] = float32((i*7+j*3)%11) / 4
	}
	return t
}

func (e *Env) drain(m *Member) error {
	for !m.Down {
		rd := m.M.Ready()
		if rd.Empty() {
			return nil
		}
		if err := e.handle(m, rd); err != nil {
			return err
		}
	}
	return nil
}

func (e *Env) handle(m *Member, rd *round.Ready) error {
	// 1. persist
	if rd.Snapshot != nil {
		m.snap = rd.Snapshot
		idx := rd.Snapshot.GetMetadata().GetIndex()
		m.ents = slices.DeleteFunc(m.ents, func(x *pb.Entry) bool { return x.GetIndex() <= idx })
	}
	if len(rd.Entries) > 0 {
		first := rd.Entries[0].GetIndex()
		m.ents = slices.DeleteFunc(m.ents, func(x *pb.Entry) bool { return x.GetIndex() >= first })
		m.ents = append(m.ents, rd.Entries...)
	}
	if rd.HardState != nil {
		m.hard = rd.HardState
	}
	// 2. send
	for _, msg := range rd.Messages {
		to, ok := e.byRaft[msg.GetTo()]
		if !ok {
			return fmt.Errorf("roundtest: message to unknown raft ID %x", msg.GetTo())
		}
		e.send(envelope{from: m.Index, to: to, raft: msg})
	}
	for _, g := range rd.Gossip {
		for j := range e.Members {
			if j != m.Index {
				e.send(envelope{from: m.Index, to: j, gossip: g})
			}
		}
	}
	m.Alarms = append(m.Alarms, rd.Alarms...)
	if c := rd.Compact; c != nil {
		m.snap = c.Snapshot
		idx := c.Snapshot.GetMetadata().GetIndex()
		m.ents = slices.DeleteFunc(m.ents, func(x *pb.Entry) bool { return x.GetIndex() <= idx })
	}
	if st := rd.Install; st != nil {
		if !e.fetch(m, st.Model) {
			return fmt.Errorf("roundtest: member %d: installed snapshot's model unreachable", m.Index)
		}
		m.applied = *st
		m.Installed++
		m.History[st.Round] = Outcome{Index: st.Index, Model: st.Model, Chain: st.Chain, Kind: "snapshot"}
	}
	// 3. work
	if t := rd.Train; t != nil && !m.Silent {
		base, err := fedavg.Decode(m.blobs[t.Base])
		if err != nil {
			return fmt.Errorf("roundtest: member %d: base model: %w", m.Index, err)
		}
		tgt := Target(m.Index)
		delta := make([]float32, Dim)
		for j := range delta {
			delta[j] = (tgt[j] - base.Weights[j]) / 2
		}
		b := round.EncodeUpdate(delta)
		d := fedavg.DigestBytes(b)
		m.blobs[d] = b
		m.M.Trained(t.Round, d, int64(len(b)), int64(100+m.Index))
	}
	for _, f := range rd.Fetch {
		if e.fetch(m, f.Digest) {
			m.M.BlobStored(f.Digest)
		} else {
			m.M.FetchFailed(f.Digest)
		}
	}
	if t := rd.Aggregate; t != nil {
		g, err := e.outcome(m, t.Base, t.Round, t.Included)
		d := round.Digest{}
		if err == nil {
			d = g.Digest()
			m.blobs[d] = g.Encode()
			if m.Byzantine {
				d[0] ^= 0xff
			}
		}
		if !m.Lazy {
			m.M.Aggregated(t, d, err)
		}
	}
	if t := rd.Apply; t != nil {
		if err := e.apply(m, t); err != nil {
			return err
		}
	}
	m.M.Advance(rd)
	return nil
}

// fetch copies a blob from any live member linked to m that holds it.
func (e *Env) fetch(m *Member, d round.Digest) bool {
	if _, ok := m.blobs[d]; ok {
		return true
	}
	for _, o := range e.Members {
		if o != m && e.linked(o.Index, m.Index) {
			if b, ok := o.blobs[d]; ok {
				m.blobs[d] = b
				return true
			}
		}
	}
	return false
}

func (e *Env) outcome(m *Member, base round.Digest, r uint64, inc []*round.Message) (*fedavg.Global, error) {
	b, ok := m.blobs[base]
	if !ok {
		return nil, &round.MissingBlobError{Digests: []round.Digest{base}}
	}
	g, err := fedavg.Decode(b)
	if err != nil {
		return nil, err
	}
	return round.Outcome(e.strategy, g, r, inc, e.Params.MaxExamples, func(d round.Digest) ([]byte, bool) {
		if !e.fetch(m, d) {
			return nil, false
		}
		return m.blobs[d], true
	})
}

func (e *Env) apply(m *Member, t *round.ApplyTask) error {
	g, err := e.outcome(m, t.Entry.Base, t.Entry.Round, t.Entry.Included)
	if err != nil {
		// A missing blob goes back to the machine, which fetches it and
		// hands the task out again once it is stored.
		m.M.Applied(t, round.Digest{}, err)
		return nil
	}
	d := g.Digest()
	if d == t.Entry.Result {
		m.blobs[d] = g.Encode()
		m.applied = round.State{Index: t.Index, Round: t.Entry.Round, Model: d, Chain: t.Chain}
		m.History[t.Entry.Round] = Outcome{Index: t.Index, Model: d, Chain: t.Chain, Kind: t.Entry.Kind, Included: len(t.Entry.Included)}
	}
	m.M.Applied(t, d, nil)
	return nil
}

// Genesis is G(0)'s digest.
func (e *Env) Genesis() round.Digest { return e.genesis.Digest() }

// Model returns member i's applied model.
func (e *Env) Model(i int) (*fedavg.Global, error) {
	m := e.Members[i]
	return fedavg.Decode(m.blobs[m.applied.Model])
}
