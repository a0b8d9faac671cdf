package dp

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"
)

// The exact samplers of Canonne, Kamath and Steinke, "The Discrete Gaussian
// for Differential Privacy" (NeurIPS 2020), section 5: Bernoulli(exp(-gamma))
// for a rational gamma (their Algorithm 1), the discrete Laplace (Algorithm
// 2) and the discrete Gaussian by rejection from it (Algorithm 3). Every
// probability is a ratio of integers and every trial compares a uniform
// integer with it, so the samples follow the stated distributions exactly:
// no floating point touches them, and there is no Gaussian rounded to the
// grid. Integers stay in uint64 where they fit and move to math/big where
// they do not; both paths compute the same probability, so which one runs
// changes the speed, never the distribution.

// maxT bounds the discrete Laplace scale t = floor(sigma) + 1 so that
// U + t*V stays far from overflowing int64 (V is geometric: P(V >= v) = e^-v).
const maxT = 1 << 52

// BernoulliExp returns true with probability exp(-num/den) exactly, for
// num >= 0 and den > 0 (CKS Algorithm 1).
func (s *Source) BernoulliExp(num, den uint64) (bool, error) {
	if den == 0 {
		panic("dp: BernoulliExp: zero denominator")
	}
	// gamma > 1: one Bernoulli(exp(-1)) for every whole unit, all of which
	// must succeed, then the remainder.
	for num > den {
		ok, err := s.bernoulliExpAtMost1(1, 1)
		if err != nil || !ok {
			return false, err
		}
		num -= den
	}
	return s.bernoulliExpAtMost1(num, den)
}

// bernoulliExpAtMost1 is BernoulliExp for gamma = num/den in [0, 1]: draw
// A_k ~ Bernoulli(gamma/k) for k = 1, 2, ... until one fails; the index K of
// the failure is odd with probability exp(-gamma).
func (s *Source) bernoulliExpAtMost1(num, den uint64) (bool, error) {
	for k := uint64(1); ; k++ {
		hi, dk := bits.Mul64(den, k)
		var a bool
		var err error
		if hi == 0 {
			a, err = s.Bernoulli(num, dk)
		} else {
			a, err = s.bernoulliBig(new(big.Int).SetUint64(num), new(big.Int).Mul(new(big.Int).SetUint64(den), new(big.Int).SetUint64(k)))
		}
		if err != nil {
			return false, err
		}
		if !a {
			return k%2 == 1, nil
		}
	}
}

// bernoulliBig returns true with probability num/den.
func (s *Source) bernoulliBig(num, den *big.Int) (bool, error) {
	if _, err := s.UniformBig(&s.u, den); err != nil {
		return false, err
	}
	return s.u.Cmp(num) < 0, nil
}

// bernoulliExpBig is BernoulliExp for big num and den.
func (s *Source) bernoulliExpBig(num, den *big.Int) (bool, error) {
	if num.IsUint64() && den.IsUint64() {
		return s.BernoulliExp(num.Uint64(), den.Uint64())
	}
	whole, rem := &s.whole, &s.rem
	whole.QuoRem(num, den, rem)
	// One Bernoulli(exp(-1)) per whole unit of gamma; all must succeed.
	// Each fails with probability 1 - 1/e, so the loop is short whatever
	// gamma is.
	for one := big.NewInt(1); whole.Sign() > 0; whole.Sub(whole, one) {
		ok, err := s.bernoulliExpAtMost1(1, 1)
		if err != nil || !ok {
			return false, err
		}
	}
	for k := int64(1); ; k++ {
		s.dk.Mul(den, s.kk.SetInt64(k))
		a, err := s.bernoulliBig(rem, &s.dk)
		if err != nil {
			return false, err
		}
		if !a {
			return k%2 == 1, nil
		}
	}
}

// DiscreteLaplace returns a sample of the discrete Laplace distribution with
// scale t >= 1, P(x) proportional to exp(-|x|/t) on the integers (CKS
// Algorithm 2 with s = 1). t must be below 2^52.
func (s *Source) DiscreteLaplace(t uint64) (int64, error) {
	if t == 0 || t >= maxT {
		panic(fmt.Sprintf("dp: DiscreteLaplace: scale %d out of [1, 2^52)", t))
	}
	for {
		u, err := s.Uniform(t)
		if err != nil {
			return 0, err
		}
		d, err := s.BernoulliExp(u, t)
		if err != nil {
			return 0, err
		}
		if !d {
			continue
		}
		var v uint64
		for {
			a, err := s.BernoulliExp(1, 1)
			if err != nil {
				return 0, err
			}
			if !a {
				break
			}
			v++
		}
		hi, tv := bits.Mul64(t, v)
		x := u + tv
		if hi != 0 || x < tv || x > math.MaxInt64 {
			continue // probability below exp(-2^11): a rejection keeps it exact
		}
		b, err := s.Bit()
		if err != nil {
			return 0, err
		}
		if b == 1 && x == 0 {
			continue
		}
		if b == 1 {
			return -int64(x), nil
		}
		return int64(x), nil
	}
}

// DiscreteGaussian samples the discrete Gaussian N_Z(0, sigma^2) on the
// integers, P(x) proportional to exp(-x^2 / (2 sigma^2)), exactly (CKS
// Algorithm 3): draw Y from the discrete Laplace of scale t = floor(sigma)+1
// and keep it with probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)).
// sigma^2 is a rational, so the acceptance probability is the exact ratio
//
//	(|Y| q t - p)^2 / (2 p q t^2)    for sigma^2 = p/q.
//
// Its variance is slightly below sigma^2 (by 2.1e-7 relative at sigma = 1,
// less than 1e-70 from sigma = 3 on; 0.2150 for sigma^2 = 0.25); under zero-out or replacement of an
// integer vector x of L2 norm at most Delta it gives RDP
// alpha Delta^2 / (2 sigma^2) at every order alpha, as the continuous
// Gaussian does (CKS Theorem 14 and Corollary 9).
//
// A DiscreteGaussian holds scratch space: it is not safe for concurrent use
// (use one per goroutine; they are cheap).
type DiscreteGaussian struct {
	sigma2 big.Rat
	p, q   big.Int // sigma^2 = p/q in lowest terms
	t      uint64  // floor(sigma) + 1
	// den = 2 p q t^2 and qt = q t, also as uint64 when they fit
	den, qt       big.Int
	denU, qtU, pU uint64
	small         bool
	// scratch
	num, a big.Int
}

// ErrSigma reports a noise scale the sampler cannot use.
var ErrSigma = errors.New("dp: bad noise scale")

// NewDiscreteGaussian returns a sampler of N_Z(0, sigma2). sigma2 must be
// positive and below 2^100 (sigma below 2^50, the integer grid's reach).
func NewDiscreteGaussian(sigma2 *big.Rat) (*DiscreteGaussian, error) {
	if sigma2 == nil || sigma2.Sign() <= 0 {
		return nil, fmt.Errorf("%w: sigma^2 = %v, want > 0", ErrSigma, sigma2)
	}
	g := &DiscreteGaussian{}
	g.sigma2.Set(sigma2)
	g.p.Set(g.sigma2.Num())
	g.q.Set(g.sigma2.Denom())
	// floor(sqrt(p/q)) = floor(sqrt(floor(p/q))).
	var fl big.Int
	fl.Quo(&g.p, &g.q)
	fl.Sqrt(&fl)
	if !fl.IsUint64() || fl.Uint64() >= 1<<50 {
		return nil, fmt.Errorf("%w: sigma^2 = %v, want sigma < 2^50", ErrSigma, sigma2.FloatString(6))
	}
	g.t = fl.Uint64() + 1
	var t big.Int
	t.SetUint64(g.t)
	g.qt.Mul(&g.q, &t)
	g.den.Mul(&g.p, &g.qt)
	g.den.Mul(&g.den, &t)
	g.den.Lsh(&g.den, 1)
	if g.den.IsUint64() && g.p.IsUint64() && g.qt.IsUint64() {
		g.small = true
		g.denU, g.qtU, g.pU = g.den.Uint64(), g.qt.Uint64(), g.p.Uint64()
	}
	return g, nil
}

// Sigma2 returns sigma^2.
func (g *DiscreteGaussian) Sigma2() *big.Rat { return new(big.Rat).Set(&g.sigma2) }

// Sample returns one sample.
func (g *DiscreteGaussian) Sample(src *Source) (int64, error) {
	for {
		y, err := src.DiscreteLaplace(g.t)
		if err != nil {
			return 0, err
		}
		abs := uint64(y)
		if y < 0 {
			abs = uint64(-y)
		}
		var c bool
		if n, ok := g.smallNum(abs); ok {
			c, err = src.BernoulliExp(n, g.denU)
		} else {
			g.a.SetUint64(abs)
			g.a.Mul(&g.a, &g.qt)
			g.a.Sub(&g.a, &g.p)
			g.num.Mul(&g.a, &g.a)
			c, err = src.bernoulliExpBig(&g.num, &g.den)
		}
		if err != nil {
			return 0, err
		}
		if c {
			return y, nil
		}
	}
}

// smallNum returns (|Y| q t - p)^2 when the sampler has its uint64 form and
// the value fits.
func (g *DiscreteGaussian) smallNum(abs uint64) (uint64, bool) {
	if !g.small {
		return 0, false
	}
	hi, a := bits.Mul64(abs, g.qtU)
	if hi != 0 {
		return 0, false
	}
	var d uint64
	if a >= g.pU {
		d = a - g.pU
	} else {
		d = g.pU - a
	}
	hi, n := bits.Mul64(d, d)
	return n, hi == 0
}

// AddTo adds an independent sample to every element of dst. If the source
// fails, dst holds the values reached so far and the error is returned.
func (g *DiscreteGaussian) AddTo(dst []int64, src *Source) error {
	for i := range dst {
		y, err := g.Sample(src)
		if err != nil {
			return err
		}
		dst[i] += y
	}
	return nil
}

// Sigma2AtLeast returns a rational r >= x that is close to it and has a
// small denominator, so the sampler stays on its fast path: the smallest
// multiple of 2^-k at or above x, where 2^-k is about 2^-24 times x (a
// relative excess below 2^-23). Noise drawn with r is at least the noise x
// asks for, so an account kept for x stays an upper bound. x must be
// positive and finite.
func Sigma2AtLeast(x *big.Rat) *big.Rat {
	if x.Sign() <= 0 {
		panic("dp: Sigma2AtLeast: x <= 0")
	}
	// k with 2^-k close to 2^-24 x: x is about 2^(Num.BitLen - Denom.BitLen).
	k := 24 - (x.Num().BitLen() - x.Denom().BitLen())
	if k < 0 {
		k = 0
	}
	var num big.Int
	num.Lsh(x.Num(), uint(k))
	var rem big.Int
	num.QuoRem(&num, x.Denom(), &rem)
	if rem.Sign() != 0 {
		num.Add(&num, big.NewInt(1))
	}
	den := new(big.Int).Lsh(big.NewInt(1), uint(k))
	return new(big.Rat).SetFrac(&num, den)
}

// SquareOf returns v^2 exactly as a rational (v a finite float64).
func SquareOf(v float64) *big.Rat {
	r := new(big.Rat).SetFloat64(v)
	if r == nil {
		panic("dp: SquareOf: non-finite value")
	}
	return r.Mul(r, r)
}
