package dp

import (
	"fmt"
	"math"
	"math/big"
	"math/bits"
)

// maxGrid bounds Clip*Scale, the clipped update's norm in grid units, so
// that every rounded coordinate is an exact float64 integer far from int64's
// limits.
const maxGrid = 1 << 40

// UpdateNoise is the `update` mode (PRIVACY.md section 2): each participant
// clips its update to L2 norm Clip (S), puts it on the fixed-point grid of
// step 1/Scale by rounding every coordinate to the nearest integer, and adds
// independent discrete Gaussian noise of standard deviation Z*Clip*Scale
// (zS on the grid) to every coordinate. The guarantee is member-level under
// zero-out adjacency and holds whatever the other members do: the node
// charges Mechanism(dim) to its own Accountant for every round it
// publishes in. No amplification by sampling is claimed (the sample is
// public), so the charge is the unsampled Gaussian, RDP alpha/(2 z^2).
//
// The grid rounding is in the sensitivity: a vector of norm at most S*Scale
// rounded coordinate-wise moves by at most sqrt(d)/2, so the integer vector
// has norm at most Delta = S*Scale + sqrt(d)/2 (Sensitivity), which Encode
// also checks exactly, in integers, before adding noise. The discrete
// Gaussian with variance sigma^2 on integer vectors at L2 distance Delta is
// (alpha, alpha Delta^2/(2 sigma^2))-RDP (Canonne, Kamath and Steinke 2020),
// so the noise multiplier charged is z = Z*S*Scale/Delta, slightly below Z.
// Choose Scale so that sqrt(d)/2 is small next to S*Scale.
type UpdateNoise struct {
	Z     float64 // noise multiplier: noise std / S
	Clip  float64 // S, the L2 bound of an update
	Scale float64 // fixed-point scale: one grid step is 1/Scale
}

// Validate reports whether p is usable for updates of dim coordinates.
func (p UpdateNoise) Validate(dim int) error {
	switch {
	case !(p.Z > 0) || math.IsInf(p.Z, 0):
		return fmt.Errorf("%w: update: noise multiplier %v, want > 0 and finite", ErrBadParam, p.Z)
	case !(p.Clip > 0) || math.IsInf(p.Clip, 0):
		return fmt.Errorf("%w: update: clip %v, want > 0 and finite", ErrBadParam, p.Clip)
	case !(p.Scale > 0) || math.IsInf(p.Scale, 0):
		return fmt.Errorf("%w: update: scale %v, want > 0 and finite", ErrBadParam, p.Scale)
	case !(float64(p.Clip*p.Scale) <= maxGrid):
		return fmt.Errorf("%w: update: clip*scale = %v, want at most 2^40", ErrBadParam, float64(p.Clip*p.Scale))
	case dim < 1:
		return fmt.Errorf("%w: update: dimension %d, want >= 1", ErrBadParam, dim)
	}
	if _, err := NewDiscreteGaussian(p.Sigma2()); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	return nil
}

// Sensitivity is Delta, the L2 bound of the rounded update in grid units,
// S*Scale + sqrt(dim)/2, rounded up by a relative 2^-50.
func (p UpdateNoise) Sensitivity(dim int) float64 {
	d := float64(p.Clip*p.Scale) + math.Sqrt(float64(dim))/2
	return float64(d * (1 + 0x1p-50))
}

// Sigma2 is the variance of the noise on the grid: (Z*S*Scale)^2, computed
// exactly from the three float64 values and rounded up to a rational with a
// small denominator (Sigma2AtLeast).
func (p UpdateNoise) Sigma2() *big.Rat {
	s := new(big.Rat).SetFloat64(p.Z)
	s.Mul(s, new(big.Rat).SetFloat64(p.Clip))
	s.Mul(s, new(big.Rat).SetFloat64(p.Scale))
	return Sigma2AtLeast(s.Mul(s, s))
}

// Mechanism is what publishing one update costs: the Gaussian mechanism
// without sampling, with noise multiplier Z*S*Scale/Delta (rounded down by a
// relative 2^-50, so the charge is never below the truth).
func (p UpdateNoise) Mechanism(dim int) SampledGaussian {
	sigma := float64(float64(p.Z*p.Clip) * p.Scale)
	z := float64(float64(sigma/p.Sensitivity(dim)) * (1 - 0x1p-50))
	return SampledGaussian{Q: 1, Z: z}
}

// Encode returns the noisy grid vector of update x (not modified): x
// clipped to S, times Scale, each coordinate rounded to the nearest integer
// (half away from zero), plus discrete Gaussian noise of variance Sigma2()
// drawn from src. Before the noise is added the integer vector's squared
// norm is compared, exactly, with Delta^2; should rounding ever push it
// above (it cannot in exact arithmetic), the values shrink by a relative
// 2^-20 and are rounded again. A non-finite x is rejected.
func (p UpdateNoise) Encode(x []float32, src *Source) ([]int64, error) {
	if err := p.Validate(len(x)); err != nil {
		return nil, err
	}
	g, err := NewDiscreteGaussian(p.Sigma2())
	if err != nil {
		return nil, err
	}
	c := make([]float32, len(x))
	copy(c, x)
	if _, err := ClipL2(c, p.Clip); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	delta := p.Sensitivity(len(x))
	v := make([]int64, len(x))
	scale := p.Scale
	for {
		for j, f := range c {
			v[j] = int64(math.Round(float64(float64(f) * scale)))
		}
		if normSquaredAtMost(v, delta) {
			break
		}
		scale = float64(scale * (1 - 0x1p-20))
	}
	if err := g.AddTo(v, src); err != nil {
		return nil, err
	}
	return v, nil
}

// Decode returns the float32 update a noisy grid vector stands for,
// v[j]/Scale: post-processing, which costs no privacy.
func (p UpdateNoise) Decode(v []int64) []float32 {
	out := make([]float32, len(v))
	for j, n := range v {
		out[j] = float32(float64(n) / p.Scale)
	}
	return out
}

// normSquaredAtMost reports whether sum v[j]^2 <= bound^2, exactly: the
// sum in 128-bit integers, the square of the float64 bound in big.Float.
func normSquaredAtMost(v []int64, bound float64) bool {
	var hi, lo uint64
	for _, n := range v {
		a := uint64(n)
		if n < 0 {
			a = uint64(-n)
		}
		h, l := bits.Mul64(a, a)
		var carry uint64
		lo, carry = bits.Add64(lo, l, 0)
		hi, carry = bits.Add64(hi, h, carry)
		if carry != 0 {
			return false
		}
	}
	sum := new(big.Int).SetUint64(hi)
	sum.Lsh(sum, 64)
	sum.Or(sum, new(big.Int).SetUint64(lo))
	b := new(big.Float).SetPrec(256).SetFloat64(bound)
	b.Mul(b, b) // exact: 106 bits needed
	s := new(big.Float).SetPrec(256).SetInt(sum)
	return s.Cmp(b) <= 0
}
