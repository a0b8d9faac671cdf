package sim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/member"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/local"
)

// Faults are injected into a simulation through the nodes.
type Faults struct {
	Drop        float64      // fraction of gossip and Raft messages dropped
	Crashes     []Crash      // members crashed and restarted
	Partitions  []Partition  // members cut off for a while
	CrashPoints []CrashPoint // members killed at an instant inside the node or its store
}

// CrashPoint kills Member at the Hit-th time (from 1) its node or store
// reaches the named crash point (node.Crash*, store.Crash*), exactly as a
// process dying there, and restarts it from its store DownTicks later.
type CrashPoint struct {
	Member    int
	Point     string
	Hit       int
	DownTicks int
}

// errCrash is what a crash point returns when it fires.
var errCrash = errors.New("sim: crashed at a crash point")

// Crash kills Member (all its volatile state) once the consortium has
// decided round Round, and restarts it from its store DownTicks later.
type Crash struct {
	Member    int
	Round     uint64
	DownTicks int
}

// Partition cuts Members off from the rest once round Round is decided,
// for Ticks ticks.
type Partition struct {
	Members []int
	Round   uint64
	Ticks   int
}

// simNode is one member of a node-based simulation.
type simNode struct {
	idx     int
	id      identity.Identity
	dir     string
	m       *member.Member
	n       *node.Node
	cancel  context.CancelFunc
	done    chan error
	applied atomic.Uint64
	live    atomic.Pointer[node.Node] // the node, read by other goroutines (its privacy budget)
	down    bool
	crashed atomic.Bool
	port    int       // libp2p: the member's fixed loopback port
	host    *p2p.Host // libp2p: the member's host while it runs
	hits    map[string]int
	points  []CrashPoint // crash points of this member not yet fired
	mu      sync.Mutex
}

// crashHook fires the member's crash points: the member leaves the network
// at once (a dead process sends nothing) and its loop stops.
func (s *nodeSim) crashHook(sn *simNode) func(string) error {
	return func(point string) error {
		sn.mu.Lock()
		defer sn.mu.Unlock()
		if sn.crashed.Load() {
			return errCrash
		}
		sn.hits[point]++
		for i, cp := range sn.points {
			if cp.Point == point && cp.Hit == sn.hits[point] {
				sn.points = append(sn.points[:i], sn.points[i+1:]...)
				s.fired.Add(1)
				sn.crashed.Store(true)
				s.net.Leave(sn.id.ID)
				if sn.host != nil {
					go sn.host.Close() // a dead process's connections drop
				}
				sn.cancel()
				s.crashDown(sn, cp.DownTicks)
				return errCrash
			}
		}
		return nil
	}
}

// RunNodes simulates the consortium with every member a full node (round
// machine, Raft, a store in a temporary directory) over an in-memory
// network. Time is virtual: the simulator ticks only when every node is
// idle, so a fault-free run depends on the seed alone.
func RunNodes(ctx context.Context, c Config, data Data, f Faults, obs Observer) (*Result, error) {
	return runNodes(ctx, c, data, f, obs, nodeOptions{})
}

// RunLibp2p is RunNodes over real libp2p hosts on 127.0.0.1: the gater,
// gossipsub and the stream protocols are all in play, and time is real (one
// tick is the manifest's tick), so only crashes can be injected.
func RunLibp2p(ctx context.Context, c Config, data Data, f Faults, obs Observer) (*Result, error) {
	return runNodes(ctx, c, data, f, obs, nodeOptions{libp2p: true})
}

// nodeOptions replace parts of a node-based simulation (benchmarks).
type nodeOptions struct {
	trainer func(Member) node.Trainer  // nil: train on the member's partition
	store   func(*store.DB) node.Store // nil: the store itself
	noEval  bool                       // skip the per-round evaluation
	libp2p  bool                       // real libp2p hosts on 127.0.0.1, ticks in real time
	// manifest, if set, edits the genesis manifest before any member
	// starts (the privacy mode, the deadlines); it is validated again.
	manifest func(*manifest.Manifest)
}

func runNodes(ctx context.Context, c Config, data Data, f Faults, obs Observer, opts nodeOptions) (*Result, error) {
	start := time.Now()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	members, err := Members(c, data.Train)
	if err != nil {
		return nil, err
	}
	man, err := c.Manifest(members, data.Train)
	if err != nil {
		return nil, err
	}
	if opts.manifest != nil {
		opts.manifest(man)
		if err := man.Validate(); err != nil {
			return nil, err
		}
	}
	spec := ModelSpec(c, data.Train)
	pool := make(chan *train.Model, max(c.Workers, 1))
	for range cap(pool) {
		m, err := train.NewModel(spec)
		if err != nil {
			return nil, err
		}
		pool <- m
	}
	tmp, err := os.MkdirTemp("", "globalbrain-sim-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	g0, err := local.Genesis(spec, c.Seed)
	if err != nil {
		return nil, err
	}
	s := &nodeSim{opts: opts, c: c, data: data, man: man, net: node.NewMemNet(c.Seed), pool: pool, losses: &sync.Map{},
		res: &Result{Config: c}, obs: obs, decided: map[uint64]bool{}, last: time.Now(), genesis: g0}
	s.net.SetDropRate(f.Drop)
	if opts.libp2p && (f.Drop > 0 || len(f.Partitions) > 0) {
		return nil, fmt.Errorf("sim: -drop and -cut need the in-memory network")
	}
	defer s.stopAll()
	for i, m := range members {
		s.nodes = append(s.nodes, &simNode{idx: i, id: m.Identity, dir: filepath.Join(tmp, fmt.Sprint(i))})
	}
	if opts.libp2p {
		if err := s.assignPorts(); err != nil {
			return nil, err
		}
	}
	for i := range members {
		sn := s.nodes[i]
		for _, cp := range f.CrashPoints {
			if cp.Member == i {
				sn.points = append(sn.points, cp)
			}
		}
		if err := s.startNode(ctx, sn, members); err != nil {
			return nil, err
		}
	}
	if err := s.drive(ctx, f, members); err != nil {
		return nil, err
	}
	if opts.libp2p {
		// libp2p's bandwidth meters fold in their counts once a second:
		// let them, so Traffic covers the whole run.
		time.Sleep(1200 * time.Millisecond)
	}
	s.stopAll()
	// Compare every member's model of the goal round: with StopAtTarget
	// some members may already have applied a round or two beyond it.
	goal := s.goal()
	var final *fedavg.Global
	for _, sn := range s.nodes {
		db, err := store.Open(sn.dir, store.Options{NoSync: true})
		if err != nil {
			return nil, err
		}
		last, err := db.LastApplied()
		if err == nil && last.Round > goal {
			last, err = db.Outcome(goal)
		}
		var b []byte
		if err == nil {
			b, err = db.Blob(last.Model)
		}
		db.Close()
		if err != nil {
			return nil, fmt.Errorf("member %d: %w", sn.idx, err)
		}
		g, err := fedavg.Decode(b)
		if err != nil {
			return nil, err
		}
		if final != nil && g.Digest() != final.Digest() {
			return nil, fmt.Errorf("sim: members diverged: member %d holds %s, member 0 %s", sn.idx, g.Digest(), final.Digest())
		}
		final = g
	}
	s.res.Final = final
	s.res.Elapsed = time.Since(start)
	s.res.Traffic = s.traffic
	s.res.CrashPointsFired = int(s.fired.Load())
	s.mu.Lock()
	s.notePrivacy()
	s.mu.Unlock()
	return s.res, nil
}

type nodeSim struct {
	opts   nodeOptions
	c      Config
	data   Data
	man    *manifest.Manifest
	net    *node.MemNet
	pool   chan *train.Model
	losses *sync.Map
	nodes  []*simNode
	obs    Observer
	// genesis is G(0) of the simulation's model and seed.
	genesis *fedavg.Global

	restarts []restart              // crashed at a crash point, to restart
	traffic  map[string]p2p.Traffic // libp2p: bytes by protocol, summed over closed hosts
	fired    atomic.Int64           // crash points that fired

	mu      sync.Mutex
	res     *Result
	decided map[uint64]bool
	last    time.Time
	err     error
}

func (s *nodeSim) startNode(ctx context.Context, sn *simNode, members []Member) error {
	if sn.hits == nil {
		sn.hits = map[string]int{}
	}
	ctx, cancel := context.WithCancel(ctx)
	sn.cancel = cancel
	sn.crashed.Store(false)
	mb := members[sn.idx]
	var tr node.Trainer = &local.Trainer{Data: s.data.Train, Part: mb.Partition, ID: mb.Identity.ID, Seed: s.c.Seed,
		Cap: s.man.Round.MaxExamplesPerMember, Models: s.pool,
		Observe: func(r uint64, _ fedavg.Update, st train.TrainStats, _ time.Duration) {
			s.losses.Store([2]uint64{r, uint64(mb.Index)}, st.Loss)
		}}
	if s.opts.trainer != nil {
		tr = s.opts.trainer(mb)
	}
	o := member.Options{
		Identity: sn.id, Manifest: s.man, Genesis: s.genesis, StoreDir: sn.dir, Store: store.Options{NoSync: true},
		WrapStore: s.opts.store, Trainer: tr, Crash: s.crashHook(sn),
		OnApply: func(a node.Applied) {
			sn.applied.Store(a.Round)
			s.onApply(a)
		},
	}
	if s.opts.libp2p {
		o.Libp2p = s.libp2pConfig(sn)
	} else {
		o.MemNet = s.net
	}
	m, err := member.Open(ctx, o)
	if err != nil {
		return fmt.Errorf("sim: member %d: %w", sn.idx, err)
	}
	sn.mu.Lock()
	sn.host = m.Host()
	sn.mu.Unlock()
	sn.m, sn.n, sn.done, sn.down = m, m.Node(), make(chan error, 1), false
	sn.live.Store(sn.n)
	sn.applied.Store(sn.n.Status().Applied) // a restarted member resumes where its store is
	go func() { sn.done <- m.Run(ctx) }()
	return nil
}

func (s *nodeSim) stopNode(sn *simNode) {
	if sn.down || sn.n == nil {
		return
	}
	s.net.Leave(sn.id.ID)
	sn.cancel()
	<-sn.done
	s.closeHost(sn)
	sn.down = true
}

func (s *nodeSim) closeHost(sn *simNode) {
	sn.mu.Lock()
	h := sn.host
	sn.host = nil
	sn.mu.Unlock()
	if h != nil {
		s.mu.Lock()
		if s.traffic == nil {
			s.traffic = map[string]p2p.Traffic{}
		}
		for k, v := range h.Traffic() {
			t := s.traffic[k]
			t.In += v.In
			t.Out += v.Out
			s.traffic[k] = t
		}
		s.mu.Unlock()
		h.Close()
	}
}

func (s *nodeSim) stopAll() {
	for _, sn := range s.nodes {
		s.stopNode(sn)
	}
}

// onApply records a round the first time any member applies it.
func (s *nodeSim) onApply(a node.Applied) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.decided[a.Round] || s.err != nil || (s.c.StopAtTarget && s.res.TargetRound > 0) {
		// Rounds past the target are only the members finishing up: the
		// report ends at the target round, as the direct loop's does.
		return
	}
	s.decided[a.Round] = true
	// The budgets are read first, before anyone can train the next round.
	s.notePrivacy()
	rr := RoundResult{Round: int(a.Round), Participants: len(a.Entry.Included), Sampled: s.c.SampleSize(),
		NewModel: len(a.Entry.Included) > 0, Digest: a.Model.Digest().String()}
	var lossSum, weights float64
	for _, inc := range a.Entry.Included {
		rr.Examples += inc.Examples
		// A masked input (secure aggregation) names no example count:
		// its member's loss counts once.
		w := float64(max(inc.Examples, 1))
		for i, sn := range s.nodes {
			if identity.Compare(sn.id.ID, inc.Author) == 0 {
				if l, ok := s.losses.Load([2]uint64{a.Round, uint64(i)}); ok {
					lossSum += l.(float64) * w
					weights += w
				}
			}
		}
	}
	rr.TrainLoss = lossSum / max(weights, 1)
	var met train.Metrics
	if !s.opts.noEval {
		model := <-s.pool
		var err error
		met, err = model.Evaluate(a.Model.Weights, s.data.Test)
		s.pool <- model
		if err != nil {
			s.err = err
			return
		}
	}
	rr.TestLoss, rr.TestAccuracy = met.Loss, met.Accuracy
	if p := s.res.Privacy; p != nil {
		rr.Epsilon, rr.Exhausted = p.Epsilon, len(p.Exhausted)
	}
	now := time.Now()
	rr.Seconds = now.Sub(s.last).Seconds()
	s.last = now
	s.res.Rounds = append(s.res.Rounds, rr)
	s.res.Metrics = met
	if s.res.TargetRound == 0 && met.Accuracy >= s.c.Target {
		s.res.TargetRound = int(a.Round)
	}
	if s.obs.Round != nil {
		s.obs.Round(rr)
	}
}

// notePrivacy folds the members' privacy budgets into the result: the
// largest epsilon spent, and the members newly past their ceiling. Under
// s.mu.
func (s *nodeSim) notePrivacy() {
	for _, sn := range s.nodes {
		n := sn.live.Load()
		if n == nil {
			continue
		}
		st := n.Privacy()
		if st == nil {
			continue
		}
		p := s.res.Privacy
		if p == nil {
			p = &PrivacyResult{Mode: st.Mode, Delta: st.Delta, Ceiling: st.Ceiling}
			s.res.Privacy = p
		}
		p.Epsilon = max(p.Epsilon, st.Spent)
		p.Ceiling = max(p.Ceiling, st.Ceiling)
		if st.Exhausted && !slices.ContainsFunc(p.Exhausted, func(b MemberBudget) bool { return b.Member == sn.idx }) {
			b := MemberBudget{Member: sn.idx, Round: st.FirstDeclined, Spent: st.Spent}
			p.Exhausted = append(p.Exhausted, b)
			if s.obs.Exhausted != nil {
				s.obs.Exhausted(b)
			}
		}
	}
}

type restart struct {
	sn    *simNode
	ticks int
}

// crashDown schedules a member that died at a crash point for restart.
func (s *nodeSim) crashDown(sn *simNode, ticks int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restarts = append(s.restarts, restart{sn, ticks})
}

// goal is the round every live member must reach.
func (s *nodeSim) goal() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c.StopAtTarget && s.res.TargetRound > 0 {
		return uint64(s.res.TargetRound)
	}
	return uint64(s.c.Rounds)
}

func (s *nodeSim) maxDecided() uint64 {
	var r uint64
	for _, sn := range s.nodes {
		r = max(r, sn.applied.Load())
	}
	return r
}

// drive is the virtual clock: wait until every live node is idle, then tick
// them all; inject the faults when their round comes.
func (s *nodeSim) drive(ctx context.Context, f Faults, members []Member) error {
	type pending struct {
		at  int
		run func() error
	}
	var later []pending
	crashed := make([]bool, len(f.Crashes))
	cut := make([]bool, len(f.Partitions))
	limit := 200 * s.man.DeadlineTicks() * max(s.c.Rounds, 1)
	for ticks := 0; ; ticks++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.mu.Lock()
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return err
		}
		if s.opts.libp2p {
			// Real network: messages in flight are invisible to the
			// simulator, so time is real; a tick is the manifest's tick.
			if err := s.checkStopped(); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(s.man.Round.Tick)):
			}
		} else if err := s.waitIdle(ctx); err != nil {
			return err
		}
		s.mu.Lock()
		for _, r := range s.restarts {
			sn := r.sn
			later = append(later, pending{ticks + r.ticks, func() error { return s.startNode(ctx, sn, members) }})
		}
		s.restarts = nil
		s.mu.Unlock()
		goal := s.goal()
		done := len(later) == 0
		for _, sn := range s.nodes {
			if !sn.down && sn.applied.Load() < goal {
				done = false
			}
		}
		if done {
			return nil
		}
		if ticks > limit {
			return fmt.Errorf("sim: no progress after %d ticks (decided %d of %d rounds)", ticks, s.maxDecided(), goal)
		}
		decided := s.maxDecided()
		for i, cr := range f.Crashes {
			if !crashed[i] && decided >= cr.Round && cr.Member < len(s.nodes) {
				crashed[i] = true
				sn := s.nodes[cr.Member]
				s.stopNode(sn)
				later = append(later, pending{ticks + cr.DownTicks, func() error { return s.startNode(ctx, sn, members) }})
			}
		}
		for i, p := range f.Partitions {
			if !cut[i] && decided >= p.Round {
				cut[i] = true
				var in, out []identity.PeerID
				for j, sn := range s.nodes {
					if containsInt(p.Members, j) {
						in = append(in, sn.id.ID)
					} else {
						out = append(out, sn.id.ID)
					}
				}
				s.net.Partition(in, out)
				later = append(later, pending{ticks + p.Ticks, func() error { s.net.Heal(); return nil }})
			}
		}
		for i := 0; i < len(later); i++ {
			if later[i].at <= ticks {
				if err := later[i].run(); err != nil {
					return err
				}
				later = append(later[:i], later[i+1:]...)
				i--
			}
		}
		for _, sn := range s.nodes {
			if !sn.down {
				sn.n.Tick()
			}
		}
	}
}

func containsInt(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// checkStopped reports a member whose loop stopped without being crashed on purpose.
func (s *nodeSim) checkStopped() error {
	for _, sn := range s.nodes {
		if sn.down {
			continue
		}
		select {
		case err := <-sn.done:
			if !sn.crashed.Load() {
				return fmt.Errorf("sim: member %d stopped: %v", sn.idx, err)
			}
			s.closeHost(sn)
			sn.down = true
		default:
		}
	}
	return nil
}

// waitIdle returns once no live node has work in flight.
func (s *nodeSim) waitIdle(ctx context.Context) error {
	idle := 0
	for spins := 0; ; spins++ {
		busy := false
		for _, sn := range s.nodes {
			if !sn.down && !sn.crashed.Load() && sn.n.Busy() > 0 {
				busy = true
				break
			}
			if sn.down {
				continue
			}
			select {
			case err := <-sn.done:
				if !sn.crashed.Load() {
					return fmt.Errorf("sim: member %d stopped: %v", sn.idx, err)
				}
				s.closeHost(sn)
				sn.down = true
			default:
				if sn.crashed.Load() {
					busy = true // wait for the crashed loop to stop
				}
			}
		}
		if !busy {
			// An input taken off a channel is counted busy a moment
			// later: idle counts only when seen twice in a row.
			if idle++; idle >= 2 {
				return nil
			}
			runtime.Gosched()
			continue
		}
		idle = 0
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if spins < 100 {
			continue
		}
		time.Sleep(50 * time.Microsecond)
	}
}
