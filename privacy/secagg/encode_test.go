package secagg

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// exactSums is the reference the encoding is held to: the sums
// sum w_i and sum w_i*x_i over the clamped inputs, in exact rational
// arithmetic.
func exactSums(e Encoding, ws []float64, xs [][]float32) (*big.Rat, []*big.Rat) {
	sw := new(big.Rat)
	swx := make([]*big.Rat, len(xs[0]))
	for k := range swx {
		swx[k] = new(big.Rat)
	}
	for i, w := range ws {
		w = min(w, e.MaxWeight)
		rw := new(big.Rat).SetFloat64(w)
		sw.Add(sw, rw)
		for k, x := range xs[i] {
			v := max(-e.Clip, min(e.Clip, float64(x)))
			swx[k].Add(swx[k], new(big.Rat).Mul(rw, new(big.Rat).SetFloat64(v)))
		}
	}
	return sw, swx
}

// diff is |got - want|, computed exactly and then rounded.
func diff(got float64, want *big.Rat) float64 {
	d, _ := new(big.Rat).Sub(new(big.Rat).SetFloat64(got), want).Float64()
	return math.Abs(d)
}

// TestEncodeDecodeWithinBound: one input decodes to itself within
// ErrorBound(1), for a power-of-two scale and for one that is not; and the
// bound is tight: half a grid unit is nearly reached.
func TestEncodeDecodeWithinBound(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, e := range []Encoding{testEncoding, {Clip: 0.5, Scale: 1e6, MaxWeight: 1000}, {Clip: 4, Scale: 1 << 10, MaxWeight: 1}} {
		worst := 0.0
		for trial := range 20 {
			w := float64(rnd.IntN(int(e.MaxWeight)*5/4 + 1))
			if trial%3 == 0 {
				w = rnd.Float64() * e.MaxWeight // fractional weights too
			}
			x := make([]float32, 500)
			for k := range x {
				x[k] = float32((rnd.Float64()*2.5 - 1.25) * e.Clip)
			}
			x[0], x[1] = 0, float32(math.SmallestNonzeroFloat32)
			enc, err := e.Encode(w, x)
			if err != nil {
				t.Fatal(err)
			}
			gw, gwx, err := e.Decode(enc, 1)
			if err != nil {
				t.Fatal(err)
			}
			sw, swx := exactSums(e, []float64{w}, [][]float32{x})
			bound := e.ErrorBound(1)
			if d := diff(gw, sw); d > bound {
				t.Fatalf("%+v: weight off by %g > %g", e, d, bound)
			}
			for k := range gwx {
				d := diff(gwx[k], swx[k])
				if d > bound {
					t.Fatalf("%+v: coordinate %d off by %g > %g", e, k, d, bound)
				}
				worst = max(worst, d)
			}
		}
		if worst < 0.45/e.Scale {
			t.Errorf("%+v: worst error %g, the bound %g is loose", e, worst, e.ErrorBound(1))
		}
	}
}

func TestEncodeClampsAndRefuses(t *testing.T) {
	e := Encoding{Clip: 2, Scale: 1 << 8, MaxWeight: 100}
	enc, err := e.Encode(1e9, []float32{5, -5, 1.5, float32(math.MaxFloat32)})
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{100 << 8, 200 << 8, -200 << 8, 150 << 8, 200 << 8}
	for k, w := range want {
		if int64(enc[k]) != w {
			t.Errorf("word %d: %d, want %d", k, int64(enc[k]), w)
		}
	}
	// Rounding is to the nearest grid point, ties away from zero.
	enc, _ = e.Encode(1, []float32{1.5 / 256, -1.5 / 256, 0.25 / 256})
	if int64(enc[1]) != 2 || int64(enc[2]) != -2 || enc[3] != 0 {
		t.Errorf("rounding: %d %d %d", int64(enc[1]), int64(enc[2]), int64(enc[3]))
	}
	for _, w := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if _, err := e.Encode(w, []float32{1}); !errors.Is(err, ErrNonFinite) {
			t.Errorf("weight %v: %v, want ErrNonFinite", w, err)
		}
	}
	if _, err := e.Encode(-1, []float32{1}); !errors.Is(err, ErrNegativeWeight) {
		t.Errorf("weight -1: %v, want ErrNegativeWeight", err)
	}
	for _, x := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		if _, err := e.Encode(1, []float32{0, x}); !errors.Is(err, ErrNonFinite) {
			t.Errorf("coordinate %v: %v, want ErrNonFinite", x, err)
		}
	}
	for _, bad := range []Encoding{{}, {Clip: -1, Scale: 1, MaxWeight: 1}, {Clip: 1, Scale: math.NaN(), MaxWeight: 1},
		{Clip: 1, Scale: 1, MaxWeight: math.Inf(1)}, {Clip: 1e10, Scale: 1e10, MaxWeight: 1e10}} {
		if _, err := bad.Encode(1, nil); !errors.Is(err, ErrEncoding) {
			t.Errorf("%+v: Encode: %v, want ErrEncoding", bad, err)
		}
		if err := bad.Validate(1); !errors.Is(err, ErrEncoding) {
			t.Errorf("%+v: Validate: %v, want ErrEncoding", bad, err)
		}
	}
	if err := e.Validate(0); !errors.Is(err, ErrEncoding) {
		t.Errorf("Validate(0): %v", err)
	}
}

// TestValidateNoWrap: Validate admits exactly the n for which the sum of n
// largest inputs stays below 2^63, and at that n the sum of the largest
// inputs, positive or negative, decodes exactly; one more input wraps, and
// Decode refuses the wrapped sum.
func TestValidateNoWrap(t *testing.T) {
	e := Encoding{Clip: 16, Scale: 1 << 40, MaxWeight: 1 << 10} // an input's largest word is 2^54
	const nMax = (1<<63 - 1) >> 54                              // 511
	if err := e.Validate(nMax); err != nil {
		t.Fatalf("Validate(%d): %v", nMax, err)
	}
	if err := e.Validate(nMax + 1); !errors.Is(err, ErrEncoding) {
		t.Fatalf("Validate(%d): %v, want ErrEncoding", nMax+1, err)
	}
	for _, x := range []float32{16, -16} {
		in, _ := e.Encode(1<<10, []float32{x})
		ys := make([][]uint64, nMax)
		for i := range ys {
			ys[i] = in
		}
		sum, _ := Sum(ys)
		w, wx, err := e.Decode(sum, nMax)
		if err != nil || w != nMax<<10 || wx[0] != float64(x)*nMax*(1<<10) {
			t.Fatalf("x = %v: %v %v %v", x, w, wx, err)
		}
		wrapped, _ := Sum(append(ys, in))
		if _, _, err := e.Decode(wrapped, nMax); !errors.Is(err, ErrOutOfBounds) {
			t.Fatalf("x = %v: a wrapped sum decoded: %v", x, err)
		}
	}
}

// TestDecodeBounds: sums n inputs cannot produce are refused, so a wrong
// unmasking (noise) or an out-of-range total weight is caught.
func TestDecodeBounds(t *testing.T) {
	e := Encoding{Clip: 1, Scale: 1 << 4, MaxWeight: 10}
	const n = 3
	lim := int64(n * 10 << 4)
	ok := []uint64{uint64(lim), uint64(lim), uint64(-lim)}
	if _, _, err := e.Decode(ok, n); err != nil {
		t.Fatalf("the extreme sum: %v", err)
	}
	for _, bad := range [][]uint64{
		{uint64(lim + 1), 0},
		{uint64(1<<64 - 1), 0}, // total weight -1
		{0, uint64(lim + 1)},
		{0, uint64(-lim - 1)},
		{0, 1 << 63},
		{},
	} {
		if _, _, err := e.Decode(bad, n); !errors.Is(err, ErrOutOfBounds) {
			t.Errorf("%v: %v, want ErrOutOfBounds", bad, err)
		}
	}
	noise := Expand(Seed{9}, 1000)
	if _, _, err := testEncoding.Decode(noise, 50); !errors.Is(err, ErrOutOfBounds) {
		t.Errorf("noise decoded: %v", err)
	}
	if _, _, err := e.Decode(ok, 0); !errors.Is(err, ErrEncoding) {
		t.Errorf("n = 0: %v", err)
	}
}
