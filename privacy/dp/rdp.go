package dp

import (
	"math"
	"math/big"
)

// DefaultOrders returns the Renyi orders of Opacus's RDPAccountant
// (DEFAULT_ALPHAS in opacus/accountants/rdp.py):
//
//	[1 + x/10 for x in 1..99] + [12, 13, ..., 63]
//
// 151 orders: 1.1 to 10.9 in steps of 0.1, then the integers 12 to 63. There
// is no order 11. Each fractional order is computed as 1 + x/10.0, as Python
// does, so 2, 3, ..., 10 come out as exact integers and take the integer
// formula. A new slice is returned on every call.
func DefaultOrders() []float64 {
	orders := make([]float64, 0, 151)
	for x := 1; x < 100; x++ {
		orders = append(orders, 1+float64(x)/10.0)
	}
	for a := 12; a < 64; a++ {
		orders = append(orders, float64(a))
	}
	return orders
}

// GaussianRDP is the RDP of one application of the Gaussian mechanism with
// noise multiplier z (noise standard deviation over L2 sensitivity), without
// sampling, at order alpha: alpha / (2 z^2). It is computed as Opacus does,
// alpha / (2 * z**2), so the two agree to the bit.
func GaussianRDP(z, alpha float64) float64 {
	return alpha / float64(2*float64(z*z))
}

// SampledGaussianRDP is the RDP, at order alpha > 1, of one step of the
// Poisson-subsampled Gaussian mechanism: each record is in the batch with
// probability q, and Gaussian noise of standard deviation z times the L2
// sensitivity is added to the sum (Mironov, Talwar and Zhang 2019, "Renyi
// Differential Privacy of the Sampled Gaussian Mechanism", section 3.3).
//
// It follows opacus/accountants/analysis/rdp.py (_compute_rdp) step for step:
// q == 0 gives 0; z == 0 gives +Inf; q == 1 gives the closed form
// alpha/(2 z^2); an integer alpha (float(alpha).is_integer()) takes the exact
// binomial expansion of A_alpha; a fractional alpha the two-sided series with
// erfc terms, summed until both new terms fall below exp(-30). The result is
// log(A_alpha)/(alpha-1). Where Opacus would raise (a log-space subtraction
// going negative in the fractional series, which does not happen for its
// parameter ranges), the result is NaN, which the conversion ignores.
func SampledGaussianRDP(q, z, alpha float64) float64 {
	switch {
	case q == 0:
		return 0
	case z == 0:
		return math.Inf(1)
	case q == 1:
		return GaussianRDP(z, alpha)
	case math.IsInf(alpha, 1):
		return math.Inf(1)
	}
	var logA float64
	if alpha == math.Trunc(alpha) {
		logA = logAInt(q, z, int(alpha))
	} else {
		logA = logAFrac(q, z, alpha)
	}
	return logA / (alpha - 1)
}

// logAInt is log(A_alpha) for an integer alpha:
//
//	A_alpha = sum_{i=0..alpha} binom(alpha, i) q^i (1-q)^(alpha-i) exp((i^2-i)/(2 z^2))
//
// The binomial coefficients are computed exactly (math/big) and rounded once
// to float64.
func logAInt(q, sigma float64, alpha int) float64 {
	logA := math.Inf(-1)
	logQ, log1Q := math.Log(q), math.Log(1-q)
	twoSigma2 := float64(2 * float64(sigma*sigma))
	c := big.NewInt(1)
	var f big.Float
	for i := 0; i <= alpha; i++ {
		if i > 0 {
			// binom(alpha, i) = binom(alpha, i-1) * (alpha-i+1) / i, exactly.
			c.Mul(c, big.NewInt(int64(alpha-i+1)))
			c.Quo(c, big.NewInt(int64(i)))
		}
		binom, _ := f.SetInt(c).Float64()
		logCoef := math.Log(binom) + float64(float64(i)*logQ) + float64(float64(alpha-i)*log1Q)
		s := logCoef + float64(i*i-i)/twoSigma2
		logA = logAdd(logA, s)
	}
	return logA
}

// logAFrac is log(A_alpha) for a fractional alpha, as two integrals split at
// z0 = sigma^2 log(1/q - 1) + 1/2, each a series in the generalized binomial
// coefficients binom(alpha, i), whose sign alternates once i > alpha + 1.
func logAFrac(q, sigma, alpha float64) float64 {
	logA0, logA1 := math.Inf(-1), math.Inf(-1)
	logQ, log1Q := math.Log(q), math.Log(1-q)
	sigma2 := float64(sigma * sigma)
	twoSigma2 := float64(2 * sigma2)
	z0 := float64(sigma2*math.Log(1/q-1)) + 0.5
	sqrt2Sigma := float64(math.Sqrt2 * sigma)
	logHalf := math.Log(0.5)
	// log|binom(alpha, i)| and its sign, carried from one i to the next:
	// binom(alpha, i) = binom(alpha, i-1) * (alpha - i + 1) / i.
	logCoef, positive := 0.0, true
	for i := 0; ; i++ {
		if i > 0 {
			r := (alpha - float64(i) + 1) / float64(i)
			if r < 0 {
				positive = !positive
				r = -r
			}
			logCoef += math.Log(r)
		}
		fi := float64(i)
		j := alpha - fi

		logT0 := logCoef + float64(fi*logQ) + float64(j*log1Q)
		logT1 := logCoef + float64(j*logQ) + float64(fi*log1Q)

		logE0 := logHalf + logErfc((fi-z0)/sqrt2Sigma)
		logE1 := logHalf + logErfc((z0-j)/sqrt2Sigma)

		logS0 := logT0 + float64(i*i-i)/twoSigma2 + logE0
		logS1 := logT1 + float64(float64(j*j)-j)/twoSigma2 + logE1

		if positive {
			logA0 = logAdd(logA0, logS0)
			logA1 = logAdd(logA1, logS1)
		} else {
			logA0 = logSub(logA0, logS0)
			logA1 = logSub(logA1, logS1)
		}
		if math.IsNaN(logA0) || math.IsNaN(logA1) {
			return math.NaN()
		}
		if math.Max(logS0, logS1) < -30 {
			break
		}
	}
	return logAdd(logA0, logA1)
}

// logAdd returns log(exp(x) + exp(y)).
func logAdd(x, y float64) float64 {
	a, b := math.Min(x, y), math.Max(x, y)
	if math.IsInf(a, -1) {
		return b
	}
	return math.Log1p(math.Exp(a-b)) + b
}

// logSub returns log(exp(x) - exp(y)) for x >= y, and NaN for x < y (where
// Opacus raises ValueError).
func logSub(x, y float64) float64 {
	switch {
	case x < y:
		return math.NaN()
	case math.IsInf(y, -1):
		return x
	case x == y:
		return math.Inf(-1)
	}
	d := math.Expm1(x - y)
	if math.IsInf(d, 1) {
		return x // Python's math.expm1 raises OverflowError here; Opacus returns x
	}
	return math.Log(d) + y
}

// logErfc returns log(erfc(x)), accurate where erfc(x) underflows: beyond
// x = 20 it uses the asymptotic expansion
//
//	erfc(x) = exp(-x^2)/(x sqrt(pi)) * sum_n (-1)^n (2n-1)!! / (2x^2)^n
//
// whose first ten terms leave an error below 1e-20 there.
func logErfc(x float64) float64 {
	if x < 20 {
		return math.Log(math.Erfc(x))
	}
	u := 1 / float64(2*float64(x*x))
	sum, term := 1.0, 1.0
	for n := 1; n <= 10; n++ {
		term = float64(-term * float64(float64(2*n-1)*u))
		sum += term
	}
	return -float64(x*x) - math.Log(x) - 0.5*math.Log(math.Pi) + math.Log(sum)
}

// PrivacySpent converts an RDP curve (rdp[i] at orders[i]) to (epsilon,
// delta)-DP exactly as Opacus's get_privacy_spent (Balle et al. 2020,
// "Hypothesis Testing Interpretations and Renyi Differential Privacy",
// Theorem 21):
//
//	eps(alpha) = rdp(alpha) - (log(delta) + log(alpha))/(alpha - 1) + log((alpha - 1)/alpha)
//
// It returns the smallest eps(alpha), ignoring NaN, and the order that
// attains it (the first such order on a tie). If every eps(alpha) is NaN it
// returns (+Inf, NaN). orders and rdp must have the same length, or it
// panics.
func PrivacySpent(orders, rdp []float64, delta float64) (epsilon, alpha float64) {
	if len(orders) != len(rdp) {
		panic("dp: PrivacySpent: orders and rdp differ in length")
	}
	epsilon, alpha = math.Inf(1), math.NaN()
	found := false
	logDelta := math.Log(delta)
	for i, a := range orders {
		e := rdp[i] - (logDelta+math.Log(a))/(a-1) + math.Log((a-1)/a)
		if math.IsNaN(e) {
			continue
		}
		if !found || e < epsilon {
			epsilon, alpha, found = e, a, true
		}
	}
	return epsilon, alpha
}
