package fedavg

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestPermutationInvariance(t *testing.T) {
	for _, nc := range allConfigs() {
		t.Run(nc.name, func(t *testing.T) {
			s := mustNew(t, nc.cfg)
			r := newRand(11)
			g := NewGlobal(randVector(r, 3000))
			for round := uint64(1); round <= 2; round++ {
				us := randUpdates(r, 7, 3000, randValue)
				us[6].Delta = slices.Clone(us[6].Delta)
				for j := range us[6].Delta {
					us[6].Delta[j] *= 64 // an outlier, exactly
				}
				want, err := s.Aggregate(round, g, us)
				if err != nil || want == nil {
					t.Fatalf("round %d: Aggregate = %v, %v", round, want, err)
				}
				for range 5 {
					got, err := s.Aggregate(round, g, shuffled(r, us))
					if err != nil {
						t.Fatal(err)
					}
					if got.Digest() != want.Digest() {
						t.Fatalf("round %d: shuffled input gives a different G", round)
					}
				}
				g = want
			}
		})
	}
}

func TestAggregateDoesNotModifyInputs(t *testing.T) {
	for _, nc := range allConfigs() {
		t.Run(nc.name, func(t *testing.T) {
			s := mustNew(t, nc.cfg)
			r := newRand(12)
			g := NewGlobal(randVector(r, 500))
			for range 2 {
				us := randUpdates(r, 6, 500, func(r *rand.Rand) float32 { return randValue(r) * 16 })
				before := g.Digest()
				var deltas []Digest
				for _, u := range us {
					deltas = append(deltas, deltaDigest(u.Delta))
				}
				order := slices.Clone(us)
				next, err := s.Aggregate(1, g, us)
				if err != nil || next == nil {
					t.Fatalf("Aggregate = %v, %v", next, err)
				}
				if g.Digest() != before {
					t.Error("Aggregate modified g")
				}
				for i, u := range us {
					if deltaDigest(u.Delta) != deltas[i] || &u.Delta[0] != &order[i].Delta[0] {
						t.Errorf("Aggregate modified or reordered update %d", i)
					}
				}
				if &next.Weights[0] == &g.Weights[0] {
					t.Error("the new model shares weights with g")
				}
				g = next
			}
		})
	}
}

func TestAggregateRejectsBadSets(t *testing.T) {
	r := newRand(13)
	g := NewGlobal(randVector(r, 10))
	good := randUpdates(r, 5, 10, randValue)
	dup := append(slices.Clone(good), Update{Peer: good[2].Peer, Delta: good[0].Delta, Examples: 1})
	short := slices.Clone(good)
	short[3].Delta = short[3].Delta[:9]
	none := slices.Clone(good)
	none[1].Examples = 0
	nan := slices.Clone(good)
	nan[4].Delta = slices.Clone(nan[4].Delta)
	nan[4].Delta[5] = float32(math.NaN())
	inf := slices.Clone(good)
	inf[0].Delta = slices.Clone(inf[0].Delta)
	inf[0].Delta[0] = float32(math.Inf(-1))
	for _, nc := range allConfigs() {
		s := mustNew(t, nc.cfg)
		for _, tc := range []struct {
			name string
			us   []Update
			want error
		}{
			{"duplicate peer", dup, ErrDuplicatePeer},
			{"dimension", short, ErrDimension},
			{"no examples", none, ErrNoExamples},
			{"NaN", nan, ErrNonFinite},
			{"-Inf", inf, ErrNonFinite},
		} {
			next, err := s.Aggregate(1, g, tc.us)
			if !errors.Is(err, tc.want) || next != nil {
				t.Errorf("%s: %s: Aggregate = %v, %v; want %v", nc.name, tc.name, next, err, tc.want)
			}
		}
	}
}

func TestAggregateNoUpdates(t *testing.T) {
	g := NewGlobal([]float32{1, 2})
	for _, nc := range allConfigs() {
		s := mustNew(t, nc.cfg)
		for _, us := range [][]Update{nil, {}} {
			if next, err := s.Aggregate(1, g, us); next != nil || err != nil {
				t.Errorf("%s: Aggregate(no updates) = %v, %v; want nil, nil", nc.name, next, err)
			}
		}
	}
}

func TestAggregateNilGlobal(t *testing.T) {
	us := []Update{{Peer: []byte{1}, Delta: []float32{1}, Examples: 1}}
	for _, nc := range allConfigs() {
		if next, err := mustNew(t, nc.cfg).Aggregate(1, nil, us); next != nil || err == nil {
			t.Errorf("%s: Aggregate(nil G) = %v, %v; want an error", nc.name, next, err)
		}
	}
}

func TestAggregateOverflowIsAnError(t *testing.T) {
	g := NewGlobal([]float32{math.MaxFloat32})
	us := []Update{
		{Peer: []byte{1}, Delta: []float32{math.MaxFloat32}, Examples: 1},
		{Peer: []byte{2}, Delta: []float32{math.MaxFloat32}, Examples: 1},
		{Peer: []byte{3}, Delta: []float32{math.MaxFloat32}, Examples: 1},
	}
	for _, name := range []string{NameFedAvg, NameFedAvgM, NameMedian, NameTrimmedMean, NameKrum, NameMultiKrum} {
		c := DefaultConfig()
		c.Strategy = name
		if next, err := mustNew(t, c).Aggregate(1, g, us); !errors.Is(err, ErrNonFinite) || next != nil {
			t.Errorf("%s: Aggregate = %v, %v; want ErrNonFinite", name, next, err)
		}
	}
}

func TestFedAvgOfIdenticalUpdatesIsTheDelta(t *testing.T) {
	r := newRand(14)
	s := mustNew(t, DefaultConfig())
	for trial := range 20 {
		dim := 1 + r.IntN(3000)
		w := randVector(r, dim)
		delta := randVector(r, dim) // w + delta is exact: both are multiples of 2^-30 below 2^-6
		n := 1 + r.IntN(9)
		us := make([]Update, n)
		for i := range us {
			us[i] = Update{Peer: randPeer(r), Delta: delta, Examples: 1 + r.Int64N(1<<30)}
		}
		next, err := s.Aggregate(1, NewGlobal(w), us)
		if err != nil {
			t.Fatal(err)
		}
		for j := range w {
			if want := w[j] + delta[j]; next.Weights[j] != want {
				t.Fatalf("trial %d: weights[%d] = %v, want %v + %v = %v", trial, j, next.Weights[j], w[j], delta[j], want)
			}
		}
	}
}

func TestFedAvgWeightsByExamples(t *testing.T) {
	s := mustNew(t, DefaultConfig())
	g := NewGlobal([]float32{10, 10})
	next, err := s.Aggregate(1, g, []Update{
		{Peer: []byte("a"), Delta: []float32{1, 0}, Examples: 1},
		{Peer: []byte("b"), Delta: []float32{4, 8}, Examples: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{10 + 13.0/4, 10 + 24.0/4}; !slices.Equal(next.Weights, want) {
		t.Errorf("weights = %v, want %v", next.Weights, want)
	}
	if next.State.Strategy != NameFedAvg || next.State.Step != 1 || next.State.Vectors != nil {
		t.Errorf("state = %+v", next.State)
	}
	c := DefaultConfig()
	c.ServerLR = 0.5
	next, _ = mustNew(t, c).Aggregate(1, g, []Update{{Peer: []byte("a"), Delta: []float32{2, -4}, Examples: 7}})
	if want := []float32{11, 8}; !slices.Equal(next.Weights, want) {
		t.Errorf("ServerLR 0.5: weights = %v, want %v", next.Weights, want)
	}
}

func TestFedAvgM(t *testing.T) {
	c := DefaultConfig()
	c.Strategy, c.Momentum, c.ServerLR = NameFedAvgM, 0.5, 2
	s := mustNew(t, c)
	g := NewGlobal([]float32{1})
	up := func(d float32) []Update { return []Update{{Peer: []byte("a"), Delta: []float32{d}, Examples: 5}} }
	g1, _ := s.Aggregate(1, g, up(1))  // v = 1, w = 1 + 2*1
	g2, _ := s.Aggregate(2, g1, up(3)) // v = 0.5 + 3, w = 3 + 2*3.5
	if g1.Weights[0] != 3 || g1.State.Vectors[0][0] != 1 || g2.Weights[0] != 10 || g2.State.Vectors[0][0] != 3.5 {
		t.Errorf("g1 = %+v, g2 = %+v", g1, g2)
	}
	if g2.State.Strategy != NameFedAvgM || g2.State.Step != 2 {
		t.Errorf("state = %+v", g2.State)
	}
}

func TestAdaptive(t *testing.T) {
	for _, name := range []string{NameFedAdam, NameFedYogi, NameFedAdagrad} {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			c.Strategy = name
			s := mustNew(t, c)
			g := NewGlobal([]float32{1, -1})
			var m, v [2]float64
			for i := range v {
				v[i] = float64(float32(1e-6))
			}
			w := [2]float64{1, -1}
			for round := uint64(1); round <= 3; round++ {
				d := []float32{0.25 * float32(round), -0.5}
				next, err := s.Aggregate(round, g, []Update{{Peer: []byte("p"), Delta: d, Examples: 3}})
				if err != nil {
					t.Fatal(err)
				}
				for j := range 2 {
					dj := float64(d[j])
					m[j] = float64(0.9*m[j]) + float64(float64(1-0.9)*dj)
					switch name {
					case NameFedAdam:
						v[j] = float64(0.99*v[j]) + float64(float64(1-0.99)*float64(dj*dj))
					case NameFedYogi:
						v[j] = v[j] - float64(float64(float64(1-0.99)*float64(dj*dj))*sign(v[j]-float64(dj*dj)))
					case NameFedAdagrad:
						v[j] = v[j] + float64(dj*dj)
					}
					w[j] = float64(float32(float64(w[j]) + float64(0.01*m[j])/(math.Sqrt(v[j])+1e-3)))
					if next.Weights[j] != float32(w[j]) || next.State.Vectors[0][j] != float32(m[j]) || next.State.Vectors[1][j] != float32(v[j]) {
						t.Fatalf("round %d coordinate %d: w %v m %v v %v, want %v %v %v", round, j,
							next.Weights[j], next.State.Vectors[0][j], next.State.Vectors[1][j], float32(w[j]), float32(m[j]), float32(v[j]))
					}
					m[j], v[j] = float64(float32(m[j])), float64(float32(v[j]))
				}
				if next.State.Strategy != name || next.State.Step != round || len(next.State.Vectors) != 2 {
					t.Fatalf("state = %+v", next.State)
				}
				g = next
			}
		})
	}
}

func TestStrategySwitchResetsState(t *testing.T) {
	c := DefaultConfig()
	c.Strategy = NameFedAdam
	up := []Update{{Peer: []byte("p"), Delta: []float32{1}, Examples: 1}}
	g, _ := mustNew(t, c).Aggregate(1, NewGlobal([]float32{0}), up)
	g, _ = mustNew(t, c).Aggregate(2, g, up)
	c.Strategy = NameFedAvgM
	g, err := mustNew(t, c).Aggregate(3, g, up)
	if err != nil {
		t.Fatal(err)
	}
	if g.State.Strategy != NameFedAvgM || g.State.Step != 1 || len(g.State.Vectors) != 1 || g.State.Vectors[0][0] != 1 {
		t.Errorf("after switching to fedavgm: state = %+v", g.State)
	}
	c.Strategy = NameMedian
	if g, _ = mustNew(t, c).Aggregate(4, g, up); g.State.Vectors != nil || g.State.Step != 1 {
		t.Errorf("after switching to median: state = %+v", g.State)
	}
}

func TestBadStateIsAnError(t *testing.T) {
	up := []Update{{Peer: []byte("p"), Delta: []float32{1, 2}, Examples: 1}}
	for _, tc := range []struct {
		name string
		st   State
	}{
		{NameFedAdam, State{Strategy: NameFedAdam, Vectors: [][]float32{{0, 0}}}},
		{NameFedYogi, State{Strategy: NameFedYogi, Vectors: [][]float32{{0, 0}, {0}}}},
		{NameFedAvgM, State{Strategy: NameFedAvgM}},
	} {
		c := DefaultConfig()
		c.Strategy = tc.name
		g := &Global{Weights: []float32{0, 0}, State: tc.st}
		if next, err := mustNew(t, c).Aggregate(1, g, up); !errors.Is(err, ErrState) || next != nil {
			t.Errorf("%s with state %+v: Aggregate = %v, %v; want ErrState", tc.name, tc.st, next, err)
		}
	}
}

func robust(t *testing.T, name string, f func(*Config)) Strategy {
	c := DefaultConfig()
	c.Strategy = name
	if f != nil {
		f(&c)
	}
	return mustNew(t, c)
}

func ups(deltas ...float32) []Update {
	us := make([]Update, len(deltas))
	for i, d := range deltas {
		us[i] = Update{Peer: []byte{byte('a' + i)}, Delta: []float32{d}, Examples: int64(1 + i)}
	}
	return us
}

func TestRobustRules(t *testing.T) {
	g := NewGlobal([]float32{100})
	for _, tc := range []struct {
		name string
		s    Strategy
		us   []Update
		want float32 // 0 means no new model
	}{
		{"median odd", robust(t, NameMedian, nil), ups(5, -3, 1e6, 2, 1), 102},
		{"median even", robust(t, NameMedian, nil), ups(5, -3, 1e6, 2), 103.5},
		{"median one", robust(t, NameMedian, nil), ups(-7), 93},
		{"trimmed 0.2 of 5", robust(t, NameTrimmedMean, func(c *Config) { c.TrimFraction = 0.2 }), ups(5, -3, 1e6, 2, 1), 100 + 8.0/3},
		{"trimmed 0.2 of 4 trims none", robust(t, NameTrimmedMean, func(c *Config) { c.TrimFraction = 0.2 }), ups(4, -4, 8, 0), 102},
		{"trimmed 0 is the plain mean", robust(t, NameTrimmedMean, nil), ups(1, 2, 3, 6), 103},
		{"krum f=1 drops the outlier", robust(t, NameKrum, func(c *Config) { c.Byzantine = 1 }), ups(1, 1.5, 1e6, 2, 1.25), 101.25},
		{"krum ties go to the lowest peer", robust(t, NameKrum, nil), ups(1, 0, -1), 101},
		{"krum too few", robust(t, NameKrum, func(c *Config) { c.Byzantine = 1 }), ups(1, 2, 3, 4), 0},
		{"krum f=0 needs 3", robust(t, NameKrum, nil), ups(1, 2), 0},
		// Scores (f=1, 3 neighbors): 1 -> 0.25+1+4, 1.5 -> 0.25+0.25+2.25, 2 -> 1+0.25+... picks m=3 lowest.
		{"multikrum m=3", robust(t, NameMultiKrum, func(c *Config) { c.Byzantine, c.MultiKrumM = 1, 3 }), ups(1, 1.5, 1e6, 2, 3), 100 + (1*1+2*1.5+4*2)/7.0},
		{"multikrum m>n-f is capped", robust(t, NameMultiKrum, func(c *Config) { c.Byzantine, c.MultiKrumM = 1, 10 }), ups(1, 1.5, 1e6, 2, 3), 100 + (1*1+2*1.5+4*2+5*3)/12.0},
		{"multikrum too few", robust(t, NameMultiKrum, func(c *Config) { c.Byzantine = 2 }), ups(1, 2, 3, 4, 5, 6), 0},
	} {
		next, err := tc.s.Aggregate(1, g, tc.us)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		switch {
		case tc.want == 0 && next != nil:
			t.Errorf("%s: got a model %v, want none", tc.name, next.Weights)
		case tc.want != 0 && next == nil:
			t.Errorf("%s: no model, want %v", tc.name, tc.want)
		case tc.want != 0 && next.Weights[0] != tc.want:
			t.Errorf("%s: weight %v, want %v", tc.name, next.Weights[0], tc.want)
		}
	}
}

// recorder is a Strategy that keeps the updates it is given.
type recorder struct{ got []Update }

func (r *recorder) Name() string                          { return "recorder" }
func (r *recorder) Configure(uint64, *Global) TrainConfig { return TrainConfig{Epochs: 7} }
func (r *recorder) Aggregate(_ uint64, g *Global, us []Update) (*Global, error) {
	r.got = us
	return g.Clone(), nil
}

func TestClipBoundsNorms(t *testing.T) {
	r := newRand(15)
	for trial := range 50 {
		dim := 1 + r.IntN(5000)
		us := randUpdates(r, 6, dim, nastyValue)
		us[0].Delta = make([]float32, dim) // zero stays zero
		if dim > 1 {
			us[1].Delta[0] = math.MaxFloat32 // finite, huge norm
		}
		norms := make([]float64, len(us))
		for i, u := range us {
			norms[i] = l2Norm(u.Delta)
		}
		bound := []float64{1e-30, 1e-3, 1, 1e30}[trial%4]
		rec := &recorder{}
		c := Clip{Inner: rec, Norm: bound}
		if _, err := c.Aggregate(1, NewGlobal(make([]float32, dim)), us); err != nil {
			t.Fatal(err)
		}
		for i, u := range rec.got {
			n := l2Norm(u.Delta)
			if n > bound {
				t.Fatalf("trial %d update %d: clipped norm %v > %v", trial, i, n, bound)
			}
			if norms[i] <= bound && &u.Delta[0] != &us[i].Delta[0] {
				t.Errorf("trial %d update %d: within the bound but copied", trial, i)
			}
			if norms[i] > bound && n < bound*(1-1e-5) {
				t.Errorf("trial %d update %d: clipped to %v, far below %v", trial, i, n, bound)
			}
			if l2Norm(us[i].Delta) != norms[i] {
				t.Fatalf("trial %d: Clip modified update %d", trial, i)
			}
			if u.Examples != us[i].Examples || string(u.Peer) != string(us[i].Peer) {
				t.Errorf("trial %d: Clip changed update %d's peer or examples", trial, i)
			}
		}
	}
}

func TestClipKeepsDirection(t *testing.T) {
	rec := &recorder{}
	c := Clip{Inner: rec, Norm: 1}
	_, err := c.Aggregate(1, NewGlobal(make([]float32, 2)), []Update{{Peer: []byte("x"), Delta: []float32{30, -40}, Examples: 1}})
	if err != nil {
		t.Fatal(err)
	}
	// float32(0.6) and float32(-0.8) have a norm just above 1, so the
	// clipped delta sits a few ulps below them.
	got := rec.got[0].Delta
	if math.Abs(float64(got[0])-0.6) > 1e-6 || math.Abs(float64(got[1])+0.8) > 1e-6 || l2Norm(got) > 1 {
		t.Errorf("clipped delta = %v (norm %v), want about [0.6 -0.8] with norm <= 1", got, l2Norm(got))
	}
	if c.Name() != "recorder+clip" || c.Configure(1, nil).Epochs != 7 {
		t.Errorf("Clip does not delegate Name or Configure")
	}
}

func TestClipErrors(t *testing.T) {
	g := NewGlobal([]float32{0})
	us := []Update{{Peer: []byte("x"), Delta: []float32{1}, Examples: 1}}
	for _, c := range []Clip{{Inner: nil, Norm: 1}, {Inner: &recorder{}, Norm: 0}, {Inner: &recorder{}, Norm: math.Inf(1)}, {Inner: &recorder{}, Norm: math.NaN()}} {
		if _, err := c.Aggregate(1, g, us); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	inf := []Update{{Peer: []byte("x"), Delta: []float32{float32(math.Inf(1))}, Examples: 1}}
	if _, err := (Clip{Inner: &recorder{}, Norm: 1}).Aggregate(1, g, inf); !errors.Is(err, ErrNonFinite) {
		t.Errorf("Clip of an infinite delta: %v, want ErrNonFinite", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, name := range strategyNames {
		c := DefaultConfig()
		c.Strategy = name
		if err := c.Validate(); err != nil {
			t.Errorf("DefaultConfig with %s: %v", name, err)
		}
	}
	for _, tc := range []struct {
		field string
		f     func(*Config)
	}{
		{"Strategy", func(c *Config) { c.Strategy = "fedsgd" }},
		{"Strategy", func(c *Config) { c.Strategy = "" }},
		{"Train.Epochs", func(c *Config) { c.Train.Epochs = 0 }},
		{"Train.BatchSize", func(c *Config) { c.Train.BatchSize = -1 }},
		{"Train.LR", func(c *Config) { c.Train.LR = 0 }},
		{"Train.LR", func(c *Config) { c.Train.LR = math.NaN() }},
		{"Train.ProxMu", func(c *Config) { c.Train.ProxMu = -0.1 }},
		{"ServerLR", func(c *Config) { c.ServerLR = -1 }},
		{"ServerLR", func(c *Config) { c.ServerLR = math.Inf(1) }},
		{"ClipNorm", func(c *Config) { c.ClipNorm = -1 }},
		{"Byzantine", func(c *Config) { c.Byzantine = -1 }},
		{"MultiKrumM", func(c *Config) { c.MultiKrumM = -2 }},
		{"Momentum", func(c *Config) { c.Strategy, c.Momentum = NameFedAvgM, 1 }},
		{"Beta1", func(c *Config) { c.Strategy, c.Beta1 = NameFedAdam, -0.1 }},
		{"Beta2", func(c *Config) { c.Strategy, c.Beta2 = NameFedYogi, 1.5 }},
		{"Tau", func(c *Config) { c.Strategy, c.Tau = NameFedAdagrad, 0 }},
		{"TrimFraction", func(c *Config) { c.Strategy, c.TrimFraction = NameTrimmedMean, 0.5 }},
		{"TrimFraction", func(c *Config) { c.Strategy, c.TrimFraction = NameTrimmedMean, -0.1 }},
	} {
		c := DefaultConfig()
		tc.f(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: Validate = %v, want an error naming the field", tc.field, err)
			continue
		}
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted an invalid config", tc.field)
		}
	}
	c := DefaultConfig()
	c.Strategy = "fedsgd"
	if err := c.Validate(); !strings.Contains(err.Error(), strings.Join(strategyNames, ", ")) {
		t.Errorf("unknown strategy error %q does not list the valid ones", err)
	}
	// Parameters of other strategies are not checked.
	c = DefaultConfig()
	c.Momentum, c.Tau, c.TrimFraction = 5, 0, 0.9
	if err := c.Validate(); err != nil {
		t.Errorf("fedavg with unused bad parameters: %v", err)
	}
}

func TestNew(t *testing.T) {
	for _, nc := range allConfigs() {
		s := mustNew(t, nc.cfg)
		want := nc.cfg.Strategy
		if nc.cfg.ClipNorm > 0 {
			want += "+clip"
			if _, ok := s.(Clip); !ok {
				t.Errorf("%s: ClipNorm > 0 but not wrapped in Clip", nc.name)
			}
		}
		if s.Name() != want {
			t.Errorf("%s: Name = %q, want %q", nc.name, s.Name(), want)
		}
		if got := s.Configure(3, NewGlobal(nil)); got != nc.cfg.Train {
			t.Errorf("%s: Configure = %+v, want %+v", nc.name, got, nc.cfg.Train)
		}
	}
	// ServerLR 0 is the strategy's default: 1 for fedavg, 0.01 for the adaptive ones.
	g := NewGlobal([]float32{0})
	up := []Update{{Peer: []byte("p"), Delta: []float32{2}, Examples: 1}}
	next, _ := mustNew(t, DefaultConfig()).Aggregate(1, g, up)
	c := DefaultConfig()
	c.Strategy = NameFedAdagrad
	adagrad, _ := mustNew(t, c).Aggregate(1, g, up)
	c.ServerLR = 0.01
	adagrad001, _ := mustNew(t, c).Aggregate(1, g, up)
	if next.Weights[0] != 2 || adagrad.Digest() != adagrad001.Digest() {
		t.Errorf("ServerLR defaults: fedavg %v, fedadagrad %v vs %v", next.Weights, adagrad.Weights, adagrad001.Weights)
	}
}

func TestNeedsIndividualUpdates(t *testing.T) {
	for _, nc := range allConfigs() {
		want := nc.cfg.ClipNorm > 0 || slices.Contains([]string{NameMedian, NameTrimmedMean, NameKrum, NameMultiKrum}, nc.cfg.Strategy)
		if got := nc.cfg.NeedsIndividualUpdates(); got != want {
			t.Errorf("%s: NeedsIndividualUpdates = %v, want %v", nc.name, got, want)
		}
	}
}
