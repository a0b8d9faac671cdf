package dp

import (
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"math/rand/v2"
)

// The Distributed Discrete Gaussian (DDG) of Kairouz, Liu and Steinke, "The
// Distributed Discrete Gaussian Mechanism for Federated Learning with
// Secure Aggregation" (ICML 2021), for the `distributed` mode: each
// participant clips its unweighted update to S, scales it onto the integer
// grid (step gamma = 1/Scale), flattens it with a seeded random rotation,
// rounds it randomly (conditionally: again until its norm is within the
// bound), adds discrete Gaussian noise with variance sigma^2/n, and hands
// the integers, mod 2^64, to secure aggregation. The sum of n honest noises
// is close to a discrete Gaussian of variance sigma^2; the RDP of that sum
// is the DDG bound (their Theorem 1 and Proposition 14), which the DDG
// mechanism computes and the Accountant charges.

// DefaultBeta is the conditional-rounding parameter of the DDG paper's
// experiments and of TensorFlow Federated, exp(-1/2).
var DefaultBeta = math.Exp(-0.5)

// DistributedNoise is the `distributed` mode's encoding (PRIVACY.md
// section 2 and the Phase 2 encoding of section 1), with these parameters:
//
//   - Clip, S: the L2 bound of each participant's unweighted update;
//   - Z: the noise multiplier of the aggregate: the honest contributions'
//     noise adds up to standard deviation Z*S, as central DP would add;
//   - Honest, n: how many honest contributions the target counts on. It is
//     t - gamma (the secure-aggregation threshold minus the colluders
//     tolerated), the fewest inputs an unmasked sum can hold that are not
//     the colluders'; each participant adds variance (Z*S*Scale)^2 / n on
//     the grid, so any n honest ones reach the target, and more only add
//     noise;
//   - Scale = 1/gamma: the grid step (the DDG paper's gamma is the step; it
//     is not the colluder count);
//   - Beta in [0, 1): conditional randomized rounding; 0 rounds once and
//     takes the bound S*Scale + sqrt(d), a positive Beta rounds again while
//     the norm exceeds the tighter bound
//     sqrt((S Scale)^2 + d/4 + sqrt(2 ln(1/Beta)) (S Scale + sqrt(d)/2)),
//     about 1/(1-Beta) tries on average (their Theorem 23). DefaultBeta is
//     exp(-1/2).
//
// d is the update's dimension padded to a power of two for the rotation
// (PaddedDim). The guarantee is member-level for the aggregate, under
// zero-out adjacency, while at most gamma participants collude; the node
// charges Mechanism(dim) for every round it contributes to.
type DistributedNoise struct {
	Z      float64
	Clip   float64
	Scale  float64
	Honest int
	Beta   float64
}

// PaddedDim is the smallest power of two >= dim: the rotation's dimension
// and the length of an encoded vector.
func PaddedDim(dim int) int {
	if dim <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(dim-1))
}

// Validate reports whether p is usable for updates of dim coordinates.
func (p DistributedNoise) Validate(dim int) error {
	switch {
	case !(p.Z > 0) || math.IsInf(p.Z, 0):
		return fmt.Errorf("%w: distributed: noise multiplier %v, want > 0 and finite", ErrBadParam, p.Z)
	case !(p.Clip > 0) || math.IsInf(p.Clip, 0):
		return fmt.Errorf("%w: distributed: clip %v, want > 0 and finite", ErrBadParam, p.Clip)
	case !(p.Scale > 0) || math.IsInf(p.Scale, 0):
		return fmt.Errorf("%w: distributed: scale %v, want > 0 and finite", ErrBadParam, p.Scale)
	case !(float64(p.Clip*p.Scale) <= maxGrid):
		return fmt.Errorf("%w: distributed: clip*scale = %v, want at most 2^40", ErrBadParam, float64(p.Clip*p.Scale))
	case p.Honest < 1:
		return fmt.Errorf("%w: distributed: %d honest contributions, want >= 1", ErrBadParam, p.Honest)
	case !(p.Beta >= 0 && p.Beta < 1):
		return fmt.Errorf("%w: distributed: beta %v, want in [0, 1)", ErrBadParam, p.Beta)
	case dim < 1 || dim > 1<<40:
		return fmt.Errorf("%w: distributed: dimension %d, want in [1, 2^40]", ErrBadParam, dim)
	}
	if s := p.localSigma(); !(s >= 1) {
		// Theorem 1 asks for sigma >= 1/2; below 1 the tau term makes the
		// bound useless anyway.
		return fmt.Errorf("%w: distributed: local noise std %v grid steps, want >= 1 (raise scale)", ErrBadParam, s)
	}
	if _, err := NewDiscreteGaussian(p.LocalSigma2()); err != nil {
		return fmt.Errorf("distributed: %w", err)
	}
	return nil
}

// localSigma is the target local standard deviation in grid steps,
// Z*S*Scale/sqrt(n), in float64.
func (p DistributedNoise) localSigma() float64 {
	return float64(float64(p.Z*p.Clip)*p.Scale) / math.Sqrt(float64(p.Honest))
}

// LocalSigma2 is the variance each participant adds on the grid,
// (Z*S*Scale)^2/n, exactly, rounded up to a small denominator
// (Sigma2AtLeast).
func (p DistributedNoise) LocalSigma2() *big.Rat {
	s := new(big.Rat).SetFloat64(p.Z)
	s.Mul(s, new(big.Rat).SetFloat64(p.Clip))
	s.Mul(s, new(big.Rat).SetFloat64(p.Scale))
	s.Mul(s, s)
	s.Quo(s, new(big.Rat).SetInt64(int64(p.Honest)))
	return Sigma2AtLeast(s)
}

// Sensitivity returns the L2 bound Delta2 of an encoded vector before noise,
// in grid steps (the DDG paper's rounded-norm bound, rounded up by a
// relative 2^-50), and the L1 bound that follows for an integer vector,
// Delta1 = Delta2 * min(sqrt(d), Delta2), with d = PaddedDim(dim).
func (p DistributedNoise) Sensitivity(dim int) (l2, l1 float64) {
	d := float64(PaddedDim(dim))
	c := float64(p.Clip * p.Scale)
	sd := math.Sqrt(d)
	l2 = c + sd
	if p.Beta > 0 {
		b2 := float64(c*c) + d/4 + float64(math.Sqrt(float64(2*math.Log(1/p.Beta)))*(c+sd/2))
		l2 = math.Min(l2, math.Sqrt(b2))
	}
	l2 = float64(l2 * (1 + 0x1p-50))
	l1 = float64(l2 * math.Min(sd, l2))
	return l2, l1
}

// Mechanism is what one contribution costs: the DDG bound for the sum of
// n = Honest discrete Gaussians of variance LocalSigma2 added to an integer
// vector within Sensitivity, in d = PaddedDim(dim) coordinates. The total
// noise standard deviation sqrt(n) sigma_local is taken at its target
// Z*S*Scale and tau at the target sigma_local, both below what is drawn, and
// the results are rounded up, so the charge is never below the bound.
func (p DistributedNoise) Mechanism(dim int) DDG {
	l2, l1 := p.Sensitivity(dim)
	total := float64(float64(p.Z*p.Clip) * p.Scale)
	local := p.localSigma()
	up := 1 + 0x1p-50
	return DDG{
		L2:  float64(float64(l2/total) * up),
		L1:  float64(float64(l1/total) * up),
		Tau: float64(DDGTau(p.Honest, float64(local*(1-0x1p-50))) * up),
		Dim: PaddedDim(dim),
	}
}

// DDGTau is the DDG paper's tau for the sum of n discrete Gaussians each of
// standard deviation sigma (in grid steps), which measures how far the sum
// is from one discrete Gaussian (their Theorem 1):
//
//	tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k/(k+1))
//
// It is 0 for n = 1.
func DDGTau(n int, sigma float64) float64 {
	var tau float64
	s2 := float64(float64(2*math.Pi*math.Pi) * float64(sigma*sigma))
	for k := 1; k < n; k++ {
		fk := float64(k)
		tau += math.Exp(-float64(s2 * (fk / (fk + 1))))
	}
	return float64(10 * tau)
}

// DDG is the RDP bound of the distributed discrete Gaussian (Kairouz, Liu
// and Steinke 2021, Proposition 14): for integer vectors at L2 distance at
// most Delta2 and L1 distance at most Delta1, the sum of n independent
// discrete Gaussians N_Z(0, sigma^2)^d is (alpha, eps(alpha))-RDP with
//
//	eps(alpha) = min( alpha/2 L2^2 + tau d,
//	                  alpha/2 (L2^2 + 2 L1 tau + tau^2 d),
//	                  alpha/2 (L2 + tau sqrt(d))^2 )
//
// where L2 = Delta2/(sqrt(n) sigma) and L1 = Delta1/(sqrt(n) sigma) are the
// sensitivities over the total noise std, and tau = DDGTau(n, sigma). With
// tau = 0 (one participant) it is the discrete Gaussian's alpha L2^2/2.
// DistributedNoise.Mechanism fills it in.
type DDG struct {
	L2  float64 `json:"l2"`
	L1  float64 `json:"l1"`
	Tau float64 `json:"tau"`
	Dim int     `json:"dim"`
}

// RDP implements Mechanism.
func (m DDG) RDP(alpha float64) float64 {
	d := float64(m.Dim)
	h := alpha / 2
	t1 := float64(h*float64(m.L2*m.L2)) + float64(m.Tau*d)
	t2 := float64(h * (float64(m.L2*m.L2) + float64(2*float64(m.L1*m.Tau)) + float64(float64(m.Tau*m.Tau)*d)))
	r := m.L2 + float64(m.Tau*math.Sqrt(d))
	t3 := float64(h * float64(r*r))
	return math.Min(t1, math.Min(t2, t3))
}

// Validate reports whether the bound's parameters are in range.
func (m DDG) Validate() error {
	for _, v := range []float64{m.L2, m.L1, m.Tau} {
		if !(v >= 0) || math.IsInf(v, 0) {
			return fmt.Errorf("%w: ddg: l2 %v, l1 %v, tau %v, want finite and >= 0", ErrBadParam, m.L2, m.L1, m.Tau)
		}
	}
	if !(m.L2 > 0) || m.Dim < 1 {
		return fmt.Errorf("%w: ddg: l2 %v, dim %d, want l2 > 0 and dim >= 1", ErrBadParam, m.L2, m.Dim)
	}
	return nil
}

func (DDG) mechanism() {}

// Rotation is the DDG's flattening: the randomized Walsh-Hadamard transform
// x -> H D x / sqrt(d) on d = PaddedDim(dim) coordinates (zero-padded),
// with D a diagonal of random signs. It is orthogonal, so norms are kept,
// and it spreads a vector's mass over all coordinates, so the sum mod 2^64
// does not wrap. The signs are public and come from a 32-byte seed that
// every participant and every decoder derives the same way (for instance
// from the consortium ID, the round and the base digest); ChaCha8 expands
// it, so the rotation is the same on every machine.
type Rotation struct {
	dim   int
	signs []bool // true: -1
}

// NewRotation returns the rotation for updates of dim >= 1 coordinates.
func NewRotation(seed [32]byte, dim int) *Rotation {
	if dim < 1 {
		panic("dp: NewRotation: dimension < 1")
	}
	d := PaddedDim(dim)
	r := &Rotation{dim: dim, signs: make([]bool, d)}
	src := rand.NewChaCha8(seed)
	var w uint64
	for i := range r.signs {
		if i%64 == 0 {
			w = src.Uint64()
		}
		r.signs[i] = w&1 == 1
		w >>= 1
	}
	return r
}

// Dim is the unpadded dimension.
func (r *Rotation) Dim() int { return r.dim }

// PaddedDim is the rotation's dimension.
func (r *Rotation) PaddedDim() int { return len(r.signs) }

// Forward rotates x (dim coordinates) into a new vector of PaddedDim.
func (r *Rotation) Forward(x []float64) []float64 {
	if len(x) != r.dim {
		panic(fmt.Sprintf("dp: Rotation.Forward: %d coordinates, want %d", len(x), r.dim))
	}
	y := make([]float64, len(r.signs))
	for i, v := range x {
		if r.signs[i] {
			v = -v
		}
		y[i] = v
	}
	hadamard(y)
	return y
}

// Inverse undoes Forward: D H y / sqrt(d), truncated to dim coordinates. y
// is overwritten.
func (r *Rotation) Inverse(y []float64) []float64 {
	if len(y) != len(r.signs) {
		panic(fmt.Sprintf("dp: Rotation.Inverse: %d coordinates, want %d", len(y), len(r.signs)))
	}
	hadamard(y)
	x := y[:r.dim]
	for i := range x {
		if r.signs[i] {
			x[i] = -x[i]
		}
	}
	return x
}

// hadamard applies the normalized Walsh-Hadamard transform H/sqrt(d) in
// place, len(y) a power of two. Only additions, subtractions and one final
// multiplication per coordinate: the same bits on every CPU.
func hadamard(y []float64) {
	n := len(y)
	for h := 1; h < n; h *= 2 {
		for i := 0; i < n; i += 2 * h {
			for j := i; j < i+h; j++ {
				a, b := y[j], y[j+h]
				y[j], y[j+h] = a+b, a-b
			}
		}
	}
	f := 1 / math.Sqrt(float64(n))
	for i := range y {
		y[i] = float64(y[i] * f)
	}
}

// maxRoundingTries bounds the conditional rounding's retries before the
// vector is shrunk a little (each try succeeds with probability at least
// 1 - Beta).
const maxRoundingTries = 1000

// Encode returns participant's encoded input for secure aggregation, of
// PaddedDim(len(x)) coordinates mod 2^64: x (not modified) clipped to S,
// times Scale, rotated by rot, rounded randomly (coordinate by coordinate
// up with probability its fractional part, again while the squared norm
// exceeds Delta2^2, compared exactly), plus discrete Gaussian noise of
// variance LocalSigma2, all randomness from src. Nothing is clamped after
// the noise: the integers wrap mod 2^64.
func (p DistributedNoise) Encode(x []float32, rot *Rotation, src *Source) ([]uint64, error) {
	if err := p.Validate(len(x)); err != nil {
		return nil, err
	}
	if rot.Dim() != len(x) {
		return nil, fmt.Errorf("%w: distributed: rotation for %d coordinates, update has %d", ErrBadParam, rot.Dim(), len(x))
	}
	g, err := NewDiscreteGaussian(p.LocalSigma2())
	if err != nil {
		return nil, err
	}
	c := make([]float32, len(x))
	copy(c, x)
	if _, err := ClipL2(c, p.Clip); err != nil {
		return nil, fmt.Errorf("distributed: %w", err)
	}
	xs := make([]float64, len(c))
	for j, f := range c {
		xs[j] = float64(float64(f) * p.Scale)
	}
	y := rot.Forward(xs)
	delta, _ := p.Sensitivity(len(x))
	v := make([]int64, len(y))
	for tries := 0; ; tries++ {
		if tries == maxRoundingTries {
			// Rounding error in the rotation put the vector a hair
			// outside what the bound allows; shrink it.
			for j := range y {
				y[j] = float64(y[j] * (1 - 0x1p-20))
			}
			tries = 0
		}
		if err := randomRound(v, y, src); err != nil {
			return nil, err
		}
		if normSquaredAtMost(v, delta) {
			break
		}
	}
	if err := g.AddTo(v, src); err != nil {
		return nil, err
	}
	out := make([]uint64, len(v))
	for j, n := range v {
		out[j] = uint64(n)
	}
	return out, nil
}

// randomRound sets v[j] to floor(y[j]) + Bernoulli(y[j] - floor(y[j])),
// the fractional part compared with 64 random bits.
func randomRound(v []int64, y []float64, src *Source) error {
	for j, f := range y {
		fl := math.Floor(f)
		frac := f - fl
		u, err := src.Uint64()
		if err != nil {
			return err
		}
		n := int64(fl)
		if float64(u) < float64(frac*0x1p64) {
			n++
		}
		v[j] = n
	}
	return nil
}

// DecodeSum returns the sum of the contributions behind an aggregate: sum
// is the secure-aggregation result, the encoded vectors added mod 2^64,
// read as signed (two's complement) integers, rotated back and divided by
// Scale, in the update's dim coordinates. It is post-processing and costs
// no privacy. Every member that decodes the same sum gets the same bits.
func (p DistributedNoise) DecodeSum(sum []uint64, rot *Rotation) []float64 {
	y := make([]float64, len(sum))
	for j, s := range sum {
		y[j] = float64(int64(s))
	}
	x := rot.Inverse(y)
	for j := range x {
		x[j] = x[j] / p.Scale
	}
	return x
}

// SumBound is an L2 bound on DecodeSum's result for count honest
// contributions: each within Delta2 (Sensitivity) on the grid, and their
// noise, count*LocalSigma2 per coordinate of d = PaddedDim(dim), at most
// twice its root-mean-square norm sqrt(d*count*LocalSigma2), all over
// Scale. The noise passes twice its RMS with probability below
// exp(-d*count/2) (a sum of d*count subgaussian squares), so honest inputs
// never reach the bound; a decoder scales a sum past it down onto it,
// which bounds how far inputs that were not encoded honestly move the
// result.
func (p DistributedNoise) SumBound(dim, count int) float64 {
	l2, _ := p.Sensitivity(dim)
	s2, _ := p.LocalSigma2().Float64()
	noise := float64(2 * math.Sqrt(float64(float64(PaddedDim(dim)*count)*s2)))
	return float64(float64(float64(count)*l2)+noise) / p.Scale
}

// DecodeMean is the unweighted mean of the count contributions behind sum,
// as float32: DecodeSum divided by count.
func (p DistributedNoise) DecodeMean(sum []uint64, count int, rot *Rotation) []float32 {
	if count < 1 {
		panic("dp: DecodeMean: count < 1")
	}
	x := p.DecodeSum(sum, rot)
	out := make([]float32, len(x))
	n := float64(count)
	for j, v := range x {
		out[j] = float32(v / n)
	}
	return out
}
