package dp

import (
	"errors"
	"fmt"
	"math"
)

// ErrNonFinite reports a vector with a NaN or infinite coordinate (or norm):
// clipping would turn it into zeros or NaNs and hide it.
var ErrNonFinite = errors.New("dp: non-finite value")

// ErrBadParam reports a mechanism parameter out of its range.
var ErrBadParam = errors.New("dp: bad parameter")

// L2Norm returns the Euclidean norm of x, accumulated in float64 in index
// order.
func L2Norm(x []float32) float64 {
	var s float64
	for _, v := range x {
		f := float64(v)
		s += float64(f * f)
	}
	return math.Sqrt(s)
}

// ClipL2 scales x in place so that its L2 norm is at most s, and returns
// the factor it applied (1 when x was already within the bound; x is then
// untouched). The bound holds for the float32 values that result, with the
// norm computed as L2Norm computes it: if rounding to float32 leaves it a
// hair above s, the values shrink again by a relative 2^-22 until it does
// not, and the factor returned is the product.
//
// s must be positive and finite; a vector with a NaN or infinite coordinate
// is left as it is and reported with ErrNonFinite.
func ClipL2(x []float32, s float64) (factor float64, err error) {
	if !(s > 0) || math.IsInf(s, 0) {
		return 0, fmt.Errorf("%w: clip norm %v, want > 0 and finite", ErrBadParam, s)
	}
	n := L2Norm(x)
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("%w: norm %v", ErrNonFinite, n)
	}
	if n <= s {
		return 1, nil
	}
	f := s / n
	factor = 1
	for {
		for j, v := range x {
			x[j] = float32(float64(v) * f)
		}
		factor = float64(factor * f)
		if L2Norm(x) <= s {
			return factor, nil
		}
		f = 1 - 0x1p-22
	}
}

// SumClipped is the per-example clipping of DP-SGD (Abadi et al. 2016): it
// adds every example's gradient in grads, scaled down to L2 norm at most c
// where it is longer, to sum (in float64, in the order given), and returns
// how many gradients were clipped. Every gradient must have len(sum)
// coordinates, or SumClipped panics.
//
// A clipped gradient is scaled by c/n shrunk by a relative (d+4)*2^-53,
// which covers the rounding of its computed norm n, so the exact norm of
// what is added is at most c. A gradient with a NaN or infinite coordinate
// stops the sum with ErrNonFinite (sum then holds the gradients before it).
func SumClipped(sum []float64, grads [][]float32, c float64) (clipped int, err error) {
	if !(c > 0) || math.IsInf(c, 0) {
		return 0, fmt.Errorf("%w: example clip %v, want > 0 and finite", ErrBadParam, c)
	}
	slack := 1 - float64(float64(len(sum)+4)*0x1p-53)
	for i, g := range grads {
		if len(g) != len(sum) {
			panic(fmt.Sprintf("dp: SumClipped: gradient %d has %d coordinates, want %d", i, len(g), len(sum)))
		}
		n := L2Norm(g)
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return clipped, fmt.Errorf("%w: gradient %d: norm %v", ErrNonFinite, i, n)
		}
		if n <= c {
			for j, v := range g {
				sum[j] += float64(v)
			}
			continue
		}
		clipped++
		f := float64(float64(c/n) * slack)
		for j, v := range g {
			sum[j] += float64(float64(v) * f)
		}
	}
	return clipped, nil
}
