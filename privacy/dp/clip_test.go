package dp

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestClipL2(t *testing.T) {
	// Within the bound: untouched, factor 1.
	x := []float32{3, 4}
	if f, err := ClipL2(x, 5); err != nil || f != 1 || !slices.Equal(x, []float32{3, 4}) {
		t.Errorf("norm 5 at bound 5: factor %v, %v, x %v", f, err, x)
	}
	// Above: scaled to the bound, direction kept, factor S/norm.
	x = []float32{3, 4}
	f, err := ClipL2(x, 1)
	if err != nil || math.Abs(f-0.2) > 1e-6 || math.Abs(float64(x[0])-0.6) > 1e-6 || math.Abs(float64(x[1])-0.8) > 1e-6 || L2Norm(x) > 1 {
		t.Errorf("clip (3,4) to 1: factor %v, %v, x %v", f, err, x)
	}
	// The bound holds for the float32 result, for many random vectors and
	// bounds; the factor is what was applied.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		d := 1 + rng.IntN(300)
		x := make([]float32, d)
		for j := range x {
			x[j] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()*3))
		}
		orig := slices.Clone(x)
		n := L2Norm(x)
		s := n * rng.Float64() * 1.5
		if s == 0 {
			continue
		}
		f, err := ClipL2(x, s)
		if err != nil {
			t.Fatal(err)
		}
		if got := L2Norm(x); got > s {
			t.Fatalf("vector %d: norm %v after clipping to %v", i, got, s)
		}
		if n <= s {
			if f != 1 || !slices.Equal(x, orig) {
				t.Fatalf("vector %d within the bound was changed", i)
			}
			continue
		}
		if math.Abs(f-s/n) > 1e-6*s/n {
			t.Fatalf("vector %d: factor %v, want about %v", i, f, s/n)
		}
	}
	// Errors: a bad bound, a non-finite vector (left as it is).
	for _, s := range []float64{0, -1, math.Inf(1), math.NaN()} {
		if _, err := ClipL2([]float32{1}, s); !errors.Is(err, ErrBadParam) {
			t.Errorf("bound %v: %v", s, err)
		}
	}
	for _, v := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
		x := []float32{1, v}
		if _, err := ClipL2(x, 1); !errors.Is(err, ErrNonFinite) || x[0] != 1 {
			t.Errorf("%v: %v, x %v", v, err, x)
		}
	}
	// A float32 overflow in the norm is computed in float64 and clipped.
	x = []float32{math.MaxFloat32, math.MaxFloat32}
	if _, err := ClipL2(x, 1); err != nil || L2Norm(x) > 1 {
		t.Errorf("huge: %v, norm %v", err, L2Norm(x))
	}
}

func TestSumClipped(t *testing.T) {
	grads := [][]float32{{3, 4}, {0.3, 0.4}, {0, -10}}
	sum := make([]float64, 2)
	clipped, err := SumClipped(sum, grads, 1)
	if err != nil || clipped != 2 {
		t.Fatalf("clipped %d, %v", clipped, err)
	}
	want := []float64{0.6 + 0.3, 0.8 + 0.4 - 1}
	for i := range sum {
		if math.Abs(sum[i]-want[i]) > 1e-7 {
			t.Errorf("sum %v, want %v", sum, want)
		}
	}
	// Every clipped gradient's contribution has norm at most c.
	rng := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		g := make([]float32, 1+rng.IntN(1000))
		for j := range g {
			g[j] = float32(rng.NormFloat64() * 10)
		}
		s := make([]float64, len(g))
		c := 0.5 + rng.Float64()
		if _, err := SumClipped(s, [][]float32{g}, c); err != nil {
			t.Fatal(err)
		}
		var sq float64
		for _, v := range s {
			sq += v * v
		}
		if math.Sqrt(sq) > c {
			t.Fatalf("contribution of norm %v above %v", math.Sqrt(sq), c)
		}
	}
	if _, err := SumClipped(sum, [][]float32{{float32(math.NaN()), 0}}, 1); !errors.Is(err, ErrNonFinite) {
		t.Errorf("NaN gradient: %v", err)
	}
	if _, err := SumClipped(sum, nil, 0); !errors.Is(err, ErrBadParam) {
		t.Errorf("clip 0: %v", err)
	}
}

func TestDPSGD(t *testing.T) {
	p := DPSGD{ExampleClip: 1, Z: 1.1, BatchSize: 64}
	if err := p.Validate(60000); err != nil {
		t.Fatal(err)
	}
	if q := p.SampleRate(60000); q != 64.0/60000 {
		t.Errorf("q = %v", q)
	}
	if s := p.Steps(3, 60000); s != 2813 { // ceil(180000/64) = 2812.5 -> 2813
		t.Errorf("steps %d, want 2813", s)
	}
	if m := p.Mechanism(60000); m != (SampledGaussian{Q: 64.0 / 60000, Z: 1.1}) {
		t.Errorf("mechanism %v", m)
	}
	for _, bad := range []DPSGD{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}, {1, math.Inf(1), 1}} {
		if err := bad.Validate(100); !errors.Is(err, ErrBadParam) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if err := p.Validate(10); !errors.Is(err, ErrBadParam) {
		t.Errorf("fewer examples than the batch: %v", err)
	}

	// The private gradient of an empty batch is pure noise of standard
	// deviation Z*C/B per coordinate; of a batch, the clipped mean plus it.
	rng := rand.New(rand.NewPCG(5, 6))
	dst := make([]float32, 100_000)
	if err := p.Gradient(dst, nil, rng); err != nil {
		t.Fatal(err)
	}
	var sq float64
	for _, v := range dst {
		sq += float64(v) * float64(v)
	}
	want := 1.1 / 64
	if got := math.Sqrt(sq / float64(len(dst))); math.Abs(got-want) > 0.01*want {
		t.Errorf("noise std %v, want %v", got, want)
	}
	// Deterministic under the seed.
	a, b := make([]float32, 10), make([]float32, 10)
	grads := [][]float32{{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}
	_ = p.Gradient(a, grads, rand.New(rand.NewPCG(7, 8)))
	_ = p.Gradient(b, grads, rand.New(rand.NewPCG(7, 8)))
	if !slices.Equal(a, b) {
		t.Error("same seed, different gradients")
	}
}

func TestPoissonSample(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const n, q = 100_000, 0.01
	idx := PoissonSample(n, q, rng)
	if math.Abs(float64(len(idx))-n*q) > 5*math.Sqrt(n*q*(1-q)) {
		t.Errorf("%d selected, want about %v", len(idx), n*q)
	}
	if !slices.IsSorted(idx) {
		t.Error("indices not increasing")
	}
	if len(PoissonSample(10, 0, rng)) != 0 || len(PoissonSample(10, 1, rng)) != 10 {
		t.Error("q = 0 or 1")
	}
}
