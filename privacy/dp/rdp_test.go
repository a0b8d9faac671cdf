package dp

import (
	"bufio"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// opacusRow is one row of testdata/dp-opacus-rdp.tsv (see its README).
type opacusRow struct {
	line                 int
	q, z                 float64
	steps                int64
	delta, eps           float64
	bestAlpha, epsString string
}

func readOpacusTable(t *testing.T) []opacusRow {
	t.Helper()
	f, err := os.Open("testdata/dp-opacus-rdp.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() || sc.Text() != "q\tnoise_multiplier\tsteps\tdelta\tepsilon\tbest_alpha" {
		t.Fatalf("unexpected header %q", sc.Text())
	}
	var rows []opacusRow
	for line := 2; sc.Scan(); line++ {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) != 6 {
			t.Fatalf("line %d: %d fields", line, len(fs))
		}
		r := opacusRow{line: line, bestAlpha: fs[5], epsString: fs[4]}
		var errs [5]error
		r.q, errs[0] = strconv.ParseFloat(fs[0], 64)
		r.z, errs[1] = strconv.ParseFloat(fs[1], 64)
		r.steps, errs[2] = strconv.ParseInt(fs[2], 10, 64)
		r.delta, errs[3] = strconv.ParseFloat(fs[3], 64)
		r.eps, errs[4] = strconv.ParseFloat(fs[4], 64)
		for _, err := range errs {
			if err != nil {
				t.Fatalf("line %d: %v", line, err)
			}
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestOpacusReference holds the accountant to every row of the reference
// table computed with Opacus's rdp.py: epsilon within 1e-6 relative (the
// table prints 10 significant digits, so agreement to ~5e-10 is the most it
// can show) and the best order equal, as Opacus prints it (%.10g).
func TestOpacusReference(t *testing.T) {
	rows := readOpacusTable(t)
	if len(rows) != 300 {
		t.Fatalf("%d rows, want 300", len(rows))
	}
	var maxRel float64
	var worst opacusRow
	// One accountant per (q, z) computes that mechanism's curve once; each
	// row charges a clone of it, which shares the cached curve.
	templates := map[SampledGaussian]*Accountant{}
	for _, r := range rows {
		m := SampledGaussian{Q: r.q, Z: r.z}
		if templates[m] == nil {
			tmpl, err := NewAccountant(nil)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.unitRDP(m)
			templates[m] = tmpl
		}
		a := templates[m].Clone()
		if err := a.Spend(m, r.steps); err != nil {
			t.Fatal(err)
		}
		eps, alpha, err := a.Epsilon(r.delta)
		if err != nil {
			t.Fatal(err)
		}
		rel := math.Abs(eps-r.eps) / r.eps
		if rel > maxRel {
			maxRel, worst = rel, r
		}
		if rel > 1e-6 {
			t.Errorf("line %d (q=%v z=%v steps=%d delta=%v): epsilon %.10g, Opacus %s (relative error %.2g)", r.line, r.q, r.z, r.steps, r.delta, eps, r.epsString, rel)
		}
		if got := strconv.FormatFloat(alpha, 'g', 10, 64); got != r.bestAlpha {
			t.Errorf("line %d (q=%v z=%v steps=%d delta=%v): best order %s, Opacus %s", r.line, r.q, r.z, r.steps, r.delta, got, r.bestAlpha)
		}
	}
	t.Logf("%d rows: max relative error on epsilon %.3g (line %d: q=%v z=%v steps=%d delta=%v)", len(rows), maxRel, worst.line, worst.q, worst.z, worst.steps, worst.delta)
}

// TestOpacusDocstringExample is the example in rdp.py's module docstring:
// two histories with different (q, z), integer orders 2..32, delta 1e-5:
// epsilon 0.3363440633925957 at order 23.
func TestOpacusDocstringExample(t *testing.T) {
	var orders []float64
	for a := 2; a <= 32; a++ {
		orders = append(orders, float64(a))
	}
	a, err := NewAccountant(orders)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Spend(SampledGaussian{Q: 1e-5, Z: 1.0}, 10); err != nil {
		t.Fatal(err)
	}
	if err := a.Spend(SampledGaussian{Q: 1e-4, Z: 3.0}, 4); err != nil {
		t.Fatal(err)
	}
	eps, alpha, err := a.Epsilon(1e-5)
	if err != nil {
		t.Fatal(err)
	}
	if rel := math.Abs(eps-0.3363440633925957) / 0.3363440633925957; rel > 1e-12 || alpha != 23 {
		t.Errorf("epsilon %.16g at order %v, want 0.3363440633925957 at 23 (relative error %.2g)", eps, alpha, rel)
	}
}

// TestUnsampledClosedForm: without sampling the accountant's RDP is
// alpha T / (2 z^2) at every order, to the last bits (it computes
// (alpha/(2 z^2)) * T as Opacus does, so the two may differ by rounding
// only), and GaussianRDP is Opacus's expression to the bit.
func TestUnsampledClosedForm(t *testing.T) {
	var maxRel float64
	for _, z := range []float64{0.5, 0.8, 1, 1.1, 2, 4, 0.37, 12.5} {
		for _, steps := range []int64{1, 10, 100, 1000, 10000, 123457} {
			a, _ := NewAccountant(nil)
			if err := a.Spend(SampledGaussian{Q: 1, Z: z}, steps); err != nil {
				t.Fatal(err)
			}
			for i, r := range a.RDP() {
				alpha := a.orders[i]
				want := alpha * float64(steps) / (2 * z * z)
				rel := math.Abs(r-want) / want
				maxRel = max(maxRel, rel)
				if rel > 0x1p-51 {
					t.Errorf("z=%v T=%d alpha=%v: RDP %v, closed form %v", z, steps, alpha, r, want)
				}
				if g := GaussianRDP(z, alpha); g != alpha/(2*math.Pow(z, 2)) {
					t.Errorf("GaussianRDP(%v, %v) = %v, want %v", z, alpha, g, alpha/(2*math.Pow(z, 2)))
				}
			}
		}
	}
	t.Logf("max relative difference from alpha T/(2 z^2): %.3g", maxRel)
}

// TestGeneralPathNearOne: the subsampled formulas at q = 1 - 1e-9 agree
// with the closed form at q = 1 (the reference README reports 2.0e-9 for
// Opacus), for integer and fractional orders.
func TestGeneralPathNearOne(t *testing.T) {
	var maxRel float64
	for _, z := range []float64{0.5, 0.8, 1, 1.1, 2, 4} {
		for _, alpha := range DefaultOrders() {
			got := SampledGaussianRDP(1-1e-9, z, alpha)
			want := GaussianRDP(z, alpha)
			rel := math.Abs(got-want) / want
			maxRel = max(maxRel, rel)
			if rel > 1e-8 {
				t.Errorf("z=%v alpha=%v: %v at q=1-1e-9, %v at q=1", z, alpha, got, want)
			}
		}
	}
	t.Logf("max relative difference: %.3g", maxRel)
}

func TestDefaultOrders(t *testing.T) {
	o := DefaultOrders()
	if len(o) != 151 || o[0] != 1.1 || o[98] != 10.9 || o[99] != 12 || o[150] != 63 {
		t.Fatalf("orders %v", o)
	}
	for i, a := range o {
		if i > 0 && !(a > o[i-1]) {
			t.Errorf("order %d (%v) not above the previous", i, a)
		}
		if a == 11 {
			t.Error("order 11 present; Opacus has none")
		}
	}
	// 2, 3, ..., 10 come out as exact integers and take the integer path.
	for x := 10; x < 100; x += 10 {
		if a := o[x-1]; a != math.Trunc(a) {
			t.Errorf("order %v is not an integer", a)
		}
	}
}

func TestPrivacySpentSpecialCases(t *testing.T) {
	orders := []float64{2, 3, 4}
	if eps, alpha := PrivacySpent(orders, []float64{math.NaN(), math.NaN(), math.NaN()}, 1e-5); !math.IsInf(eps, 1) || !math.IsNaN(alpha) {
		t.Errorf("all NaN: (%v, %v), want (+Inf, NaN)", eps, alpha)
	}
	if _, alpha := PrivacySpent(orders, []float64{math.NaN(), 1, math.Inf(1)}, 1e-5); alpha != 3 {
		t.Errorf("NaN ignored: best order %v, want 3", alpha)
	}
	if r := SampledGaussianRDP(0, 1, 2); r != 0 {
		t.Errorf("q=0: %v", r)
	}
	if r := SampledGaussianRDP(0.1, 0, 2); !math.IsInf(r, 1) {
		t.Errorf("z=0: %v", r)
	}
}

func TestLogErfc(t *testing.T) {
	// Continuous where the asymptotic expansion takes over, and equal to
	// log(erfc) where erfc is still representable.
	for _, x := range []float64{-5, -1, 0, 0.5, 3, 10, 19.99, 20, 25, 26} {
		want := math.Log(math.Erfc(x))
		if got := logErfc(x); math.Abs(got-want) > 1e-13*math.Max(1, math.Abs(want)) {
			t.Errorf("logErfc(%v) = %v, want %v", x, got, want)
		}
	}
	// Beyond underflow: the leading behaviour -x^2 - log(x sqrt(pi)).
	x := 100.0
	if got, lead := logErfc(x), -x*x-math.Log(x*math.Sqrt(math.Pi)); math.Abs(got-lead) > 1e-4 {
		t.Errorf("logErfc(100) = %v, leading term %v", got, lead)
	}
}
