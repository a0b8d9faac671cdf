package dp

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// AddGaussian adds independent N(0, std^2) noise, drawn from rng, to every
// coordinate of x. This is the continuous Gaussian of DP-SGD, where the
// noise goes into float64 gradients that local training consumes; the
// member-level modes (update, distributed) add the exact discrete Gaussian
// to integers instead (DiscreteGaussian), which PRIVACY.md asks for and
// which has no floating-point side channel. rng must come from a secret
// seed (for instance a ChaCha8 seeded from crypto/rand); its state is the
// noise.
func AddGaussian(x []float64, std float64, rng *rand.Rand) {
	if !(std >= 0) || math.IsInf(std, 0) {
		panic(fmt.Sprintf("dp: AddGaussian: std %v, want finite and >= 0", std))
	}
	for i := range x {
		x[i] += float64(std * rng.NormFloat64())
	}
}

// PoissonSample returns, in increasing order, the indices in [0, n) of a
// Poisson sample with rate q: each index is in it independently with
// probability q. This is the sampling that SampledGaussianRDP accounts for
// (a fixed-size shuffled batch is not).
func PoissonSample(n int, q float64, rng *rand.Rand) []int {
	if !(q >= 0 && q <= 1) {
		panic(fmt.Sprintf("dp: PoissonSample: rate %v, want in [0, 1]", q))
	}
	var idx []int
	for i := 0; i < n; i++ {
		if rng.Float64() < q {
			idx = append(idx, i)
		}
	}
	return idx
}

// DPSGD is the record-level mode: local training clips every example's
// gradient to ExampleClip, adds Gaussian noise of standard deviation
// Z*ExampleClip to the sum of a Poisson-sampled batch of expected size
// BatchSize, and divides by BatchSize (Abadi et al. 2016, as Opacus does).
// With N local examples each step is the subsampled Gaussian mechanism with
// q = BatchSize/N and noise multiplier Z; a participation of E epochs is
// ceil(E N / BatchSize) such steps.
type DPSGD struct {
	ExampleClip float64 // C, the L2 bound of one example's gradient
	Z           float64 // noise multiplier: noise std / C
	BatchSize   int     // expected batch size B
}

// Validate reports whether p can run over n local examples.
func (p DPSGD) Validate(n int) error {
	switch {
	case !(p.ExampleClip > 0) || math.IsInf(p.ExampleClip, 0):
		return fmt.Errorf("%w: dp-sgd: example clip %v, want > 0 and finite", ErrBadParam, p.ExampleClip)
	case !(p.Z > 0) || math.IsInf(p.Z, 0):
		return fmt.Errorf("%w: dp-sgd: noise multiplier %v, want > 0 and finite", ErrBadParam, p.Z)
	case p.BatchSize < 1:
		return fmt.Errorf("%w: dp-sgd: batch size %d, want >= 1", ErrBadParam, p.BatchSize)
	case n < p.BatchSize:
		return fmt.Errorf("%w: dp-sgd: %d local examples, fewer than the batch size %d", ErrBadParam, n, p.BatchSize)
	}
	return nil
}

// SampleRate is q = BatchSize / n.
func (p DPSGD) SampleRate(n int) float64 { return float64(p.BatchSize) / float64(n) }

// Steps is the number of steps E epochs over n examples take,
// ceil(E n / BatchSize).
func (p DPSGD) Steps(epochs, n int) int64 {
	en := int64(epochs) * int64(n)
	b := int64(p.BatchSize)
	return (en + b - 1) / b
}

// Mechanism is what one step over n examples costs.
func (p DPSGD) Mechanism(n int) SampledGaussian {
	return SampledGaussian{Q: p.SampleRate(n), Z: p.Z}
}

// Gradient computes one step's private gradient into dst: the sum of grads
// (the per-example gradients of the Poisson-sampled batch, possibly none),
// each clipped to ExampleClip, plus N(0, (Z ExampleClip)^2) noise on every
// coordinate, divided by BatchSize. The noise comes from rng.
func (p DPSGD) Gradient(dst []float32, grads [][]float32, rng *rand.Rand) error {
	if err := p.Validate(p.BatchSize); err != nil {
		return err
	}
	if rng == nil {
		return errors.New("dp: dp-sgd: nil random source")
	}
	sum := make([]float64, len(dst))
	if _, err := SumClipped(sum, grads, p.ExampleClip); err != nil {
		return err
	}
	AddGaussian(sum, float64(p.Z*p.ExampleClip), rng)
	b := float64(p.BatchSize)
	for i, v := range sum {
		dst[i] = float32(v / b)
	}
	return nil
}
