package local

import (
	"context"
	mrand "math/rand/v2"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/privacy/dp"
	"github.com/globalbrain/globalbrain/train"
)

// Trainer is the built-in trainer: it trains one member's part of a data
// set with the built-in engine, taking a model from a pool for each round
// (a pool shared by the members of a simulation bounds how many train at
// once). It implements the node's Trainer.
type Trainer struct {
	Data   *train.Dataset
	Part   []int           // indices into Data
	ID     identity.PeerID // the member: it seeds the training randomness
	Seed   uint64
	Cap    int64             // max_examples_per_member, 0 for none
	Models chan *train.Model // the pool; NewTrainer makes one of one model
	// DPSGD, if set, makes every round's training record-level DP-SGD
	// with these parameters (UpdateDPSGD); nil is plain SGD (Update),
	// unchanged. Whoever publishes the update must first charge
	// DPCharge(epochs) to the member's accountant.
	DPSGD *dp.DPSGD
	// DPKey is the member's secret (32 random bytes, say) from which,
	// with Seed, ID and the round, DP-SGD draws its samples and noise
	// (DPRand), so that retraining a round gives the same update. Empty:
	// each training draws a fresh source from crypto/rand. It must not be
	// shared: the guarantee needs the samples and the noise unknown to
	// everyone else.
	DPKey []byte
	// Observe, if set, hears of every finished training.
	Observe func(r uint64, u fedavg.Update, st train.TrainStats, took time.Duration)
	// Progress, if set, hears of a training in progress at most once per
	// ProgressEvery (DefaultProgressEvery if 0), the first time one
	// interval after it started: a short training is never reported.
	Progress      func(r uint64, p train.Progress, took time.Duration)
	ProgressEvery time.Duration
}

// DefaultProgressEvery is the interval of Trainer.Progress reports.
const DefaultProgressEvery = 10 * time.Second

// progressEvery bounds Progress's rate: at most one call per every (by
// the clock now), the first one every after start. It runs on the
// training goroutine.
func progressEvery(r uint64, start time.Time, every time.Duration, now func() time.Time, report func(uint64, train.Progress, time.Duration)) func(train.Progress) {
	next := start.Add(every)
	return func(p train.Progress) {
		if now := now(); !now.Before(next) {
			next = now.Add(every)
			report(r, p, now.Sub(start))
		}
	}
}

// NewTrainer is a Trainer with a pool of one model of spec.
func NewTrainer(spec train.Spec, d *train.Dataset, part []int, id identity.PeerID, seed uint64, cap int64) (*Trainer, error) {
	m, err := train.NewModel(spec)
	if err != nil {
		return nil, err
	}
	pool := make(chan *train.Model, 1)
	pool <- m
	return &Trainer{Data: d, Part: part, ID: id, Seed: seed, Cap: cap, Models: pool}, nil
}

// Train returns member t.ID's update for round r from g. Local training
// cannot be interrupted, so when ctx ends first (the node stops) Train
// returns at once and the training finishes unobserved, its update dropped:
// a node shutting down never waits for a round's training.
func (t *Trainer) Train(ctx context.Context, r uint64, g *fedavg.Global, cfg fedavg.TrainConfig) ([]float32, int64, error) {
	type result struct {
		u   fedavg.Update
		st  train.TrainStats
		err error
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	var model *train.Model
	select {
	case model = <-t.Models:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	start := time.Now()
	done := make(chan result, 1)
	go func() {
		defer func() { t.Models <- model }()
		if t.Progress != nil {
			every := t.ProgressEvery
			if every <= 0 {
				every = DefaultProgressEvery
			}
			model.OnStep = progressEvery(r, start, every, time.Now, t.Progress)
			defer func() { model.OnStep = nil }()
		}
		u, st, err := t.update(model, r, g, cfg)
		done <- result{u, st, err}
	}()
	select {
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case res := <-done:
		if res.err != nil {
			return nil, 0, res.err
		}
		if t.Observe != nil {
			t.Observe(r, res.u, res.st, time.Since(start))
		}
		return res.u.Delta, res.u.Examples, nil
	}
}

// update is one round's local training, plain or DP-SGD.
func (t *Trainer) update(model *train.Model, r uint64, g *fedavg.Global, cfg fedavg.TrainConfig) (fedavg.Update, train.TrainStats, error) {
	if t.DPSGD == nil {
		return Update(model, g, t.Data, t.Part, t.ID, cfg, t.Seed, r, t.Cap)
	}
	var rng *mrand.Rand
	if len(t.DPKey) > 0 {
		rng = DPRand(t.DPKey, t.Seed, t.ID, r)
	} else {
		rng = secretRand()
	}
	return UpdateDPSGD(model, g, t.Data, t.Part, t.ID, cfg, *t.DPSGD, rng, r, t.Cap)
}
