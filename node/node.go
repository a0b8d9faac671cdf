package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/train"
)

// Network carries a member's traffic. Implementations deliver what arrives
// for the member to the Handler given at Attach and never block it for long.
type Network interface {
	// Publish gossips a small signed message to every member.
	Publish(ctx context.Context, msg []byte) error
	// SendRaft sends an encoded Raft message to one member.
	SendRaft(ctx context.Context, to identity.PeerID, msg []byte) error
	// Fetch obtains a blob by digest from a member that holds it (from is a
	// hint); the caller verifies the hash.
	Fetch(ctx context.Context, from identity.PeerID, d round.Digest) ([]byte, error)
}

// Handler receives a member's incoming traffic.
type Handler interface {
	HandleGossip(from identity.PeerID, msg []byte)
	HandleRaft(from identity.PeerID, msg []byte)
}

// Store is the member's crash-safe storage.
type Store interface {
	PutBlob(data []byte) (store.Digest, error)
	Blob(d store.Digest) ([]byte, error)
	HasBlob(d store.Digest) bool
	SaveRaft(hs *pb.HardState, ents []*pb.Entry, snap *pb.Snapshot) error
	LoadRaft() (*pb.HardState, *pb.Snapshot, []*pb.Entry, error)
	Apply(a store.Applied) error
	LastApplied() (store.Applied, error)
	CompactRaft(index uint64) error
	DeleteBlob(d store.Digest) error
}

var _ Store = (*store.DB)(nil)

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

// Config wires a node.
type Config struct {
	Identity identity.Identity
	Manifest *manifest.Manifest
	Store    Store
	Network  Network
	Trainer  Trainer
	Logger   *slog.Logger
	// OnApply, if set, is called on the loop after each applied outcome.
	OnApply func(Applied)
	// Joining is set for a member added after genesis (by an AddMember
	// entry): it starts from the genesis configuration and catches up
	// through the log or a snapshot once the others add it.
	Joining bool
	// Crash, if set, is called at the loop's crash points; an error stops
	// the loop right there, as a process dying at that instant (tests).
	Crash func(point string) error
}

// maxAlarms bounds the alarms a node keeps for /status.
const maxAlarms = 64

// Crash points of the event loop.
const (
	CrashBeforePersist = "ready.before-persist"
	CrashAfterPersist  = "ready.after-persist"
	CrashAfterPublish  = "ready.after-publish"
	CrashAfterAdvance  = "ready.after-advance"
)

// Node is one member: its round machine and the loop that drives it.
type Node struct {
	cfg      Config
	log      *slog.Logger
	m        *round.Machine
	strategy fedavg.Strategy
	dim      int
	raftPeer atomic.Pointer[map[uint64]identity.PeerID] // Raft node ID -> member, read by the transport

	mu     sync.Mutex
	queue  []func()      // everything that touches m runs on the loop, in order
	wake   chan struct{} // signalled when queue becomes non-empty
	busy   atomic.Int64
	onTick []func() // retries waiting for the next tick
	// blobRound is the round in which this run stored each blob, so blobs
	// older than the retention window are deleted (on the loop only).
	blobRound map[round.Digest]uint64
	tasks     sync.WaitGroup
	model     *fedavg.Global // G(applied round), cached
	apply     *round.ApplyTask
	alarms    []string
	done      chan struct{}
	err       error

	// Read by the transport's goroutines (validators, servers).
	applied  atomic.Uint64                     // last decided round
	members  atomic.Pointer[[]identity.PeerID] // applied membership
	servable sync.Map                          // [32]byte -> struct{}: digests named in valid announcements or entries
	status   atomic.Pointer[Status]
}

// Status is a node's state for operators (/status).
type Status struct {
	Peer     string         `json:"peer"`
	Round    uint64         `json:"round"`
	Phase    string         `json:"phase"`
	Applied  uint64         `json:"applied_round"`
	Model    string         `json:"model_digest"`
	Leader   bool           `json:"leader"`
	LeaderID string         `json:"leader_id,omitempty"`
	Members  int            `json:"members"`
	Halted   string         `json:"halted,omitempty"`
	Alarms   []string       `json:"alarms,omitempty"`
	Counters round.Counters `json:"counters"`
}

// Genesis returns G(0) for a manifest: the model initialised from its seed.
func Genesis(m *manifest.Manifest) (*fedavg.Global, error) {
	mod, err := train.NewModel(ModelSpec(m))
	if err != nil {
		return nil, err
	}
	w := make([]float32, mod.NumParams())
	mod.Init(w, m.Model.InitSeed)
	return fedavg.NewGlobal(w), nil
}

// ModelSpec is the manifest's model.
func ModelSpec(m *manifest.Manifest) train.Spec {
	return train.Spec{Arch: m.Model.Arch, Height: m.Model.Height, Width: m.Model.Width, Channels: m.Model.Channels, Classes: m.Model.Classes}
}

// Params derives the round protocol's parameters from a manifest.
func Params(m *manifest.Manifest, dim int) round.Params {
	return round.Params{
		Consortium: m.ConsortiumID(), Members: m.MemberIDs(), Voters: m.Voters(),
		Fraction: m.Round.Fraction, MinParticipants: m.Round.MinParticipants, OverSelect: m.Round.OverSelect,
		DeadlineTicks: m.DeadlineTicks(), ElectionTicks: m.Round.ElectionTicks,
		MaxExamples: m.Round.MaxExamplesPerMember, UpdateBytes: 4 * int64(dim),
		Aggregator: m.Strategy.Name + "/1", Rounds: uint64(m.Training.Rounds), RetainRounds: m.Round.RetainRounds,
	}
}

// New builds a node from its store: a fresh member starts at genesis, a
// restarted one resumes from what it persisted.
func New(cfg Config) (*Node, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("peer", cfg.Identity.ID.Short())
	strategy, err := fedavg.New(cfg.Manifest.StrategyConfig())
	if err != nil {
		return nil, err
	}
	g0, err := Genesis(cfg.Manifest)
	if err != nil {
		return nil, err
	}
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
	m, err := round.New(round.Config{Params: p, Self: cfg.Identity, Genesis: g0.Digest(), Applied: st,
		HardState: hs, Snapshot: snap, Entries: ents, Joining: cfg.Joining})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, m: m, strategy: strategy, dim: len(g0.Weights),
		wake: make(chan struct{}, 1), done: make(chan struct{}), blobRound: map[round.Digest]uint64{}}
	n.setRaftPeers(p.Members)
	if n.model, err = n.modelOrFetch(context.Background(), m.State().Model); err != nil {
		return nil, fmt.Errorf("node: applied model: %w", err)
	}
	n.servable.Store([32]byte(g0.Digest()), struct{}{})
	n.servable.Store([32]byte(m.State().Model), struct{}{})
	n.publishState()
	return n, nil
}

func (n *Node) loadModel(d round.Digest) (*fedavg.Global, error) {
	if n.model != nil && n.model.Digest() == d {
		return n.model, nil
	}
	b, err := n.cfg.Store.Blob(d)
	if err != nil {
		return nil, err
	}
	return fedavg.Decode(b)
}

// Busy reports how much work is in flight or queued: events not yet
// handled and tasks (training, fetches) not yet finished. A simulator ticks
// only when every node reports 0.
func (n *Node) Busy() int64 { return n.busy.Load() }

// enqueue hands f to the loop. It counts as busy until f has run. The queue
// is not bounded here: the transport bounds what it accepts per peer.
func (n *Node) enqueue(f func()) {
	n.busy.Add(1)
	n.mu.Lock()
	n.queue = append(n.queue, f)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *Node) dequeue() []func() {
	n.mu.Lock()
	defer n.mu.Unlock()
	q := n.queue
	n.queue = nil
	return q
}

// Tick feeds one tick of logical time.
func (n *Node) Tick() {
	n.enqueue(func() {
		n.m.Tick()
		retries := n.onTick
		n.onTick = nil
		for _, f := range retries {
			f()
		}
	})
}

// HandleGossip implements Handler.
func (n *Node) HandleGossip(from identity.PeerID, b []byte) {
	msg, err := round.DecodeMessage(b)
	if err != nil {
		n.log.Debug("gossip rejected", "from", from.Short(), "err", err)
		return
	}
	n.enqueue(func() {
		if err := n.m.Step(msg); err != nil && !errors.Is(err, round.ErrStale) {
			n.log.Debug("gossip rejected", "from", from.Short(), "msg", msg, "err", err)
		} else if err == nil && msg.Kind == round.KindAnnounce {
			n.servable.Store([32]byte(msg.Digest), struct{}{})
		}
	})
}

// HandleRaft implements Handler.
func (n *Node) HandleRaft(from identity.PeerID, b []byte) {
	var msg pb.Message
	if err := proto.Unmarshal(b, &msg); err != nil {
		n.log.Debug("raft message rejected", "from", from.Short(), "err", err)
		return
	}
	if sender := (*n.raftPeer.Load())[msg.GetFrom()]; sender == nil || identity.Compare(sender, from) != 0 {
		n.log.Warn("raft message from a peer that is not its sender", "from", from.Short())
		return
	}
	n.enqueue(func() { _ = n.m.StepRaft(&msg) })
}

// State returns the applied round state (for status; read on the loop).
func (n *Node) State(ctx context.Context) (round.State, error) {
	ch := make(chan round.State, 1)
	n.enqueue(func() { ch <- n.m.State() })
	select {
	case s := <-ch:
		return s, nil
	case <-ctx.Done():
		return round.State{}, ctx.Err()
	case <-n.done:
		return round.State{}, n.err
	}
}

// setRaftPeers maps Raft node IDs to members: the genesis members, then
// every member the log added.
func (n *Node) setRaftPeers(ids []identity.PeerID) {
	m := map[uint64]identity.PeerID{}
	if old := n.raftPeer.Load(); old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	for _, id := range ids {
		m[round.RaftID(id)] = id
	}
	n.raftPeer.Store(&m)
}

// publishState refreshes what the transport's goroutines read. Runs on the loop.
func (n *Node) publishState() {
	st := n.m.Status()
	n.applied.Store(st.Applied.Round)
	if ms := n.members.Load(); ms == nil || len(*ms) != st.Members {
		all := n.m.Members()
		n.members.Store(&all)
		n.setRaftPeers(all)
	}
	n.status.Store(&Status{Peer: n.cfg.Identity.ID.String(), Round: st.Round, Phase: st.Phase, Applied: st.Applied.Round,
		Model: st.Applied.Model.String(), Leader: st.IsLeader, LeaderID: (*n.raftPeer.Load())[st.Leader].String(), Members: st.Members, Halted: st.Halted,
		Alarms: append([]string(nil), n.alarms...), Counters: st.Counters})
}

// Status returns the node's latest state (safe from any goroutine).
func (n *Node) Status() Status { return *n.status.Load() }

// Members returns the applied membership (safe from any goroutine): the
// transport's allow-list.
func (n *Node) Members() []identity.PeerID { return *n.members.Load() }

// Servable reports whether a blob may be served: it is named in a valid
// signed announcement or an applied entry (safe from any goroutine).
func (n *Node) Servable(d [32]byte) bool {
	_, ok := n.servable.Load(d)
	return ok
}

// Gossip verdicts of CheckGossip.
const (
	GossipAccept = iota
	GossipIgnore
	GossipReject
)

// CheckGossip is the transport's validator for a gossiped message whose
// authenticated gossip author is author (safe from any goroutine). It
// returns a verdict and, unless accepted, the reason to count.
func (n *Node) CheckGossip(author identity.PeerID, b []byte) (int, string) {
	msg, err := round.DecodeMessage(b)
	if err != nil {
		return GossipReject, "malformed"
	}
	if identity.Compare(msg.Author, author) != 0 {
		return GossipReject, "author_mismatch"
	}
	ms := n.Members()
	if _, ok := slices.BinarySearchFunc(ms, author, identity.Compare); !ok {
		return GossipReject, "not_member"
	}
	if a := n.applied.Load(); msg.Round+1 < a || msg.Round > a+2 {
		return GossipIgnore, "stale"
	}
	if err := msg.Verify(n.m.Params().Consortium); err != nil {
		return GossipReject, "bad_signature"
	}
	return GossipAccept, ""
}

// Machine exposes the round machine for tests that run the loop themselves.
func (n *Node) Machine() *round.Machine { return n.m }

// Run is the event loop. It returns when ctx ends or a crash point fires.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		close(n.done)
		n.tasks.Wait()
	}()
	if err := n.ready(ctx); err != nil {
		n.err = err
		return err
	}
	for {
		select {
		case <-ctx.Done():
			n.err = ctx.Err()
			return nil
		case <-n.wake:
		}
		for _, f := range n.dequeue() {
			f()
			err := n.ready(ctx)
			n.busy.Add(-1)
			if err != nil {
				n.err = err
				return err
			}
		}
	}
}

func (n *Node) crash(point string) error {
	if n.cfg.Crash == nil {
		return nil
	}
	return n.cfg.Crash(point)
}

// ready carries out the Machine's work in order: persist, publish, tasks.
func (n *Node) ready(ctx context.Context) error {
	for {
		rd := n.m.Ready()
		if rd.Empty() {
			n.publishState()
			return nil
		}
		if err := n.crash(CrashBeforePersist); err != nil {
			return err
		}
		if rd.HardState != nil || len(rd.Entries) > 0 || rd.Snapshot != nil {
			if err := n.cfg.Store.SaveRaft(rd.HardState, rd.Entries, rd.Snapshot); err != nil {
				return fmt.Errorf("node: persist raft state: %w", err)
			}
		}
		if err := n.crash(CrashAfterPersist); err != nil {
			return err
		}
		for _, msg := range rd.Messages {
			to := (*n.raftPeer.Load())[msg.GetTo()]
			b, err := proto.Marshal(msg)
			if err != nil || to == nil {
				continue
			}
			_ = n.cfg.Network.SendRaft(ctx, to, b)
		}
		for _, g := range rd.Gossip {
			_ = n.cfg.Network.Publish(ctx, g.Encode())
		}
		if err := n.crash(CrashAfterPublish); err != nil {
			return err
		}
		for _, a := range rd.Alarms {
			// Keep the latest alarms only: they are copied into every
			// status, and a misbehaving peer can raise one per message.
			n.alarms = append(n.alarms, a)
			if len(n.alarms) > maxAlarms {
				n.alarms = slices.Delete(n.alarms, 0, len(n.alarms)-maxAlarms)
			}
			n.log.Warn("alarm", "round", n.m.State().Round+1, "alarm", a)
		}
		if c := rd.Compact; c != nil {
			if err := n.cfg.Store.SaveRaft(nil, nil, c.Snapshot); err != nil {
				return fmt.Errorf("node: persist snapshot: %w", err)
			}
			if c.CompactTo > 1 {
				if err := n.cfg.Store.CompactRaft(c.CompactTo); err != nil {
					return fmt.Errorf("node: compact log: %w", err)
				}
			}
		}
		if st := rd.Install; st != nil {
			if err := n.install(ctx, st); err != nil {
				return err
			}
		}
		if rd.Train != nil {
			n.train(ctx, rd.Train)
		}
		if rd.Sync != 0 {
			n.sync(ctx, rd.Sync)
		}
		for _, f := range rd.Fetch {
			n.fetch(ctx, f.Digest, f.From, func(err error) {
				if err != nil {
					n.m.FetchFailed(f.Digest)
				} else {
					n.m.BlobStored(f.Digest)
				}
			})
		}
		if rd.Aggregate != nil {
			n.aggregate(ctx, rd.Aggregate)
		}
		if rd.Apply != nil {
			if err := n.applyTask(ctx, rd.Apply); err != nil {
				return err
			}
		}
		n.m.Advance(rd)
		if err := n.crash(CrashAfterAdvance); err != nil {
			return err
		}
	}
}

// async runs work off the loop and hands its result back onto it.
func (n *Node) async(ctx context.Context, work func() func()) {
	n.busy.Add(1)
	n.tasks.Add(1)
	go func() {
		defer n.tasks.Done()
		defer n.busy.Add(-1)
		then := work()
		if then != nil && ctx.Err() == nil {
			n.enqueue(then)
		}
	}()
}

func (n *Node) train(ctx context.Context, t *round.TrainTask) {
	base, err := n.loadModel(t.Base)
	if err != nil {
		n.log.Error("cannot train: base model", "round", t.Round, "err", err)
		n.m.Decline(t.Round)
		return
	}
	cfg := n.strategy.Configure(t.Round, base)
	n.async(ctx, func() func() {
		delta, examples, err := n.cfg.Trainer.Train(ctx, t.Round, base, cfg)
		if err != nil {
			n.log.Error("training failed; declining", "round", t.Round, "err", err)
			return func() { n.m.Decline(t.Round) }
		}
		b := round.EncodeUpdate(delta)
		d, err := n.cfg.Store.PutBlob(b) // persist before publish
		if err != nil {
			n.log.Error("cannot store update; declining", "round", t.Round, "err", err)
			return func() { n.m.Decline(t.Round) }
		}
		n.servable.Store([32]byte(d), struct{}{})
		return func() {
			n.blobRound[d] = t.Round
			n.m.Trained(t.Round, d, int64(len(b)), examples)
		}
	})
}

func (n *Node) fetch(ctx context.Context, d round.Digest, from identity.PeerID, then func(error)) {
	if n.cfg.Store.HasBlob(d) {
		then(nil)
		return
	}
	n.async(ctx, func() func() {
		b, err := n.cfg.Network.Fetch(ctx, from, d)
		if err == nil && fedavg.DigestBytes(b) != d {
			err = fmt.Errorf("node: blob from %s does not match digest %s", from.Short(), d.String()[:12])
		}
		if err == nil {
			_, err = n.cfg.Store.PutBlob(b)
		}
		return func() {
			if err == nil {
				n.blobRound[d] = n.m.State().Round + 1
			}
			then(err)
		}
	})
}

// outcome computes G(r) from the stored blobs, fetching what is missing;
// ok is false while fetches are in flight (the caller is called back).
func (n *Node) outcome(ctx context.Context, base round.Digest, r uint64, inc []*round.Message, retry func()) (*fedavg.Global, bool, error) {
	g, err := n.loadModel(base)
	if err != nil {
		// The base model is missing or unreadable here: a local problem,
		// never a reason to judge the entry. Fetch it and try again on a tick.
		n.log.Warn("base model not readable; fetching it", "round", r, "model", base.String()[:12], "err", err)
		n.fetch(ctx, base, nil, func(error) { n.onTick = append(n.onTick, retry) })
		return nil, false, nil
	}
	next, err := round.Outcome(n.strategy, g, r, inc, n.cfg.Manifest.Round.MaxExamplesPerMember, func(d round.Digest) ([]byte, bool) {
		b, err := n.cfg.Store.Blob(d)
		return b, err == nil
	})
	var missing *round.MissingBlobError
	if errors.As(err, &missing) {
		left := len(missing.Digests)
		for _, d := range missing.Digests {
			from := identity.PeerID(nil)
			for _, a := range inc {
				if a.Digest == d {
					from = a.Author
				}
			}
			n.fetch(ctx, d, from, func(error) {
				// Retry on the next tick either way: a blob that is held but
				// unreadable must not turn this into a loop without ticks.
				if left--; left == 0 {
					n.onTick = append(n.onTick, retry)
				}
			})
		}
		return nil, false, nil
	}
	return next, err == nil, err
}

func (n *Node) aggregate(ctx context.Context, t *round.AggregateTask) {
	g, ok, err := n.outcome(ctx, t.Base, t.Round, t.Included, func() { n.aggregate(ctx, t) })
	if !ok && err == nil {
		return
	}
	var d round.Digest
	if err == nil {
		d = g.Digest()
		if _, err = n.cfg.Store.PutBlob(g.Encode()); err != nil {
			err = fmt.Errorf("node: store model: %w", err)
		}
		n.blobRound[d] = t.Round
		n.servable.Store([32]byte(d), struct{}{})
	}
	n.m.Aggregated(t, d, err)
}

// applyTask recomputes, verifies and persists an outcome: the model blob
// first, then one store transaction, then the Machine hears of it.
func (n *Node) applyTask(ctx context.Context, t *round.ApplyTask) error {
	g, ok, err := n.outcome(ctx, t.Entry.Base, t.Entry.Round, t.Entry.Included, func() { n.m.Retry(t) })
	if !ok && err == nil {
		return nil // members never skip for a missing blob: fetch and retry
	}
	if err != nil {
		n.m.Applied(t, round.Digest{}, err)
		return nil
	}
	d := g.Digest()
	if d != t.Entry.Result {
		n.m.Applied(t, d, nil) // the Machine judges the entry invalid
		return nil
	}
	if _, err := n.cfg.Store.PutBlob(g.Encode()); err != nil {
		return fmt.Errorf("node: store model of round %d: %w", t.Entry.Round, err)
	}
	if err := n.cfg.Store.Apply(store.Applied{Index: t.Index, Round: t.Entry.Round, Model: d, ChainHash: t.Chain, Record: t.Encoded}); err != nil {
		return fmt.Errorf("node: apply round %d: %w", t.Entry.Round, err)
	}
	n.model = g
	n.servable.Store([32]byte(d), struct{}{})
	n.blobRound[d] = t.Entry.Round
	n.m.Applied(t, d, nil)
	n.collectBlobs(t.Entry.Round, d)
	n.log.Info("applied", "round", t.Entry.Round, "kind", t.Entry.Kind, "included", len(t.Entry.Included), "model", d.String()[:12])
	if n.cfg.OnApply != nil {
		n.cfg.OnApply(Applied{Round: t.Entry.Round, Index: t.Index, Entry: t.Entry, Model: g})
	}
	return nil
}

// collectBlobs deletes the blobs this run stored more than twice
// retain_rounds rounds ago (the log behind a snapshot can reach that far
// back, and members catching up through it fetch those blobs); the applied
// model is always kept. Blobs stored before a restart are not tracked and
// stay.
func (n *Node) collectBlobs(applied uint64, model round.Digest) {
	keep := 2*uint64(max(n.cfg.Manifest.Round.RetainRounds, 1)) + 1
	if applied <= keep {
		return
	}
	for d, r := range n.blobRound {
		if r+keep < applied && d != model {
			if err := n.cfg.Store.DeleteBlob(d); err != nil {
				n.log.Warn("delete old blob", "digest", d.String()[:12], "err", err)
				continue
			}
			delete(n.blobRound, d)
			n.servable.Delete([32]byte(d))
		}
	}
}

// install adopts a snapshot's state: the model blob is obtained (from any
// member holding it) and the applied state persisted. It blocks the loop
// for the fetch: installing a snapshot is rare and nothing can proceed
// without the model.
func (n *Node) install(ctx context.Context, st *round.State) error {
	g, err := n.modelOrFetch(ctx, st.Model)
	if err != nil {
		// Nobody reachable holds the model yet: try again on the next tick.
		n.log.Warn("snapshot model not reachable yet", "round", st.Round, "err", err)
		n.onTick = append(n.onTick, func() {
			if err := n.install(ctx, st); err != nil {
				n.log.Error("install snapshot", "round", st.Round, "err", err)
			}
		})
		return nil
	}
	if err := n.cfg.Store.Apply(store.Applied{Index: st.Index, Round: st.Round, Model: st.Model, ChainHash: st.Chain}); err != nil && !errors.Is(err, store.ErrStale) {
		return fmt.Errorf("node: install snapshot of round %d: %w", st.Round, err)
	}
	n.model = g
	n.servable.Store([32]byte(st.Model), struct{}{})
	n.log.Info("installed snapshot", "round", st.Round, "model", st.Model.String()[:12])
	return nil
}

// modelOrFetch loads a model blob, fetching it from any member if missing.
func (n *Node) modelOrFetch(ctx context.Context, d round.Digest) (*fedavg.Global, error) {
	if g, err := n.loadModel(d); err == nil {
		return g, nil
	}
	b, err := n.cfg.Network.Fetch(ctx, nil, d)
	if err != nil {
		return nil, err
	}
	if fedavg.DigestBytes(b) != d {
		return nil, fmt.Errorf("node: model blob does not match digest %s", d.String()[:12])
	}
	if _, err := n.cfg.Store.PutBlob(b); err != nil {
		return nil, err
	}
	return fedavg.Decode(b)
}

// Puller is implemented by networks that can pull a round's current
// announcements from other members (a new leader catching up at once).
type Puller interface {
	Pull(ctx context.Context, round uint64) [][]byte
}

func (n *Node) sync(ctx context.Context, r uint64) {
	p, ok := n.cfg.Network.(Puller)
	if !ok {
		return
	}
	n.async(ctx, func() func() {
		for _, b := range p.Pull(ctx, r) {
			if msg, err := round.DecodeMessage(b); err == nil {
				n.HandleGossip(msg.Author, b)
			}
		}
		return nil
	})
}

// RoundMessages returns the current round's announcements and own Haves,
// encoded, for a new leader's sync (safe from any goroutine: it asks the loop).
func (n *Node) RoundMessages(ctx context.Context, r uint64) [][]byte {
	ch := make(chan [][]byte, 1)
	n.enqueue(func() {
		var out [][]byte
		for _, m := range n.m.RoundMessages() {
			if m.Round == r {
				out = append(out, m.Encode())
			}
		}
		ch <- out
	})
	select {
	case out := <-ch:
		return out
	case <-ctx.Done():
		return nil
	case <-n.done:
		return nil
	}
}

// Alarms returns the alarms raised so far (read on the loop).
func (n *Node) Alarms() []string { return n.alarms }

// ProposeAddMember proposes a signed AddMember request (safe from any
// goroutine). It fails with round.ErrNotLeader on a member that does not
// lead; every member validates the entry when it commits.
func (n *Node) ProposeAddMember(ctx context.Context, req *round.AddMember) error {
	ch := make(chan error, 1)
	n.enqueue(func() { ch <- n.m.ProposeAddMember(req) })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.done:
		return errors.New("node: stopped")
	}
}

// Consortium returns the consortium ID.
func (n *Node) Consortium() [32]byte { return n.m.Params().Consortium }
