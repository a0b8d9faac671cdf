package sim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/local"
)

// RoundCost is what one round of the protocol costs each member, measured
// with a trainer that returns a fixed update at once, every member a full
// node over the in-memory network.
type RoundCost struct {
	Mode         string // manifest.PrivacyNone or manifest.PrivacySecAgg
	Members      int    // all sampled (fraction 1)
	Rounds       int    // run; the first (start-up, election) is not timed
	Participants float64
	// Seconds per round in steady state, from the moment the last member
	// applied round r-1 to the moment the last member applied round r.
	Seconds float64
	// Per member and round, averaged over members and all rounds: bytes of
	// the blobs the member published itself (its update, or its share,
	// masked-input and reveal blobs), of the blobs it fetched from others
	// (models excluded: each member computes them), and of what it wrote
	// to its Raft log (entries, hard state, snapshots).
	PublishedBytes, FetchedBytes, RaftBytes float64
	UpdateBytes                             int // one plain update, 4*dim
}

// MeasureRound runs members full nodes, all sampled each round, for rounds
// rounds of arch with a fixed update, under privacy mode (PrivacyNone or
// PrivacySecAgg), and returns the cost per round. The round deadline and
// secagg's phase deadline are generous: a phase closes as soon as its whole
// set has answered, so with no dropout the deadlines never fire and the
// figure is the protocol's own work.
func MeasureRound(ctx context.Context, arch string, members, rounds int, mode string) (RoundCost, error) {
	return measureRound(ctx, arch, members, rounds, mode, benchDeadline)
}

// benchDeadline is the round deadline (and secagg's phase deadline) of
// MeasureRound, in virtual time: never reached without a dropout.
const benchDeadline = SimDeadline

func measureRound(ctx context.Context, arch string, members, rounds int, mode string, deadline time.Duration) (RoundCost, error) {
	if rounds < 2 {
		return RoundCost{}, fmt.Errorf("sim: MeasureRound needs >= 2 rounds (the first is not timed)")
	}
	c := DefaultConfig()
	c.Members, c.Fraction, c.Rounds, c.Model, c.Workers = members, 1, rounds, arch, 1
	d := &train.Dataset{Name: "shape-only", N: members * 10, Dim: 784, Height: 28, Width: 28, Channels: 1, Classes: 10}
	d.X, d.Y = make([]float32, d.N*d.Dim), make([]uint8, d.N)
	for i := range d.Y {
		d.Y[i] = uint8(i % 10)
	}
	g, err := local.Genesis(ModelSpec(c, d), c.Seed)
	if err != nil {
		return RoundCost{}, err
	}
	cs := &roundCounters{held: map[fedavg.Digest]bool{}}
	opts := nodeOptions{
		trainer: func(m Member) node.Trainer {
			return fixedTrainer{member: m.Index, dim: len(g.Weights), examples: int64(len(m.Partition))}
		},
		store:  cs.wrap,
		noEval: true,
	}
	edit := func(m *manifest.Manifest) {
		// Generous deadlines, in virtual ticks: phases and rounds close
		// when everyone has answered, never on the clock.
		m.Round.Deadline = manifest.Duration(deadline)
		if mode != manifest.PrivacyNone && mode != "" {
			m.Privacy.Mode = mode
			m.Privacy.SecAgg.PhaseDeadline = m.Round.Deadline
			m.ApplyDefaults()
		}
	}
	opts.manifest = edit
	var models []string // the models' digests: every member computes them, none fetches them
	obs := Observer{Round: func(rr RoundResult) { models = append(models, rr.Digest) }}
	res, err := runNodes(ctx, c, Data{Train: d, Test: d}, Faults{}, obs, opts)
	if err != nil {
		return RoundCost{}, err
	}
	models = append(models, g.Digest().String())
	rc := RoundCost{Mode: mode, Members: members, Rounds: rounds, UpdateBytes: 4 * len(g.Weights)}
	if rc.Mode == "" {
		rc.Mode = manifest.PrivacyNone
	}
	for _, rr := range res.Rounds {
		rc.Participants += float64(rr.Participants) / float64(len(res.Rounds))
	}
	rc.Seconds, err = cs.steadySeconds(rounds)
	if err != nil {
		return rc, err
	}
	pub, fet, raft := cs.totals(models)
	per := float64(members) * float64(rounds)
	rc.PublishedBytes, rc.FetchedBytes, rc.RaftBytes = pub/per, fet/per, raft/per
	return rc, nil
}

// roundCounters count, per member, what its store is handed, and when it
// applies each round.
type roundCounters struct {
	mu      sync.Mutex
	held    map[fedavg.Digest]bool // some member stores it
	members []*memberCount
}

type memberCount struct {
	puts    []blobPut
	raft    int64
	applied map[uint64]time.Time
}

type blobPut struct {
	d     fedavg.Digest
	n     int
	first bool // no member held it yet: this member made it
}

func (cs *roundCounters) wrap(db *store.DB) node.Store {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	m := &memberCount{applied: map[uint64]time.Time{}}
	cs.members = append(cs.members, m)
	return countingMember{DB: db, cs: cs, m: m}
}

// steadySeconds is the mean wall time of rounds 2..rounds, each ending
// when the last member applied it.
func (cs *roundCounters) steadySeconds(rounds int) (float64, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	last := func(r uint64) (time.Time, error) {
		var t time.Time
		for i, m := range cs.members {
			at, ok := m.applied[r]
			if !ok {
				return t, fmt.Errorf("sim: member %d never applied round %d", i, r)
			}
			if at.After(t) {
				t = at
			}
		}
		return t, nil
	}
	t1, err := last(1)
	if err != nil {
		return 0, err
	}
	tn, err := last(uint64(rounds))
	if err != nil {
		return 0, err
	}
	return tn.Sub(t1).Seconds() / float64(rounds-1), nil
}

// totals are the bytes all members published, fetched (models left out)
// and wrote to Raft over the run.
func (cs *roundCounters) totals(models []string) (pub, fet, raft float64) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, m := range cs.members {
		for _, p := range m.puts {
			switch {
			case slices.Contains(models, p.d.String()):
			case p.first:
				pub += float64(p.n)
			default:
				fet += float64(p.n)
			}
		}
		raft += float64(m.raft)
	}
	return pub, fet, raft
}

// countingMember is one member's store, counted.
type countingMember struct {
	*store.DB
	cs *roundCounters
	m  *memberCount
}

// PutBlob hashes b once, to count it, and stores it under that digest.
func (c countingMember) PutBlob(b []byte) (fedavg.Digest, error) {
	d := fedavg.DigestBytes(b)
	return d, c.PutBlobVerified(d, b)
}

func (c countingMember) PutBlobVerified(d fedavg.Digest, b []byte) error {
	if !c.DB.HasBlob(d) {
		c.cs.mu.Lock()
		c.m.puts = append(c.m.puts, blobPut{d: d, n: len(b), first: !c.cs.held[d]})
		c.cs.held[d] = true
		c.cs.mu.Unlock()
	}
	return c.DB.PutBlobVerified(d, b)
}

func (c countingMember) SaveRaft(hs *pb.HardState, ents []*pb.Entry, snap *pb.Snapshot) error {
	n := proto.Size(hs) + proto.Size(snap)
	for _, e := range ents {
		n += proto.Size(e)
	}
	c.cs.mu.Lock()
	c.m.raft += int64(n)
	c.cs.mu.Unlock()
	return c.DB.SaveRaft(hs, ents, snap)
}

func (c countingMember) Apply(a store.Applied) error {
	err := c.DB.Apply(a)
	if err == nil {
		c.cs.mu.Lock()
		if _, ok := c.m.applied[a.Round]; !ok {
			c.m.applied[a.Round] = time.Now()
		}
		c.cs.mu.Unlock()
	}
	return err
}
