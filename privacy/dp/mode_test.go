package dp

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

func randomUpdate(rng *rand.Rand, d int, scale float64) []float32 {
	x := make([]float32, d)
	for j := range x {
		x[j] = float32(rng.NormFloat64() * scale)
	}
	return x
}

// TestUpdateNoise: the encoding is the clipped update on the grid plus
// discrete Gaussian noise of standard deviation Z*S*Scale, its sensitivity
// counts the rounding, and the charge is the unsampled Gaussian with the
// noise multiplier that follows.
func TestUpdateNoise(t *testing.T) {
	p := UpdateNoise{Z: 1.2, Clip: 0.5, Scale: 1 << 10}
	const d = 50_000
	if err := p.Validate(d); err != nil {
		t.Fatal(err)
	}
	delta := p.Sensitivity(d)
	if want := 0.5*1024 + math.Sqrt(d)/2; delta < want || delta > want*(1+1e-14) {
		t.Errorf("sensitivity %v, want %v", delta, want)
	}
	m := p.Mechanism(d)
	if want := 1.2 * 0.5 * 1024 / delta; m.Q != 1 || m.Z > want || m.Z < want*(1-1e-14) {
		t.Errorf("mechanism %+v, want Q 1 and Z just below %v", m, want)
	}
	s2, _ := p.Sigma2().Float64()
	if want := math.Pow(1.2*0.5*1024, 2); s2 < want || s2 > want*(1+0x1p-23) {
		t.Errorf("sigma^2 %v, want %v", s2, want)
	}

	rng := rand.New(rand.NewPCG(1, 1))
	x := randomUpdate(rng, d, 0.1) // norm about 22, clipped to 0.5
	orig := append([]float32(nil), x...)
	v, err := p.Encode(x, seeded(30))
	if err != nil {
		t.Fatal(err)
	}
	for j := range x {
		if x[j] != orig[j] {
			t.Fatal("Encode modified its input")
		}
	}
	// noise = v - round(clip(x) * Scale), each coordinate.
	c := append([]float32(nil), x...)
	if _, err := ClipL2(c, p.Clip); err != nil {
		t.Fatal(err)
	}
	var sum, sq float64
	grid := make([]int64, d)
	for j := range c {
		grid[j] = int64(math.Round(float64(c[j]) * p.Scale))
		e := float64(v[j] - grid[j])
		sum += e
		sq += e * e
	}
	if !normSquaredAtMost(grid, delta) {
		t.Error("the rounded update exceeds the sensitivity")
	}
	mean, variance := sum/d, sq/d
	if math.Abs(mean) > 5*math.Sqrt(s2/d) || math.Abs(variance-s2) > 5*s2*math.Sqrt(2.0/d) {
		t.Errorf("noise mean %v, variance %v, want 0 and %v", mean, variance, s2)
	}
	t.Logf("update mode, d=%d: noise mean %+.3f, std %.2f (want %.2f grid steps); charge z=%.6f (Z=%v)", d, mean, math.Sqrt(variance), math.Sqrt(s2), m.Z, p.Z)

	// Decode is v/Scale.
	dec := p.Decode(v[:3])
	for j := range dec {
		if dec[j] != float32(float64(v[j])/1024) {
			t.Errorf("decode %v", dec)
		}
	}
	for _, bad := range []UpdateNoise{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}, {1, 1, math.Inf(1)}, {1, 1 << 20, 1 << 30}} {
		if err := bad.Validate(10); !errors.Is(err, ErrBadParam) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if _, err := p.Encode([]float32{1, float32(math.NaN())}, seeded(1)); !errors.Is(err, ErrNonFinite) {
		t.Errorf("NaN update: %v", err)
	}
}

func TestNormSquaredAtMost(t *testing.T) {
	if !normSquaredAtMost([]int64{3, -4}, 5) || normSquaredAtMost([]int64{3, -4}, math.Nextafter(5, 0)) {
		t.Error("3,4 against 5")
	}
	// Values whose squares overflow 64 bits are summed exactly.
	big := int64(1) << 40
	if !normSquaredAtMost([]int64{big, big}, math.Sqrt2*float64(big)*(1+1e-15)) || normSquaredAtMost([]int64{big, big + 1}, math.Sqrt2*float64(big)) {
		t.Error("2^40")
	}
}

func TestRotation(t *testing.T) {
	for _, d := range []int{1, 2, 3, 100, 1024, 1025} {
		r := NewRotation([32]byte{1, 2, 3}, d)
		if r.PaddedDim() != PaddedDim(d) || PaddedDim(d) < d || PaddedDim(d)&(PaddedDim(d)-1) != 0 {
			t.Fatalf("d=%d: padded %d", d, r.PaddedDim())
		}
		rng := rand.New(rand.NewPCG(uint64(d), 0))
		x := make([]float64, d)
		var n2 float64
		for j := range x {
			x[j] = rng.NormFloat64()
			n2 += x[j] * x[j]
		}
		y := r.Forward(x)
		var m2 float64
		for _, v := range y {
			m2 += v * v
		}
		if math.Abs(m2-n2) > 1e-12*n2 {
			t.Errorf("d=%d: norm^2 %v after rotation, %v before", d, m2, n2)
		}
		back := r.Inverse(y)
		for j := range x {
			if math.Abs(back[j]-x[j]) > 1e-12 {
				t.Fatalf("d=%d: coordinate %d: %v back, %v before", d, j, back[j], x[j])
			}
		}
	}
	// A spike is spread over every coordinate.
	r := NewRotation([32]byte{9}, 256)
	e := make([]float64, 256)
	e[17] = 1
	for _, v := range r.Forward(e) {
		if math.Abs(math.Abs(v)-1.0/16) > 1e-15 {
			t.Fatalf("spike rotated to %v, want +-1/16", v)
		}
	}
	// The same seed gives the same rotation; another seed another.
	a, b, c := NewRotation([32]byte{5}, 64), NewRotation([32]byte{5}, 64), NewRotation([32]byte{6}, 64)
	same := 0
	for i := range a.signs {
		if a.signs[i] != b.signs[i] {
			t.Fatal("same seed, different signs")
		}
		if a.signs[i] == c.signs[i] {
			same++
		}
	}
	if same == 64 {
		t.Error("different seeds, same signs")
	}
}

// TestDistributedNoise: n participants encode, their inputs are summed mod
// 2^64 (as secure aggregation does), and the decoded mean is the mean of
// the clipped updates plus noise of total standard deviation Z*S/n, which
// the honest contributions reach together; each encoded vector is within
// the sensitivity before its noise.
func TestDistributedNoise(t *testing.T) {
	const n, d = 8, 3000
	p := DistributedNoise{Z: 1.0, Clip: 1, Scale: 1 << 12, Honest: n, Beta: DefaultBeta}
	if err := p.Validate(d); err != nil {
		t.Fatal(err)
	}
	rot := NewRotation([32]byte{42}, d)
	rng := rand.New(rand.NewPCG(2, 2))
	sum := make([]uint64, PaddedDim(d))
	want := make([]float64, d)
	for i := range n {
		// Norm about 2.7, clipped to 1. Negative coordinates are near 2^64
		// as uint64, so the sum wraps around as it does in secure
		// aggregation.
		x := randomUpdate(rng, d, 0.05)
		c := append([]float32(nil), x...)
		if _, err := ClipL2(c, p.Clip); err != nil {
			t.Fatal(err)
		}
		for j := range c {
			want[j] += float64(c[j]) / n
		}
		enc, err := p.Encode(x, rot, seeded(byte(40+i)))
		if err != nil {
			t.Fatal(err)
		}
		if len(enc) != PaddedDim(d) {
			t.Fatalf("encoded %d coordinates", len(enc))
		}
		for j := range sum {
			sum[j] += enc[j]
		}
	}
	got := p.DecodeMean(sum, n, rot)
	var se, sq float64
	for j := range got {
		e := float64(got[j]) - want[j]
		se += e
		sq += e * e
	}
	// The noise of the sum has std Z*S (in update units), spread by the
	// orthogonal rotation over the d padded coordinates; the mean divides it
	// by n. Rounding adds variance below 1/4 grid step^2 per participant.
	local, _ := p.LocalSigma2().Float64()
	wantStd := math.Sqrt(n*local+n*0.25) / p.Scale / n
	std := math.Sqrt(sq / d)
	if math.Abs(std-wantStd) > 0.05*wantStd || math.Abs(se/d) > 5*wantStd/math.Sqrt(d) {
		t.Errorf("decoded mean: error std %v, want %v; mean error %v", std, wantStd, se/d)
	}
	t.Logf("distributed mode, n=%d, d=%d: error std of the decoded mean %.3g (expected %.3g = Z*S/n plus rounding)", n, d, std, wantStd)

	// Decoding is the same to the bit every time.
	again := p.DecodeMean(sum, n, rot)
	for j := range got {
		if math.Float32bits(got[j]) != math.Float32bits(again[j]) {
			t.Fatal("decoding twice gave different bits")
		}
	}
}

// TestDistributedRounding: without noise (a huge scale would be needed to
// turn it off, so the rounding is checked alone), conditional randomized
// rounding stays within the sensitivity and is unbiased.
func TestDistributedRounding(t *testing.T) {
	p := DistributedNoise{Z: 1, Clip: 1, Scale: 64, Honest: 4, Beta: DefaultBeta}
	const d = 500
	delta, l1 := p.Sensitivity(d)
	c := 64.0
	dd := float64(PaddedDim(d))
	b2 := math.Sqrt(c*c + dd/4 + math.Sqrt(2*0.5)*(c+math.Sqrt(dd)/2))
	if want := math.Min(c+math.Sqrt(dd), b2); delta < want || delta > want*(1+1e-14) {
		t.Errorf("sensitivity %v, want %v", delta, want)
	}
	if l1 != delta*math.Min(math.Sqrt(dd), delta) {
		t.Errorf("l1 %v", l1)
	}
	rot := NewRotation([32]byte{1}, d)
	rng := rand.New(rand.NewPCG(3, 3))
	x := make([]float64, d)
	for j := range x {
		x[j] = rng.NormFloat64()
	}
	y := rot.Forward(x) // norm about sqrt(500): rounding inflates it
	v := make([]int64, len(y))
	src := seeded(50)
	var bias float64
	const trials = 200
	for range trials {
		if err := randomRound(v, y, src); err != nil {
			t.Fatal(err)
		}
		for j := range v {
			if math.Abs(float64(v[j])-y[j]) >= 1 {
				t.Fatalf("rounded %v to %d", y[j], v[j])
			}
			bias += float64(v[j]) - y[j]
		}
	}
	if n := float64(trials * len(v)); math.Abs(bias/n) > 5*0.5/math.Sqrt(n) {
		t.Errorf("rounding bias %v", bias/n)
	}
}

// TestDDGBound: with tau = 0 (one participant) the bound is the discrete
// Gaussian's alpha L2^2 / 2; tau grows the bound; n = 1 gives tau = 0; and
// the mechanism's L2 is the sensitivity over the target noise.
func TestDDGBound(t *testing.T) {
	m := DDG{L2: 0.8, L1: 5, Tau: 0, Dim: 1024}
	for _, a := range DefaultOrders() {
		if got, want := m.RDP(a), a*0.64/2; math.Abs(got-want) > 1e-15*want {
			t.Errorf("tau 0, alpha %v: %v, want %v", a, got, want)
		}
	}
	m.Tau = 1e-6
	if !(m.RDP(2) > 0.64) {
		t.Error("tau does not raise the bound")
	}
	if DDGTau(1, 3) != 0 {
		t.Error("tau for one participant")
	}
	// tau = 10 sum_k exp(-2 pi^2 sigma^2 k/(k+1)), by hand for n = 3.
	s := 0.7
	want := 10 * (math.Exp(-2*math.Pi*math.Pi*s*s/2) + math.Exp(-2*math.Pi*math.Pi*s*s*2/3))
	if got := DDGTau(3, s); math.Abs(got-want) > 1e-15*want {
		t.Errorf("tau %v, want %v", got, want)
	}

	p := DistributedNoise{Z: 1.5, Clip: 2, Scale: 1 << 10, Honest: 10, Beta: 0}
	mech := p.Mechanism(1000)
	l2, _ := p.Sensitivity(1000)
	if want := l2 / (1.5 * 2 * 1024); mech.L2 < want || mech.L2 > want*(1+1e-14) || mech.Dim != 1024 {
		t.Errorf("mechanism %+v, want L2 %v", mech, want)
	}
	if mech.Tau > 1e-100 {
		t.Errorf("tau %v for local std %v grid steps", mech.Tau, 1.5*2*1024/math.Sqrt(10))
	}
	// With tau negligible the charge is alpha L2^2/2: the central Gaussian's
	// with noise multiplier Z, inflated by the rounding, (1 + sqrt(d)/(S
	// Scale))^2 = (1 + 32/2048)^2 here.
	r, c := mech.RDP(8), GaussianRDP(1.5, 8)
	if want := 8 * mech.L2 * mech.L2 / 2; math.Abs(r-want) > 1e-14*want {
		t.Errorf("RDP %v, want alpha L2^2/2 = %v", r, want)
	}
	if infl := math.Pow(1+32.0/2048, 2); math.Abs(r/c-infl) > 1e-12 {
		t.Errorf("RDP %v over the central Gaussian's %v: %v, want %v", r, c, r/c, infl)
	}

	for _, bad := range []DistributedNoise{
		{Z: 1, Clip: 1, Scale: 1, Honest: 4, Beta: 0.5},  // local std 0.5 grid step
		{Z: 1, Clip: 1, Scale: 1024, Honest: 0},          // nobody honest
		{Z: 1, Clip: 1, Scale: 1024, Honest: 4, Beta: 1}, // beta out of range
		{Z: 0, Clip: 1, Scale: 1024, Honest: 4},
	} {
		if err := bad.Validate(10); !errors.Is(err, ErrBadParam) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if local := p.LocalSigma2(); local.Cmp(new(big.Rat).SetFrac64(int64(1.5*2*1024*1.5*2*1024), 10)) < 0 {
		t.Errorf("local variance %v below the target", local)
	}
}
