package sim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/local"
)

// Data is the training and test set of a simulation.
type Data struct {
	Train, Test *train.Dataset
}

// LoadData loads the configured data set the way a user's node would.
func LoadData(c Config) (Data, error) {
	tr, te, err := train.Load(c.Dataset, c.DataDir)
	if err != nil {
		return Data{}, err
	}
	return Data{Train: tr, Test: te}, nil
}

// Member is one simulated consortium member.
type Member struct {
	Index     int
	Identity  identity.Identity
	Partition []int // indices into the training set
}

// RoundResult is what one round produced.
type RoundResult struct {
	Round        int     `json:"round"`
	Participants int     `json:"participants"`
	Sampled      int     `json:"sampled"`
	Examples     int64   `json:"examples"`
	TrainLoss    float64 `json:"train_loss"`
	TestLoss     float64 `json:"test_loss"`
	TestAccuracy float64 `json:"test_accuracy"`
	NewModel     bool    `json:"new_model"`
	Seconds      float64 `json:"seconds"`
	Digest       string  `json:"digest"`
	// Epsilon is the most epsilon any member has spent once the round is
	// decided (privacy modes with a budget), at Result.Privacy.Delta.
	Epsilon float64 `json:"epsilon,omitempty"`
	// Exhausted counts the members that declined for their budget so far.
	Exhausted int `json:"members_exhausted,omitempty"`
}

// PrivacyResult is a run's privacy budget: the largest epsilon a member
// spent, at delta, and the members that reached their ceiling.
type PrivacyResult struct {
	Mode      string         `json:"mode"`
	Delta     float64        `json:"delta"`
	Ceiling   float64        `json:"epsilon_ceiling"`
	Epsilon   float64        `json:"epsilon"`
	Exhausted []MemberBudget `json:"exhausted,omitempty"`
}

// MemberBudget is a member that reached its privacy ceiling: from Round
// on it declined.
type MemberBudget struct {
	Member int     `json:"member"`
	Round  uint64  `json:"first_declined_round"`
	Spent  float64 `json:"epsilon_spent"`
}

// Result is the outcome of a whole simulation.
type Result struct {
	Config      Config
	Rounds      []RoundResult
	Final       *fedavg.Global
	Metrics     train.Metrics // final model on the test set
	TargetRound int           // first round reaching Config.Target; 0 if none
	Elapsed     time.Duration
	Traffic     map[string]p2p.Traffic // over libp2p: bytes by protocol, all members
	// CrashPointsFired counts the Faults.CrashPoints that fired.
	CrashPointsFired int
	// Privacy is the privacy budget under a mode that keeps one, else nil.
	Privacy *PrivacyResult
}

// Observer receives progress while a simulation runs. Either field may be nil.
type Observer struct {
	Trained func(round, done, total int) // a participant finished training; calls are serialised
	Round   func(RoundResult)            // a round closed
	// Exhausted: a member reached its privacy ceiling and declines from
	// then on.
	Exhausted func(MemberBudget)
}

// Members builds the consortium: identities derived from the seed and the
// data set partitioned among them, ordered by member index.
func Members(c Config, d *train.Dataset) ([]Member, error) {
	parts, err := local.Partition(d, c.Partition, c.Members, c.ShardsPerMember, c.Alpha, c.Seed)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	ms := make([]Member, c.Members)
	for i := range ms {
		ms[i] = Member{Index: i, Identity: identity.Derive(c.Seed, i), Partition: parts[i]}
	}
	return ms, nil
}

// sampleIndices is round.Sample as member indices.
func sampleIndices(cid []byte, r uint64, ids []identity.PeerID, k int) []int {
	var out []int
	for _, id := range round.Sample(cid, r, ids, k) {
		out = append(out, slices.IndexFunc(ids, func(x identity.PeerID) bool { return identity.Compare(x, id) == 0 }))
	}
	return out
}

// ModelSpec is the model the configuration trains on data set d.
func ModelSpec(c Config, d *train.Dataset) train.Spec {
	return train.Spec{Arch: c.Model, Height: d.Height, Width: d.Width, Channels: d.Channels, Classes: d.Classes}
}

// Run simulates the consortium for c.Rounds rounds on data.
func Run(ctx context.Context, c Config, data Data, obs Observer) (*Result, error) {
	start := time.Now()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.PrivacyOn() {
		return nil, fmt.Errorf("sim: the direct loop runs no privacy mode (privacy %s): run the full nodes", c.Privacy.Mode)
	}
	strategy, err := fedavg.New(c.Strategy)
	if err != nil {
		return nil, err
	}
	spec := ModelSpec(c, data.Train)
	g, err := local.Genesis(spec, c.Seed)
	if err != nil {
		return nil, err
	}
	members, err := Members(c, data.Train)
	if err != nil {
		return nil, err
	}
	ids := make([]identity.PeerID, len(members))
	for i, m := range members {
		ids[i] = m.Identity.ID
	}
	workers := make([]*train.Model, max(c.Workers, 1))
	for i := range workers {
		if workers[i], err = train.NewModel(spec); err != nil {
			return nil, err
		}
	}
	man, err := c.Manifest(members, data.Train)
	if err != nil {
		return nil, err
	}
	cid := man.ConsortiumID()
	res := &Result{Config: c}
	for r := uint64(1); r <= uint64(c.Rounds); r++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		roundStart := time.Now()
		sample := sampleIndices(cid[:], r, ids, c.SampleSize())
		tc := strategy.Configure(r, g)
		updates, stats, err := trainAll(ctx, workers, g, data.Train, members, sample, tc, c, r, obs)
		if err != nil {
			return nil, err
		}
		rr := RoundResult{Round: int(r), Sampled: len(sample), Participants: len(updates)}
		var lossSum float64
		for i, u := range updates {
			if err := fedavg.Validate(u, len(g.Weights), c.MaxExamples); err != nil {
				return nil, fmt.Errorf("round %d: %w", r, err)
			}
			rr.Examples += u.Examples
			lossSum += stats[i].Loss * float64(u.Examples)
		}
		rr.TrainLoss = lossSum / float64(max(rr.Examples, 1))
		next, err := strategy.Aggregate(r, g, updates)
		if err != nil {
			return nil, fmt.Errorf("round %d: aggregate: %w", r, err)
		}
		if next != nil {
			g, rr.NewModel = next, true
		}
		met, err := workers[0].Evaluate(g.Weights, data.Test)
		if err != nil {
			return nil, fmt.Errorf("round %d: evaluate: %w", r, err)
		}
		rr.TestLoss, rr.TestAccuracy = met.Loss, met.Accuracy
		rr.Digest = g.Digest().String()
		rr.Seconds = time.Since(roundStart).Seconds()
		res.Rounds = append(res.Rounds, rr)
		res.Metrics = met
		if obs.Round != nil {
			obs.Round(rr)
		}
		if res.TargetRound == 0 && met.Accuracy >= c.Target {
			res.TargetRound = int(r)
			if c.StopAtTarget {
				break
			}
		}
	}
	res.Final = g
	res.Elapsed = time.Since(start)
	return res, nil
}

// trainAll trains the sampled members on len(workers) goroutines. Results are
// placed by sample position, so scheduling never changes the outcome.
func trainAll(ctx context.Context, workers []*train.Model, g *fedavg.Global, d *train.Dataset, members []Member, sample []int, tc fedavg.TrainConfig, c Config, r uint64, obs Observer) ([]fedavg.Update, []train.TrainStats, error) {
	updates := make([]fedavg.Update, len(sample))
	stats := make([]train.TrainStats, len(sample))
	errs := make([]error, len(sample))
	jobs := make(chan int)
	var mu sync.Mutex
	done := 0
	var wg sync.WaitGroup
	for _, model := range workers[:min(len(workers), len(sample))] {
		wg.Go(func() {
			for j := range jobs {
				m := members[sample[j]]
				updates[j], stats[j], errs[j] = local.Update(model, g, d, m.Partition, m.Identity.ID, tc, c.Seed, r, c.MaxExamples)
				mu.Lock()
				done++
				if obs.Trained != nil {
					obs.Trained(int(r), done, len(sample))
				}
				mu.Unlock()
			}
		})
	}
	for j := range sample {
		if ctx.Err() != nil {
			break
		}
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	for _, err := range errs {
		if err != nil {
			return nil, nil, err
		}
	}
	return updates, stats, nil
}
