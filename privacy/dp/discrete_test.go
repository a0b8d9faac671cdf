package dp

import (
	"errors"
	"io"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

func seeded(seed byte) *Source {
	return NewSource(rand.NewChaCha8([32]byte{seed, 0xd, 0xb}))
}

// pmf is a distribution on the integers [-k, k], normalized in float64.
type pmf struct {
	k int
	p []float64 // p[y+k]
}

func discreteGaussianPMF(sigma2 float64) pmf {
	k := int(math.Ceil(14*math.Sqrt(sigma2))) + 2
	p := make([]float64, 2*k+1)
	var z float64
	for y := -k; y <= k; y++ {
		w := math.Exp(-float64(y*y) / (2 * sigma2))
		p[y+k] = w
		z += w
	}
	for i := range p {
		p[i] /= z
	}
	return pmf{k, p}
}

func discreteLaplacePMF(t float64) pmf {
	k := int(math.Ceil(45*t)) + 2
	p := make([]float64, 2*k+1)
	var z float64
	for y := -k; y <= k; y++ {
		w := math.Exp(-math.Abs(float64(y)) / t)
		p[y+k] = w
		z += w
	}
	for i := range p {
		p[i] /= z
	}
	return pmf{k, p}
}

// moments returns the mean, variance and fourth central moment.
func (d pmf) moments() (mean, variance, m4 float64) {
	for i, p := range d.p {
		mean += float64(i-d.k) * p
	}
	for i, p := range d.p {
		y := float64(i-d.k) - mean
		variance += y * y * p
		m4 += y * y * y * y * p
	}
	return mean, variance, m4
}

// chiSquare compares the counts of samples with d: the values whose
// expected count is below 10 are pooled into one bin. It returns the
// statistic and the degrees of freedom.
func (d pmf) chiSquare(samples []int64) (stat float64, df int) {
	n := float64(len(samples))
	counts := map[int64]float64{}
	for _, y := range samples {
		counts[y]++
	}
	var pooledObs, pooledExp float64
	seen := 0.0
	for i, p := range d.p {
		y := int64(i - d.k)
		obs := counts[y]
		seen += obs
		if e := p * n; e >= 10 {
			stat += (obs - e) * (obs - e) / e
			df++
		} else {
			pooledObs += obs
			pooledExp += e
		}
	}
	pooledObs += n - seen // samples outside [-k, k]
	if pooledExp > 0 {
		stat += (pooledObs - pooledExp) * (pooledObs - pooledExp) / pooledExp
		df++
	}
	return stat, df - 1
}

// chiSquareOK accepts a statistic below df + 6 sqrt(2 df) (the chi-square
// distribution's mean plus six standard deviations). The seeds are fixed,
// so the outcome is too; the bound only says how surprising a failure is.
func chiSquareOK(stat float64, df int) bool {
	return stat < float64(df)+6*math.Sqrt(2*float64(df))
}

func draw(t *testing.T, g *DiscreteGaussian, src *Source, n int) []int64 {
	t.Helper()
	out := make([]int64, n)
	if err := g.AddTo(out, src); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkSamples holds samples to d: mean and variance within 5 standard
// errors, a chi-square fit, and symmetry (as many negative as positive
// samples, within 5 standard errors). It returns the empirical mean and
// variance.
func checkSamples(t *testing.T, name string, d pmf, samples []int64) (mean, variance float64) {
	t.Helper()
	n := float64(len(samples))
	_, wantVar, m4 := d.moments()
	var sum, pos, neg float64
	for _, y := range samples {
		sum += float64(y)
		switch {
		case y > 0:
			pos++
		case y < 0:
			neg++
		}
	}
	mean = sum / n
	for _, y := range samples {
		variance += (float64(y) - mean) * (float64(y) - mean)
	}
	variance /= n - 1
	if se := math.Sqrt(wantVar / n); math.Abs(mean) > 5*se {
		t.Errorf("%s: mean %.5f, more than 5 standard errors (%.5f) from 0", name, mean, se)
	}
	if se := math.Sqrt((m4 - wantVar*wantVar) / n); math.Abs(variance-wantVar) > 5*se {
		t.Errorf("%s: variance %.5f, want %.5f within 5 standard errors (%.5f)", name, variance, wantVar, se)
	}
	if math.Abs(pos-neg) > 5*math.Sqrt(pos+neg) {
		t.Errorf("%s: %v positive and %v negative samples", name, pos, neg)
	}
	stat, df := d.chiSquare(samples)
	if !chiSquareOK(stat, df) {
		t.Errorf("%s: chi-square %.1f with %d degrees of freedom", name, stat, df)
	}
	t.Logf("%s: chi-square %.1f, %d degrees of freedom; %v positive, %v negative", name, stat, df, pos, neg)
	return mean, variance
}

// TestDiscreteGaussianStatistics: for sigma in {0.5, 1, 3, 10}, 100,000
// samples have mean 0 and the variance of N_Z(0, sigma^2) within 5
// standard errors, fit its probabilities (chi-square), and are symmetric.
// The exact variance is below sigma^2: by a fraction 2.1e-7 at sigma = 1,
// negligibly from sigma = 3 on, and 0.2150 against 0.25 at sigma = 0.5.
func TestDiscreteGaussianStatistics(t *testing.T) {
	const n = 100_000
	for i, sigma := range []*big.Rat{big.NewRat(1, 2), big.NewRat(1, 1), big.NewRat(3, 1), big.NewRat(10, 1)} {
		s2 := new(big.Rat).Mul(sigma, sigma)
		g, err := NewDiscreteGaussian(s2)
		if err != nil {
			t.Fatal(err)
		}
		f2, _ := s2.Float64()
		d := discreteGaussianPMF(f2)
		_, exact, _ := d.moments()
		if exact > f2 || (f2 >= 1 && exact < f2*(1-3e-7)) || (f2 >= 9 && exact < f2*(1-1e-14)) {
			t.Errorf("sigma^2 = %v: exact variance %v", f2, exact)
		}
		mean, v := checkSamples(t, "sigma="+sigma.FloatString(1), d, draw(t, g, seeded(byte(i)), n))
		t.Logf("sigma=%s: %d samples, mean %+.4f, variance %.4f (exact %.4f, sigma^2 %.4f, ratio to sigma^2 %.4f)",
			sigma.FloatString(1), n, mean, v, exact, f2, v/f2)
	}
}

// TestDiscreteGaussianBigPath: a sigma^2 whose numerator and denominator do
// not fit in 64 bits takes the math/big path, which must give the same
// distribution; and a sigma large enough for the grid of update mode.
func TestDiscreteGaussianBigPath(t *testing.T) {
	// sigma^2 = 1 + 2^-80: the distribution of sigma^2 = 1 (to 1e-24).
	s2 := new(big.Rat).SetFrac(new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), 80), big.NewInt(1)), new(big.Int).Lsh(big.NewInt(1), 80))
	g, err := NewDiscreteGaussian(s2)
	if err != nil {
		t.Fatal(err)
	}
	if g.small {
		t.Fatal("expected the big path")
	}
	checkSamples(t, "sigma^2=1+2^-80", discreteGaussianPMF(1), draw(t, g, seeded(7), 50_000))

	// sigma = 1.1 * 2^16, about 72090: mean and variance only.
	s2 = Sigma2AtLeast(SquareOf(1.1 * 65536))
	g, err = NewDiscreteGaussian(s2)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20_000
	samples := draw(t, g, seeded(8), n)
	f2, _ := s2.Float64()
	var sum, sq float64
	for _, y := range samples {
		sum += float64(y)
		sq += float64(y) * float64(y)
	}
	mean, v := sum/n, sq/n
	if math.Abs(mean) > 5*math.Sqrt(f2/n) || math.Abs(v-f2) > 5*f2*math.Sqrt(2.0/n) {
		t.Errorf("sigma^2 = %v: mean %v, variance %v", f2, mean, v)
	}
	t.Logf("sigma=%.1f (small path %v): mean %+.1f, variance/sigma^2 %.4f", math.Sqrt(f2), g.small, mean, v/f2)
}

// TestDiscreteGaussianDeterministic: the same seed gives the same samples;
// another seed gives others.
func TestDiscreteGaussianDeterministic(t *testing.T) {
	g, _ := NewDiscreteGaussian(big.NewRat(9, 1))
	a, b, c := draw(t, g, seeded(1), 1000), draw(t, g, seeded(1), 1000), draw(t, g, seeded(2), 1000)
	same := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("sample %d: %d and %d from the same seed", i, a[i], b[i])
		}
		if a[i] == c[i] {
			same++
		}
	}
	if same > 300 {
		t.Errorf("%d of 1000 samples equal under different seeds", same)
	}
}

func TestBernoulliExp(t *testing.T) {
	const n = 100_000
	src := seeded(3)
	for _, g := range [][2]uint64{{0, 1}, {1, 3}, {1, 1}, {5, 2}, {7, 1}, {3, 1000}} {
		p := math.Exp(-float64(g[0]) / float64(g[1]))
		bigNum := new(big.Int).Lsh(new(big.Int).SetUint64(g[0]), 70)
		bigDen := new(big.Int).Lsh(new(big.Int).SetUint64(g[1]), 70)
		var hits, bigHits float64
		for range n {
			ok, err := src.BernoulliExp(g[0], g[1])
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				hits++
			}
			ok, err = src.bernoulliExpBig(bigNum, bigDen)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				bigHits++
			}
		}
		se := math.Sqrt(p * (1 - p) / n)
		if math.Abs(hits/n-p) > 5*se+1e-12 || math.Abs(bigHits/n-p) > 5*se+1e-12 {
			t.Errorf("gamma=%d/%d: frequencies %v (uint64) and %v (big), want %v", g[0], g[1], hits/n, bigHits/n, p)
		}
	}
}

func TestDiscreteLaplace(t *testing.T) {
	for i, scale := range []uint64{1, 3, 11} {
		src := seeded(byte(20 + i))
		samples := make([]int64, 100_000)
		for j := range samples {
			y, err := src.DiscreteLaplace(scale)
			if err != nil {
				t.Fatal(err)
			}
			samples[j] = y
		}
		checkSamples(t, "laplace t="+big.NewInt(int64(scale)).String(), discreteLaplacePMF(float64(scale)), samples)
	}
}

func TestUniform(t *testing.T) {
	src := seeded(4)
	const n = 60_000
	counts := make([]float64, 3)
	for range n {
		u, err := src.Uniform(3)
		if err != nil {
			t.Fatal(err)
		}
		counts[u]++
	}
	var stat float64
	for _, c := range counts {
		stat += (c - n/3) * (c - n/3) / (n / 3)
	}
	if !chiSquareOK(stat, 2) {
		t.Errorf("Uniform(3) counts %v", counts)
	}
	// The worst case for rejection, n = 2^63 + 1: values below n, and the
	// top half as likely as the bottom.
	big1 := uint64(1)<<63 + 1
	var top float64
	for range n {
		u, _ := src.Uniform(big1)
		if u >= big1 {
			t.Fatalf("Uniform(%d) = %d", big1, u)
		}
		if u >= 1<<62 {
			top++
		}
	}
	if math.Abs(top/n-0.5) > 5*math.Sqrt(0.25/n) {
		t.Errorf("Uniform(2^63+1): %v in the upper half", top/n)
	}
	// UniformBig below a bound above 2^64.
	bound := new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), 100), big.NewInt(12345))
	var z big.Int
	for range 1000 {
		if _, err := src.UniformBig(&z, bound); err != nil || z.Sign() < 0 || z.Cmp(bound) >= 0 {
			t.Fatalf("UniformBig: %v, %v", &z, err)
		}
	}
}

// failingReader yields n bytes, then fails.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("entropy exhausted")
	}
	k := min(len(p), r.n)
	clear(p[:k])
	r.n -= k
	return k, nil
}

// TestSourceFailure: a failing reader ends sampling with ErrSource, never
// with a sample made of missing bytes or a loop on zeros.
func TestSourceFailure(t *testing.T) {
	g, _ := NewDiscreteGaussian(big.NewRat(100, 1))
	for _, n := range []int{0, 100, 4096} {
		src := NewSource(&failingReader{n: n})
		err := g.AddTo(make([]int64, 1_000_000), src)
		if !errors.Is(err, ErrSource) || !errors.Is(src.Err(), ErrSource) {
			t.Errorf("reader failing after %d bytes: %v", n, err)
		}
	}
	if _, err := NewSource(eofReader{}).Uint64(); !errors.Is(err, ErrSource) {
		t.Errorf("EOF: %v", err)
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

func TestNewDiscreteGaussianRejects(t *testing.T) {
	for _, s2 := range []*big.Rat{nil, big.NewRat(0, 1), big.NewRat(-1, 1), new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), 101))} {
		if _, err := NewDiscreteGaussian(s2); !errors.Is(err, ErrSigma) {
			t.Errorf("sigma^2 = %v: %v", s2, err)
		}
	}
}

func TestSigma2AtLeast(t *testing.T) {
	for _, v := range []float64{0.25, 1, 1.1, 3.7, 65536 * 1.1, 1e-3, 12345678.9} {
		x := SquareOf(v)
		r := Sigma2AtLeast(x)
		if r.Cmp(x) < 0 {
			t.Errorf("%v: %v below %v", v, r, x)
		}
		excess := new(big.Rat).Quo(new(big.Rat).Sub(r, x), x)
		if f, _ := excess.Float64(); f > 0x1p-23 {
			t.Errorf("%v: relative excess %v", v, f)
		}
		if r.Denom().BitLen() > 64 {
			t.Errorf("%v: denominator of %d bits", v, r.Denom().BitLen())
		}
	}
	// Exact values stay exact.
	if r := Sigma2AtLeast(big.NewRat(9, 4)); r.Cmp(big.NewRat(9, 4)) != 0 {
		t.Errorf("9/4 became %v", r)
	}
}

func BenchmarkDiscreteGaussian(b *testing.B) {
	for _, sigma := range []float64{1, 10, 1.1 * 65536} {
		g, _ := NewDiscreteGaussian(Sigma2AtLeast(SquareOf(sigma)))
		b.Run("sigma="+big.NewFloat(sigma).Text('g', 6), func(b *testing.B) {
			src := seeded(9)
			for b.Loop() {
				if _, err := g.Sample(src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
