package dp

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

func mustAccountant(t testing.TB) *Accountant {
	t.Helper()
	a, err := NewAccountant(nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustSpend(t testing.TB, a *Accountant, m Mechanism, steps int64) {
	t.Helper()
	if err := a.Spend(m, steps); err != nil {
		t.Fatal(err)
	}
}

func relDiff(a, b float64) float64 {
	if a == b {
		return 0
	}
	return math.Abs(a-b) / math.Max(math.Abs(a), math.Abs(b))
}

// TestCompositionIsSum: merging two histories gives, at every order, the
// sum of their RDP curves, and the epsilon that sum converts to.
func TestCompositionIsSum(t *testing.T) {
	a, b := mustAccountant(t), mustAccountant(t)
	mustSpend(t, a, SampledGaussian{Q: 0.01, Z: 1.1}, 500)
	mustSpend(t, a, SampledGaussian{Q: 1, Z: 4}, 3)
	mustSpend(t, b, SampledGaussian{Q: 0.004, Z: 0.8}, 1000)
	mustSpend(t, b, DistributedNoise{Z: 1, Clip: 1, Scale: 1 << 12, Honest: 7, Beta: DefaultBeta}.Mechanism(1000), 2)
	ra, rb := a.RDP(), b.RDP()

	c := a.Clone()
	if err := c.Merge(b); err != nil {
		t.Fatal(err)
	}
	if len(c.History()) != 4 || len(a.History()) != 2 {
		t.Fatalf("history lengths %d (merged), %d (a)", len(c.History()), len(a.History()))
	}
	rc := c.RDP()
	sum := make([]float64, len(ra))
	for i := range ra {
		sum[i] = ra[i] + rb[i]
		if d := relDiff(rc[i], sum[i]); d > 1e-14 {
			t.Errorf("order %v: merged RDP %v, sum %v", c.orders[i], rc[i], sum[i])
		}
	}
	epsC, alphaC, _ := c.Epsilon(1e-5)
	epsS, alphaS := PrivacySpent(c.Orders(), sum, 1e-5)
	if relDiff(epsC, epsS) > 1e-14 || alphaC != alphaS {
		t.Errorf("merged (%v, %v), from the summed curves (%v, %v)", epsC, alphaC, epsS, alphaS)
	}
	// Each alone spends less than both.
	epsA, _, _ := a.Epsilon(1e-5)
	epsB, _, _ := b.Epsilon(1e-5)
	if !(epsC > epsA && epsC > epsB) {
		t.Errorf("composition %v not above its parts %v, %v", epsC, epsA, epsB)
	}

	// Steps one at a time (how a node charges) equal one entry of T steps,
	// as Opacus merges them, to the bit.
	one, many := mustAccountant(t), mustAccountant(t)
	m := SampledGaussian{Q: 0.01, Z: 1.1}
	for range 1000 {
		mustSpend(t, one, m, 1)
	}
	mustSpend(t, many, m, 1000)
	if !slices.Equal(one.RDP(), many.RDP()) || len(one.History()) != 1 {
		t.Errorf("1000 single steps differ from one entry of 1000 (history %v)", one.History())
	}
}

func TestAccountantJSONRoundTrip(t *testing.T) {
	a := mustAccountant(t)
	mustSpend(t, a, SampledGaussian{Q: 0.01, Z: 1.1}, 100)
	mustSpend(t, a, SampledGaussian{Q: 1, Z: 0.7000000000000001}, 2)
	mustSpend(t, a, UpdateNoise{Z: 1, Clip: 0.3, Scale: 1 << 16}.Mechanism(12345), 1)
	mustSpend(t, a, DistributedNoise{Z: 0.9, Clip: 2, Scale: 1 << 10, Honest: 5}.Mechanism(100), 1)
	data, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var b Accountant
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !slices.Equal(a.RDP(), b.RDP()) || !slices.Equal(a.Orders(), b.Orders()) || !slices.Equal(a.History(), b.History()) {
		t.Errorf("round trip changed the accountant:\n%s", data)
	}
	ea, _, _ := a.Epsilon(1e-6)
	eb, _, _ := b.Epsilon(1e-6)
	if ea != eb {
		t.Errorf("epsilon %v before, %v after", ea, eb)
	}
	again, _ := json.Marshal(&b)
	if string(again) != string(data) {
		t.Errorf("second encoding differs:\n%s\n%s", data, again)
	}
	// An empty accountant has an empty history, not null.
	e, _ := json.Marshal(mustAccountant(t))
	if !strings.Contains(string(e), `"history":[]`) {
		t.Errorf("empty accountant: %s", e)
	}
}

func TestAccountantJSONRejects(t *testing.T) {
	good := `{"version":1,"orders":[2,3],"history":[{"steps":3,"sampled_gaussian":{"q":0.5,"z":1}}]}`
	var a Accountant
	if err := json.Unmarshal([]byte(good), &a); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{
		"version":         `{"version":2,"orders":[2,3],"history":[]}`,
		"unknown field":   `{"version":1,"orders":[2,3],"history":[],"spent":1}`,
		"order 1":         `{"version":1,"orders":[1,3],"history":[]}`,
		"no orders":       `{"version":1,"orders":[],"history":[]}`,
		"duplicate":       `{"version":1,"orders":[2,2],"history":[]}`,
		"no mechanism":    `{"version":1,"orders":[2],"history":[{"steps":3}]}`,
		"two mechanisms":  `{"version":1,"orders":[2],"history":[{"steps":3,"sampled_gaussian":{"q":0.5,"z":1},"ddg":{"l2":1,"l1":1,"tau":0,"dim":1}}]}`,
		"zero steps":      `{"version":1,"orders":[2],"history":[{"steps":0,"sampled_gaussian":{"q":0.5,"z":1}}]}`,
		"q above 1":       `{"version":1,"orders":[2],"history":[{"steps":1,"sampled_gaussian":{"q":1.5,"z":1}}]}`,
		"z zero":          `{"version":1,"orders":[2],"history":[{"steps":1,"sampled_gaussian":{"q":0.5,"z":0}}]}`,
		"unknown in mech": `{"version":1,"orders":[2],"history":[{"steps":1,"sampled_gaussian":{"q":0.5,"z":1,"x":1}}]}`,
		"trailing":        good + `{}`,
	} {
		b := mustAccountant(t)
		before, _ := json.Marshal(b)
		if err := json.Unmarshal([]byte(s), b); err == nil {
			t.Errorf("%s: accepted %s", name, s)
		}
		if after, _ := json.Marshal(b); string(after) != string(before) {
			t.Errorf("%s: a failed unmarshal changed the accountant", name)
		}
	}
}

func TestAccountantErrors(t *testing.T) {
	a := mustAccountant(t)
	for _, m := range []Mechanism{nil, SampledGaussian{Q: 0, Z: 1}, SampledGaussian{Q: 0.1, Z: math.Inf(1)}, SampledGaussian{Q: math.NaN(), Z: 1}, DDG{L2: -1, Dim: 1}} {
		if err := a.Spend(m, 1); !errors.Is(err, ErrBadParam) {
			t.Errorf("Spend(%v): %v, want ErrBadParam", m, err)
		}
	}
	if err := a.Spend(SampledGaussian{Q: 1, Z: 1}, 0); !errors.Is(err, ErrBadParam) {
		t.Errorf("0 steps: %v", err)
	}
	if eps, alpha, err := a.Epsilon(1e-5); eps != 0 || alpha != 0 || err != nil {
		t.Errorf("empty: (%v, %v, %v), want (0, 0, nil)", eps, alpha, err)
	}
	for _, d := range []float64{0, 1, -1, math.NaN()} {
		if _, _, err := a.Epsilon(d); !errors.Is(err, ErrBadParam) {
			t.Errorf("delta %v: %v", d, err)
		}
	}
	if _, err := NewAccountant([]float64{2, 0.5}); !errors.Is(err, ErrBadParam) {
		t.Errorf("order 0.5: %v", err)
	}
	b, _ := NewAccountant([]float64{2, 3})
	if err := a.Merge(b); !errors.Is(err, ErrBadParam) {
		t.Errorf("merge over other orders: %v", err)
	}
}

// TestEpsilonAfter: the look-ahead a node makes before it takes part
// reports the epsilon it would reach and charges nothing.
func TestEpsilonAfter(t *testing.T) {
	a := mustAccountant(t)
	m := UpdateNoise{Z: 1.5, Clip: 1, Scale: 1 << 16}.Mechanism(1000)
	mustSpend(t, a, m, 3)
	after, _, err := a.EpsilonAfter(1e-5, m, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.History()) != 1 || a.History()[0].Steps != 3 {
		t.Fatalf("EpsilonAfter charged: %v", a.History())
	}
	mustSpend(t, a, m, 1)
	now, _, _ := a.Epsilon(1e-5)
	if now != after {
		t.Errorf("EpsilonAfter %v, epsilon after the charge %v", after, now)
	}
}

// BenchmarkAccountant is a node's accounting over a training of T = 1000
// steps: charge each step, then convert to epsilon (the subsampled
// Gaussian's series is computed once per (q, z) and cached).
func BenchmarkAccountant(b *testing.B) {
	m := SampledGaussian{Q: 0.01, Z: 1.1}
	b.Run("steps=1000/same-mechanism", func(b *testing.B) {
		for b.Loop() {
			a, _ := NewAccountant(nil)
			for range 1000 {
				if err := a.Spend(m, 1); err != nil {
					b.Fatal(err)
				}
			}
			if _, _, err := a.Epsilon(1e-5); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A new rate every step, so every step's curve is computed afresh:
	// the worst case.
	b.Run("steps=1000/distinct-q", func(b *testing.B) {
		for b.Loop() {
			a, _ := NewAccountant(nil)
			for i := range 1000 {
				if err := a.Spend(SampledGaussian{Q: 0.01 + float64(i)*1e-6, Z: 1.1}, 1); err != nil {
					b.Fatal(err)
				}
			}
			if _, _, err := a.Epsilon(1e-5); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A node's round-by-round check: epsilon after each of 1000 charges.
	b.Run("steps=1000/epsilon-each-step", func(b *testing.B) {
		for b.Loop() {
			a, _ := NewAccountant(nil)
			for range 1000 {
				if _, _, err := a.EpsilonAfter(1e-5, m, 1); err != nil {
					b.Fatal(err)
				}
				if err := a.Spend(m, 1); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
