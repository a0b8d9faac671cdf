package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/privacy/secagg"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/wire"
)

// Network carries a member's traffic. What arrives for the member comes out
// of Inbox, a bounded channel the network never blocks on (it drops and
// counts when the node falls behind); gossip on it was judged by the
// member's round.Gate and carries the decoded message.
type Network interface {
	// Publish gossips a small signed message to every member.
	Publish(ctx context.Context, msg []byte) error
	// SendRaft sends an encoded Raft message to one member.
	SendRaft(ctx context.Context, to identity.PeerID, msg []byte) error
	// Fetch obtains a blob by digest from a member that holds it (from is a
	// hint, nil for any); the caller verifies the hash.
	// size > 0 is the blob's signed length: a holder serving another
	// length is refused before the blob is read.
	Fetch(ctx context.Context, from identity.PeerID, d fedavg.Digest, size int64) ([]byte, error)
	// Pull asks other members for their messages of a round (a new leader
	// catching up at once); only messages the gate accepts come back.
	Pull(ctx context.Context, round uint64) []wire.Inbound
	// SetMembers tells the network the applied membership changed: its
	// allow-list becomes ids and former members are disconnected.
	SetMembers(ids []identity.PeerID)
	// Inbox is what arrives for the member.
	Inbox() <-chan wire.Inbound
}

// Store is the member's crash-safe storage.
type Store interface {
	// PutBlob stores data and returns its digest. The store may keep
	// data and hand it to readers: the caller never changes it after.
	PutBlob(data []byte) (fedavg.Digest, error)
	// PutBlobVerified is PutBlob without hashing: the caller has checked
	// that data hashes to d.
	PutBlobVerified(d fedavg.Digest, data []byte) error
	// Blob returns blob d's bytes, verified; they may be shared with
	// other readers: never change them.
	Blob(d fedavg.Digest) ([]byte, error)
	HasBlob(d fedavg.Digest) bool
	DeleteBlob(d fedavg.Digest) error
	// Blobs lists the stored blobs (at start: what a previous run left).
	Blobs() ([]fedavg.Digest, error)
	// Put and List keep small records by bucket (evidence).
	Put(bucket, key string, value []byte) error
	List(bucket string) ([][]byte, error)
	Delete(bucket, key string) error
	SaveRaft(hs *pb.HardState, ents []*pb.Entry, snap *pb.Snapshot) error
	LoadRaft() (*pb.HardState, *pb.Snapshot, []*pb.Entry, error)
	// Apply persists an applied outcome; one at or below the last applied
	// fails with an error wrapping round.ErrStale.
	Apply(a round.Applied) error
	LastApplied() (round.Applied, error)
	CompactRaft(index uint64) error
}

// Trainer trains the member's model for a round from the global model.
type Trainer interface {
	// Train returns the update: the float32 delta (local minus global) and the
	// example count, capped at the manifest's max_examples_per_member.
	Train(ctx context.Context, r uint64, global *fedavg.Global, cfg fedavg.TrainConfig) (delta []float32, examples int64, err error)
}

// Applied is what the node reports after applying a round's outcome.
type Applied struct {
	Round uint64
	Index uint64
	Entry *round.Entry
	Model *fedavg.Global
}

// Config wires a node. Identity, Manifest, Genesis, Gate, Store, Network and
// Trainer are required.
type Config struct {
	Identity identity.Identity
	Manifest *manifest.Manifest
	// Genesis is G(0), the model the manifest initialises (local.Genesis).
	Genesis *fedavg.Global
	// Gate is the member's gossip gate, shared with the network's validator
	// (round.NewGate over the manifest's consortium and members).
	Gate    *round.Gate
	Store   Store
	Network Network
	Trainer Trainer
	Logger  *slog.Logger
	// Board, if set, receives the node's status (a logger or an API built
	// before the node reads it); nil: the node keeps its own.
	Board *Board
	// OnApply, if set, is called on the loop after each applied outcome; it
	// must not block.
	OnApply func(Applied)
	// Joining is set for a member added after genesis (by an AddMember
	// entry): it starts from the genesis configuration and catches up
	// through the log or a snapshot once the others add it.
	Joining bool
	// Crash, if set, is called at the loop's crash points; an error stops
	// the loop right there, as a process dying at that instant (tests).
	Crash func(point string) error
	// EpsilonCeiling is this node's privacy budget under a mode that keeps
	// one (update, dp-sgd): at most the manifest's privacy.dp.epsilon,
	// which 0 (or a higher value) means.
	EpsilonCeiling float64
	// Rand is the randomness of the update mode's noise and of secure
	// aggregation's keys, secrets and nonces; nil: crypto/rand. Tests
	// inject a seeded reader.
	Rand io.Reader
}

// Crash points of the event loop.
const (
	CrashBeforePersist = "ready.before-persist"
	CrashAfterPersist  = "ready.after-persist"
	CrashAfterPublish  = "ready.after-publish"
	CrashAfterAdvance  = "ready.after-advance"
	// CrashSecAgg + a phase name (keys, shares, input, reveal): a
	// participant's phase work is persisted, not yet published.
	CrashSecAgg = "secagg."
)

// Bounds of the loop's inputs.
const (
	tickBuffer    = 128 // ticks not yet handled; more are dropped and counted
	resultBuffer  = 64  // task results; tasks wait for room
	maxAlarms     = 64  // alarms kept for /status
	maxEvidence   = 16  // evidence summaries kept for /status (all of it is in the store)
	fetchParallel = 8   // fetches in flight
)

// Node is one member: its round machine and the loop that drives it.
type Node struct {
	cfg      Config
	log      *slog.Logger
	m        *round.Machine
	strategy fedavg.Strategy
	gate     *round.Gate
	secagg   *round.SecAggParams // nil: plain rounds
	secMu    sync.Mutex          // the private secagg record (tasks run concurrently)
	secCache *secrets            // the current round's record, as persisted; under secMu

	tickc   chan struct{}
	results chan func()
	reqc    chan func()
	done    chan struct{}
	err     error        // why Run returned
	stop    error        // set on the loop by a task whose failure stops it
	busy    atomic.Int64 // inputs being handled and tasks in flight
	tasks   sync.WaitGroup
	fetches chan struct{} // fetch slots

	// Owned by the loop.
	model     *fedavg.Global             // G(applied round), cached
	blobRound map[fedavg.Digest]uint64   // round in which this run stored each blob, for collection
	raftPeer  map[uint64]identity.PeerID // Raft node ID -> member
	alarms    []string
	evidence  []EvidenceSummary // the latest, for status

	ticksLost atomic.Uint64
	board     *Board
	budget    *budget // the privacy budget; nil under a mode that keeps none
}

// Params derives the round protocol's parameters from a manifest.
func Params(m *manifest.Manifest, dim int) round.Params {
	p := round.Params{
		Consortium: m.ConsortiumID(), Members: m.MemberIDs(), Voters: m.Voters(),
		Fraction: m.Round.Fraction, MinParticipants: m.Round.MinParticipants, OverSelect: m.Round.OverSelect,
		DeadlineTicks: m.DeadlineTicks(), ElectionTicks: m.Round.ElectionTicks,
		MaxExamples: m.Round.MaxExamplesPerMember, UpdateBytes: 4 * int64(dim),
		Aggregator: m.Strategy.Name + "/1", Rounds: uint64(m.Training.Rounds), RetainRounds: m.Round.RetainRounds,
	}
	if m.Privacy.UsesSecAgg() {
		p.SecAgg = SecAggParams(m)
	}
	return p
}

// SecAggParams derives secure aggregation's parameters from a manifest
// whose defaults are filled in (manifest.ApplyDefaults, as Parse does).
func SecAggParams(m *manifest.Manifest) *round.SecAggParams {
	s := m.Privacy.SecAgg
	p := &round.SecAggParams{Gamma: s.Gamma, KMin: s.KMin, PhaseTicks: m.PhaseDeadlineTicks()}
	if m.Privacy.Mode == manifest.PrivacyDistributed {
		d := m.Privacy.DistributedNoise(0) // each round's honest count is its own
		p.Distributed = &d
	} else {
		p.Encoding = secagg.Encoding{Clip: s.Clip, Scale: s.Scale, MaxWeight: float64(s.MaxWeight)}
	}
	return p
}

// New builds a node from its store: a fresh member starts at genesis, a
// restarted one resumes from what it persisted. Nothing runs until Run.
func New(cfg Config) (*Node, error) {
	switch {
	case cfg.Manifest == nil || cfg.Genesis == nil || cfg.Gate == nil || cfg.Store == nil || cfg.Network == nil || cfg.Trainer == nil:
		return nil, errors.New("node: Config needs Manifest, Genesis, Gate, Store, Network and Trainer")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("peer", cfg.Identity.ID.Short())
	strategy, err := fedavg.New(cfg.Manifest.StrategyConfig())
	if err != nil {
		return nil, err
	}
	g0 := cfg.Genesis
	if _, err := cfg.Store.PutBlob(g0.Encode()); err != nil {
		return nil, fmt.Errorf("node: store genesis model: %w", err)
	}
	hs, snap, ents, err := cfg.Store.LoadRaft()
	if err != nil {
		return nil, err
	}
	if hs != nil && raft.IsEmptyHardState(hs) {
		hs = nil
	}
	if snap != nil && raft.IsEmptySnap(snap) {
		snap = nil
	}
	last, err := cfg.Store.LastApplied()
	if err != nil {
		return nil, err
	}
	st := round.State{Index: last.Index, Round: last.Round, Model: last.Model, Chain: last.ChainHash}
	if last.Index == 0 && (hs != nil || snap != nil || len(ents) > 0) {
		st = round.State{Index: 1, Model: g0.Digest()} // persisted the bootstrap, applied nothing yet
	}
	p := Params(cfg.Manifest, len(g0.Weights))
	m, err := round.New(round.Config{Params: p, Self: cfg.Identity, Genesis: g0.Digest(), Applied: st, Gate: cfg.Gate,
		HardState: hs, Snapshot: snap, Entries: ents, Joining: cfg.Joining})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, m: m, strategy: strategy, gate: cfg.Gate, secagg: p.SecAgg,
		tickc: make(chan struct{}, tickBuffer), results: make(chan func(), resultBuffer), reqc: make(chan func()),
		done: make(chan struct{}), fetches: make(chan struct{}, fetchParallel),
		blobRound: map[fedavg.Digest]uint64{}, raftPeer: map[uint64]identity.PeerID{}, board: cfg.Board}
	if n.board == nil {
		n.board = new(Board)
	}
	if n.budget, err = newBudget(cfg.Manifest, cfg.EpsilonCeiling, cfg.Store, cfg.Rand, len(g0.Weights)); err != nil {
		return nil, err
	}
	if cfg.Manifest.Privacy.Mode == manifest.PrivacyDPSGD {
		if _, ok := cfg.Trainer.(DPSGDTrainer); !ok {
			return nil, errors.New("node: privacy.mode dp-sgd needs a DP-SGD trainer (node.DPSGDTrainer)")
		}
	}
	n.setRaftPeers(p.Members)
	n.setRaftPeers(m.Members())
	n.wipeSecrets(last.Round) // a record of a decided round is wiped, even after a crash
	// Blobs a previous run stored are collected like this run's once the
	// window passes (raw updates must not stay on disk for ever); the
	// genesis model is kept.
	held, err := cfg.Store.Blobs()
	if err != nil {
		return nil, fmt.Errorf("node: list blobs: %w", err)
	}
	for _, d := range held {
		if d != g0.Digest() {
			n.blobRound[d] = m.State().Round
		}
	}
	kept, err := cfg.Store.List(evidenceBucket)
	if err != nil {
		return nil, fmt.Errorf("node: evidence: %w", err)
	}
	for _, b := range kept {
		if e, err := round.DecodeEvidence(b); err == nil {
			n.noteEvidence(e)
		}
	}
	if d := m.State().Model; !cfg.Store.HasBlob(d) {
		// Killed after adopting a snapshot and before storing its model:
		// the machine fetches it before anything needs it.
		m.Need(d, nil)
	}
	n.publishState()
	return n, nil
}

// Gate returns the member's gossip gate.
func (n *Node) Gate() *round.Gate { return n.gate }

// Consortium returns the consortium ID.
func (n *Node) Consortium() [32]byte { return n.m.Params().Consortium }

// Busy reports how much work is queued or in flight: inputs not yet handled
// and tasks (training, fetches, aggregation) not yet finished. A simulator
// ticks only when every node reports 0.
func (n *Node) Busy() int64 {
	return n.busy.Load() + int64(len(n.tickc)+len(n.results)+len(n.cfg.Network.Inbox()))
}

// Tick feeds one tick of logical time. It never blocks: a tick that finds
// the buffer full is dropped and counted (the loop is far behind).
func (n *Node) Tick() {
	select {
	case n.tickc <- struct{}{}:
	default:
		if n.ticksLost.Add(1)%tickBuffer == 1 {
			n.log.Warn("a tick missed to fire: the event loop is behind", "missed", n.ticksLost.Load())
		}
	}
}

// do runs f on the loop and waits for it (operator requests; rare).
func (n *Node) do(f func()) bool {
	ran := make(chan struct{})
	select {
	case n.reqc <- func() { f(); close(ran) }:
	case <-n.done:
		return false
	}
	select {
	case <-ran:
		return true
	case <-n.done:
		return false
	}
}

// ProposeAddMember proposes a signed AddMember request (safe from any
// goroutine). It fails with round.ErrNotLeader on a member that does not
// lead; every member validates the entry when it commits.
func (n *Node) ProposeAddMember(ctx context.Context, req *round.AddMember) error {
	ch := make(chan error, 1)
	select {
	case n.reqc <- func() { ch <- n.m.ProposeAddMember(req) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.done:
		return errors.New("node: stopped")
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.done:
		return errors.New("node: stopped")
	}
}

// Members returns the applied membership (safe from any goroutine).
func (n *Node) Members() []identity.PeerID { return n.gate.Members() }

// Servable reports whether a blob may be served (safe from any goroutine).
func (n *Node) Servable(d [32]byte) bool { return n.gate.Servable(d) }

// setRaftPeers adds members to the Raft node ID -> member map (on the loop
// once Run started).
func (n *Node) setRaftPeers(ids []identity.PeerID) {
	for _, id := range ids {
		n.raftPeer[round.RaftID(id)] = id
	}
}
