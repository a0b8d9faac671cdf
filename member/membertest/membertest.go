// Package membertest builds test clusters the way production builds a
// member (member.Open), over the in-memory network: MakeCluster starts n
// genesis members (and joiners) of a small logistic-regression consortium,
// each with its own store in a temporary directory, and RunUntil ticks
// them until a condition holds. Tests of node, member and the transport
// share it, so what they test is wired as `globalbrain run` wires it.
package membertest

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/member"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/store"
)

// FixedTrainer returns the same small update every round, scaled by
// Scale and the round: fast, deterministic, distinct per member.
type FixedTrainer struct{ Scale float32 }

// Train implements node.Trainer.
func (f FixedTrainer) Train(_ context.Context, r uint64, g *fedavg.Global, _ fedavg.TrainConfig) ([]float32, int64, error) {
	d := make([]float32, len(g.Weights))
	for i := range d {
		d[i] = f.Scale * float32(r) * 1e-4
	}
	return d, 100, nil
}

// Options shape a cluster.
type Options struct {
	Members int // genesis members
	Rounds  int // the manifest's rounds
	Retain  int // retain_rounds, 0 for the default
	// Joiners are members added after genesis (not in the manifest).
	Joiners []identity.Identity
	// Trainers replace member i's FixedTrainer.
	Trainers map[int]node.Trainer
	// Privacy is the manifest's privacy section (defaults applied); zero:
	// mode none.
	Privacy manifest.Privacy
	// Ceilings lower member i's privacy budget (member.Options.EpsilonCeiling).
	Ceilings map[int]float64
	// Rand, if set, makes member i's privacy noise randomness (seeded
	// tests); nil: crypto/rand.
	Rand func(i int) io.Reader
}

// Silent is a trainer that never returns until the member stops: a member
// that is sampled and never announces.
type Silent struct{}

// Train implements node.Trainer.
func (Silent) Train(ctx context.Context, _ uint64, _ *fedavg.Global, _ fedavg.TrainConfig) ([]float32, int64, error) {
	<-ctx.Done()
	return nil, 0, ctx.Err()
}

// Cluster is a running consortium in one process.
type Cluster struct {
	Net      *node.MemNet
	IDs      []identity.Identity
	Manifest *manifest.Manifest
	Members  []*member.Member
	Dirs     []string // each member's store directory

	o       Options
	genesis int
	stops   []func()
}

// MakeCluster starts the cluster; the test's cleanup stops it.
func MakeCluster(t testing.TB, o Options) *Cluster {
	t.Helper()
	c := &Cluster{Net: node.NewMemNet(1), o: o}
	var pids []identity.PeerID
	for i := range o.Members {
		c.IDs = append(c.IDs, identity.Derive(42, i))
		pids = append(pids, c.IDs[i].ID)
	}
	c.Manifest = manifest.Example(pids)
	c.Manifest.Model.Arch = "logreg"
	c.Manifest.Training.Rounds = o.Rounds
	if o.Retain > 0 {
		c.Manifest.Round.RetainRounds = o.Retain
	}
	c.Manifest.Round.Deadline = manifest.Duration(2 * time.Second)
	if o.Privacy.Mode != "" {
		c.Manifest.Privacy = o.Privacy
		if o.Privacy.UsesSecAgg() {
			// Ticks here are as fast as the test loop (2 ms): give each
			// of the four phases 300 ticks, as the round; a phase ends
			// early once its whole set has answered.
			c.Manifest.Round.Deadline = manifest.Duration(30 * time.Second)
			if c.Manifest.Privacy.SecAgg.PhaseDeadline == 0 {
				c.Manifest.Privacy.SecAgg.PhaseDeadline = c.Manifest.Round.Deadline
			}
		}
		c.Manifest.ApplyDefaults()
	}
	if err := c.Manifest.Validate(); err != nil {
		t.Fatal(err)
	}
	c.genesis = len(c.IDs)
	c.IDs = append(c.IDs, o.Joiners...)
	c.Members = make([]*member.Member, len(c.IDs))
	c.stops = make([]func(), len(c.IDs))
	for i := range c.IDs {
		c.Dirs = append(c.Dirs, t.TempDir())
		c.Start(t, i)
	}
	t.Cleanup(func() {
		for i := range c.IDs {
			c.Stop(i)
		}
	})
	return c
}

// Start starts member i from its store directory (again, after Stop).
func (c *Cluster) Start(t testing.TB, i int) {
	t.Helper()
	var tr node.Trainer = FixedTrainer{Scale: float32(i + 1)}
	if c.o.Trainers[i] != nil {
		tr = c.o.Trainers[i]
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := member.Options{
		Identity: c.IDs[i], Manifest: c.Manifest, StoreDir: c.Dirs[i], Store: store.Options{NoSync: true},
		MemNet: c.Net, Trainer: tr, Joining: i >= c.genesis, EpsilonCeiling: c.o.Ceilings[i],
	}
	if c.o.Rand != nil {
		o.Rand = c.o.Rand(i)
	}
	m, err := member.Open(ctx, o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c.Members[i] = m
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	c.stops[i] = func() { cancel(); <-done }
}

// Stop stops member i (its store is closed and kept); idempotent.
func (c *Cluster) Stop(i int) {
	if stop := c.stops[i]; stop != nil {
		c.stops[i] = nil
		stop()
	}
}

// Node returns member i's node.
func (c *Cluster) Node(i int) *node.Node { return c.Members[i].Node() }

// Store returns member i's store.
func (c *Cluster) Store(i int) *store.DB { return c.Members[i].Store() }

// RunUntil ticks every node until cond holds, failing the test after 30 s.
func (c *Cluster) RunUntil(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		for _, m := range c.Members {
			m.Node().Tick()
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// AllApplied reports whether every member applied round r.
func (c *Cluster) AllApplied(r uint64) bool {
	for _, m := range c.Members {
		if m.Node().Status().Applied < r {
			return false
		}
	}
	return true
}
