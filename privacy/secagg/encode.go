package secagg

import (
	"errors"
	"fmt"
	"math"
)

// Encoding is the fixed-point encoding of PRIVACY.md phase 2 without DP: a
// participant with FedAvg weight w (its example count) and update x sends
// the vector [w, w*x] as integers mod 2^64, w clamped to MaxWeight
// (secagg_max_weight), each coordinate of x clamped to [-Clip, Clip]
// (secagg_clip), every coordinate multiplied by Scale (secagg_scale) and
// rounded to the nearest integer, ties away from zero, two's complement.
// The sum of the encodings of n participants decodes to
// [sum w_i, sum w_i*x_i], from which FedAvg's mean is the quotient.
//
// Choose Scale a power of two: then multiplying by it and dividing by it
// are exact in float64, and only the rounding to the grid is left.
type Encoding struct {
	Clip      float64 // c: each update coordinate is clamped to [-c, c]
	Scale     float64 // fixed-point units per 1.0
	MaxWeight float64 // W_max: weights are clamped to [0, W_max]
}

// Errors of the encoding. Test for them with errors.Is.
var (
	// ErrEncoding reports parameters that are not finite and positive, or
	// whose sum over n participants could pass 2^63 and wrap.
	ErrEncoding = errors.New("secagg: bad encoding parameters")
	// ErrNonFinite reports a NaN or infinite weight or coordinate.
	ErrNonFinite = errors.New("secagg: non-finite value")
	// ErrNegativeWeight reports a weight below zero.
	ErrNegativeWeight = errors.New("secagg: negative weight")
	// ErrOutOfBounds reports a decoded sum that n participants within the
	// encoding's bounds cannot produce (PRIVACY.md phase 3: Abandon).
	ErrOutOfBounds = errors.New("secagg: sum out of the encoding's bounds")
)

// limits returns the largest encoded magnitudes of one participant: of the
// weight coordinate, round(W_max * Scale), and of an update coordinate,
// round((W_max * c) * Scale). Encode computes its products in the same
// order, and float64 rounding is monotonic, so no encoding exceeds them.
func (e Encoding) limits() (weight, value float64, err error) {
	for _, v := range []float64{e.Clip, e.Scale, e.MaxWeight} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
			return 0, 0, fmt.Errorf("%w: clip %v, scale %v, max weight %v", ErrEncoding, e.Clip, e.Scale, e.MaxWeight)
		}
	}
	weight = math.Round(float64(e.MaxWeight * e.Scale))
	value = math.Round(float64(float64(e.MaxWeight*e.Clip) * e.Scale))
	if weight >= 1<<63 || value >= 1<<63 {
		return 0, 0, fmt.Errorf("%w: max weight %v * clip %v * scale %v is 2^63 or more", ErrEncoding, e.MaxWeight, e.Clip, e.Scale)
	}
	return weight, value, nil
}

// Validate reports whether the sum of n encodings can never wrap: every
// coordinate of the sum stays within (-2^63, 2^63), so its two's-complement
// reading is the true sum. n is the most inputs a sum holds (|U2|).
func (e Encoding) Validate(n int) error {
	weight, value, err := e.limits()
	if err != nil {
		return err
	}
	if n < 1 {
		return fmt.Errorf("%w: n = %d", ErrEncoding, n)
	}
	if lim := uint64(math.MaxInt64) / uint64(n); uint64(weight) > lim || uint64(value) > lim {
		return fmt.Errorf("%w: %d inputs of up to %v could pass 2^63", ErrEncoding, n, max(weight, value))
	}
	return nil
}

// Encode is a participant's phase-2 encoding of weight w and update x: the
// len(x)+1 words [w, w*x] described at Encoding. A w above MaxWeight and
// coordinates beyond ±Clip are clamped; a NaN or infinite value
// (ErrNonFinite) and a negative w (ErrNegativeWeight) are refused.
func (e Encoding) Encode(w float64, x []float32) ([]uint64, error) {
	if _, _, err := e.limits(); err != nil {
		return nil, err
	}
	if math.IsNaN(w) || math.IsInf(w, 0) {
		return nil, fmt.Errorf("%w: weight %v", ErrNonFinite, w)
	}
	if w < 0 {
		return nil, fmt.Errorf("%w: %v", ErrNegativeWeight, w)
	}
	w = min(w, e.MaxWeight)
	out := make([]uint64, 1+len(x))
	out[0] = uint64(int64(math.Round(float64(w * e.Scale))))
	for k, xk := range x {
		v := float64(xk)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w: coordinate %d is %v", ErrNonFinite, k, v)
		}
		v = max(-e.Clip, min(e.Clip, v))
		out[1+k] = uint64(int64(math.Round(float64(float64(w*v) * e.Scale))))
	}
	return out, nil
}

// Decode reads the sum of n encodings (phase 3, after Unmask): the total
// weight sum w_i and the vector sum w_i*x_i. It checks the sum against what
// n participants within the bounds can produce (total weight in
// [0, n*W_max], each coordinate within n*W_max*c, on the integer grid):
// ErrOutOfBounds otherwise. n must pass Validate.
//
// Against the exact sums over the clamped inputs (real arithmetic, w_i
// clamped to W_max, x_i to ±c), each decoded coordinate is off by at most
// ErrorBound(n). Decoding is one conversion and one division per
// coordinate, nothing a compiler may fuse, so every member that decodes the
// same sum gets the same floats to the bit, as the Commit needs.
func (e Encoding) Decode(sum []uint64, n int) (w float64, wx []float64, err error) {
	if err := e.Validate(n); err != nil {
		return 0, nil, err
	}
	if len(sum) == 0 {
		return 0, nil, fmt.Errorf("%w: no weight coordinate", ErrOutOfBounds)
	}
	weight, value, _ := e.limits()
	wLim, vLim := int64(weight)*int64(n), int64(value)*int64(n) // no overflow: Validate
	sw := int64(sum[0])
	if sw < 0 || sw > wLim {
		return 0, nil, fmt.Errorf("%w: total weight %d, limit %d", ErrOutOfBounds, sw, wLim)
	}
	wx = make([]float64, len(sum)-1)
	for k, u := range sum[1:] {
		v := int64(u)
		if v < -vLim || v > vLim {
			return 0, nil, fmt.Errorf("%w: coordinate %d is %d, limit %d", ErrOutOfBounds, k, v, vLim)
		}
		wx[k] = float64(v) / e.Scale
	}
	return float64(sw) / e.Scale, wx, nil
}

// ErrorBound is the most a coordinate of Decode's result for n inputs is
// off the exact sum over the clamped inputs:
//
//	n/(2 Scale) + 5u * n * (W_max * max(c, 1) + 1/Scale),  u = 2^-53.
//
// The first term is the rounding to the grid, half a unit per input. The
// second is float64 rounding: computing w*x and then (w*x)*Scale, each
// correct to a relative u, and reading the integer sum back as w*x, two
// more; together under 5u of the largest magnitudes, n*W_max*max(c, 1) (the
// max covers the weight coordinate, whose "x" is 1).
func (e Encoding) ErrorBound(n int) float64 {
	const u = 0x1p-53
	fn := float64(n)
	grid := float64(fn * 0.5 / e.Scale)
	mag := float64(e.MaxWeight*max(e.Clip, 1)) + float64(1/e.Scale)
	return grid + float64(float64(5*u*fn)*mag)
}
