package local

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"slices"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/privacy/dp"
	"github.com/globalbrain/globalbrain/train"
)

// DPSGDCharge is what one participation of member training costs under
// record-level DP-SGD with p over its n local examples for epochs epochs:
// steps applications of mech, the subsampled Gaussian with q = B/n and
// noise multiplier Z (p.Mechanism(n)), with steps = ceil(epochs n / B)
// (p.Steps(epochs, n)), exactly the steps UpdateDPSGD takes. The node
// charges it to its accountant (Accountant.Spend(mech, steps)) before it
// publishes the update. n is the member's whole part, not the example
// count it reports (which max_examples_per_member may cap): every one of
// the n examples may be sampled.
func DPSGDCharge(p dp.DPSGD, epochs, n int) (mech dp.SampledGaussian, steps int64, err error) {
	if err := p.Validate(n); err != nil {
		return dp.SampledGaussian{}, 0, err
	}
	if epochs < 1 {
		return dp.SampledGaussian{}, 0, fmt.Errorf("%w: dp-sgd: %d epochs, want at least 1", dp.ErrBadParam, epochs)
	}
	return p.Mechanism(n), p.Steps(epochs, n), nil
}

// DPCharge is DPSGDCharge for t's DP-SGD parameters over its part: what a
// participation of epochs epochs (the round's TrainConfig.Epochs) costs.
// It fails if t.DPSGD is nil.
func (t *Trainer) DPCharge(epochs int) (dp.SampledGaussian, int64, error) {
	if t.DPSGD == nil {
		return dp.SampledGaussian{}, 0, errors.New("local: DPCharge: the trainer does not run DP-SGD")
	}
	return DPSGDCharge(*t.DPSGD, epochs, len(t.Part))
}

// DPRand is the random source of member id's DP-SGD in round r: its
// Poisson samples and its noise. It is a ChaCha8 keyed by a hash of key,
// seed, id and r, so a member with the same key trains the same update.
//
// key must be the member's secret. Unlike the plain SGD shuffle (Seed,
// from the shared partition seed, which every member knows), the DP-SGD
// guarantee rests on these draws being unknown to everyone else: whoever
// can compute the noise can subtract it, and whoever can compute the
// samples gets no amplification by sampling, which the charge
// (DPSGDCharge) assumes.
func DPRand(key []byte, seed uint64, id identity.PeerID, r uint64) *mrand.Rand {
	var buf [8]byte
	h := sha256.New()
	h.Write([]byte("globalbrain/dpsgd-seed/1"))
	binary.BigEndian.PutUint64(buf[:], uint64(len(key)))
	h.Write(buf[:])
	h.Write(key)
	binary.BigEndian.PutUint64(buf[:], seed)
	h.Write(buf[:])
	binary.BigEndian.PutUint64(buf[:], uint64(len(id)))
	h.Write(buf[:])
	h.Write(id)
	binary.BigEndian.PutUint64(buf[:], r)
	h.Write(buf[:])
	var s [32]byte
	h.Sum(s[:0])
	return mrand.New(mrand.NewChaCha8(s))
}

// secretRand is a ChaCha8 seeded from crypto/rand: DP-SGD's source when
// the trainer has no key.
func secretRand() *mrand.Rand {
	var s [32]byte
	rand.Read(s[:])
	return mrand.New(mrand.NewChaCha8(s))
}

// UpdateDPSGD is Update with record-level DP-SGD (Abadi et al. 2016, as
// Opacus runs it) in place of plain SGD. With n = len(part) local
// examples it takes p.Steps(tc.Epochs, n) = ceil(E n / B) steps, B being
// p.BatchSize (tc.BatchSize is not used). Each step draws a Poisson sample
// of the part with rate q = B/n (dp.PoissonSample), computes each sampled
// example's gradient alone (train.Model.ExampleGrads), and moves the
// weights by tc.LR times p.Gradient of those gradients: their sum, each
// clipped to p.ExampleClip, plus Gaussian noise of standard deviation
// p.Z*p.ExampleClip on every coordinate, over B. An empty sample still
// adds the noise. FedProx's term mu (w - global), which depends on no
// data, is added after the noise. The samples and the noise come from rng,
// in that order each step; rng must be secret to the member (DPRand).
//
// The example count is n capped at maxExamples, as in Update. The stats
// count the sampled examples and the steps; their Loss is the mean loss of
// the examples sampled in the last ceil(n/B) steps (one epoch's worth),
// each measured before its step, and is not private.
func UpdateDPSGD(model *train.Model, g *fedavg.Global, d *train.Dataset, part []int, id identity.PeerID, tc fedavg.TrainConfig, p dp.DPSGD, rng *mrand.Rand, r uint64, maxExamples int64) (fedavg.Update, train.TrainStats, error) {
	local := slices.Clone(g.Weights)
	st, err := dpsgd(model, local, g.Weights, d, part, tc, p, rng)
	if err != nil {
		return fedavg.Update{}, st, fmt.Errorf("member %s round %d: dp-sgd: %w", id.Short(), r, err)
	}
	for i, w := range g.Weights {
		local[i] -= w
	}
	n := int64(len(part))
	if maxExamples > 0 {
		n = min(n, maxExamples)
	}
	return fedavg.Update{Peer: id, Delta: local, Examples: n}, st, nil
}

// dpsgd runs UpdateDPSGD's steps on w in place.
func dpsgd(model *train.Model, w, global []float32, d *train.Dataset, part []int, tc fedavg.TrainConfig, p dp.DPSGD, rng *mrand.Rand) (train.TrainStats, error) {
	var st train.TrainStats
	n := len(part)
	cfg := SGD(tc)
	cfg.BatchSize = p.BatchSize
	if err := cfg.Validate(); err != nil {
		return st, err
	}
	if err := p.Validate(n); err != nil {
		return st, err
	}
	if rng == nil {
		return st, errors.New("nil random source")
	}
	if cfg.ProxMu > 0 && len(global) != len(w) {
		return st, fmt.Errorf("global model has %d parameters, the local one %d", len(global), len(w))
	}
	for k, j := range part {
		if j < 0 || j >= d.N {
			return st, fmt.Errorf("index %d (position %d) out of range [0,%d) of data set %q", j, k, d.N, d.Name)
		}
	}
	steps := p.Steps(cfg.Epochs, n)
	lastFrom := steps - p.Steps(1, n) // the steps whose losses the stats keep
	q := p.SampleRate(n)
	lr, mu := float32(cfg.LR), float32(cfg.ProxMu)
	sum := make([]float64, len(w))
	delta := make([]float32, len(w))
	var idx []int
	one := make([][]float32, 1)
	var lastLoss, runLoss float64 // runLoss: the current epoch's, for OnStep
	var lastN, runN int
	perEpoch := max(p.Steps(1, n), 1)
	for s := int64(0); s < steps; s++ {
		if s%perEpoch == 0 {
			runLoss, runN = 0, 0
		}
		idx = idx[:0]
		for _, k := range dp.PoissonSample(n, q, rng) {
			idx = append(idx, part[k])
		}
		clear(sum)
		err := model.ExampleGrads(w, d, idx, func(_ int, loss float64, g []float32) error {
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				return fmt.Errorf("training diverged: loss %v at step %d (learning rate %v)", loss, s+1, cfg.LR)
			}
			if s >= lastFrom {
				lastLoss += loss
				lastN++
			}
			runLoss += loss
			runN++
			one[0] = g
			_, err := dp.SumClipped(sum, one, p.ExampleClip)
			return err
		})
		if err != nil {
			return st, err
		}
		noisyMean(delta, sum, p, rng)
		if mu > 0 {
			for i := range delta {
				delta[i] += float32(mu * (w[i] - global[i]))
			}
		}
		for i := range w {
			w[i] -= float32(lr * delta[i])
		}
		st.Steps++
		st.Examples += len(idx)
		if model.OnStep != nil && runN > 0 {
			model.OnStep(train.Progress{Epoch: min(int(s/perEpoch)+1, cfg.Epochs), Epochs: cfg.Epochs, Step: st.Steps, Steps: int(steps),
				Examples: st.Examples, Loss: runLoss / float64(runN)})
		}
	}
	if lastN > 0 {
		st.Loss = lastLoss / float64(lastN)
	}
	return st, nil
}

// noisyMean finishes p.Gradient on sum, the clipped per-example gradients
// already added up (dp.SumClipped, one at a time so that they need not all
// be held at once): it adds the noise and divides by the batch size into
// dst, with the same operations in the same order as p.Gradient, which
// the tests hold it to bit for bit.
func noisyMean(dst []float32, sum []float64, p dp.DPSGD, rng *mrand.Rand) {
	dp.AddGaussian(sum, float64(p.Z*p.ExampleClip), rng)
	b := float64(p.BatchSize)
	for i, v := range sum {
		dst[i] = float32(v / b)
	}
}
