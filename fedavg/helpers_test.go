package fedavg

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0)) }

// randValue returns a float32 in [-2^-7, 2^-7) built from integers and a
// power-of-two scale, so that generating test data involves no rounding and
// cannot depend on the CPU or on FMA fusion.
func randValue(r *rand.Rand) float32 {
	return float32(int32(r.Uint32()>>8)-1<<23) * 0x1p-30
}

func randVector(r *rand.Rand, dim int) []float32 {
	xs := make([]float32, dim)
	for i := range xs {
		xs[i] = randValue(r)
	}
	return xs
}

// nastyValue draws from values that stress the kernels: ties, signed zeros,
// subnormals, large and tiny magnitudes.
func nastyValue(r *rand.Rand) float32 {
	switch r.IntN(8) {
	case 0:
		return 0
	case 1:
		return float32(math.Copysign(0, -1))
	case 2:
		return []float32{1, -1, 0.5, -0.25, 3}[r.IntN(5)]
	case 3:
		return math.Float32frombits(r.Uint32N(1 << 23)) // subnormal, either sign below
	case 4:
		return -math.Float32frombits(r.Uint32N(1 << 23))
	case 5:
		return randValue(r) * 0x1p100
	}
	return randValue(r)
}

func randPeer(r *rand.Rand) []byte {
	p := make([]byte, 16)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

func randUpdates(r *rand.Rand, n, dim int, value func(*rand.Rand) float32) []Update {
	us := make([]Update, n)
	for i := range us {
		d := make([]float32, dim)
		for j := range d {
			d[j] = value(r)
		}
		us[i] = Update{Peer: randPeer(r), Delta: d, Examples: 1 + r.Int64N(1000)}
	}
	return us
}

func shuffled(r *rand.Rand, us []Update) []Update {
	c := slices.Clone(us)
	r.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
	return c
}

func mustNew(t testing.TB, c Config) Strategy {
	t.Helper()
	s, err := New(c)
	if err != nil {
		t.Fatalf("New(%+v): %v", c, err)
	}
	return s
}

// namedConfig is a strategy configuration under a test name.
type namedConfig struct {
	name string
	cfg  Config
}

// allConfigs returns one configuration of every strategy, plus clipped ones.
func allConfigs() []namedConfig {
	with := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	var cs []namedConfig
	for _, name := range strategyNames {
		cs = append(cs, namedConfig{name, with(func(c *Config) {
			c.Strategy = name
			c.TrimFraction = 0.2
			c.Byzantine = 1
		})})
	}
	cs = append(cs,
		namedConfig{"fedavg-lr0.7", with(func(c *Config) { c.ServerLR = 0.7 })},
		namedConfig{"fedavgm-lr0.3", with(func(c *Config) { c.Strategy, c.ServerLR = NameFedAvgM, 0.3 })},
		namedConfig{"multikrum-m3", with(func(c *Config) { c.Strategy, c.Byzantine, c.MultiKrumM = NameMultiKrum, 1, 3 })},
		namedConfig{"fedavg+clip", with(func(c *Config) { c.ClipNorm = 0.5 })},
		namedConfig{"trimmedmean+clip", with(func(c *Config) { c.Strategy, c.TrimFraction, c.ClipNorm = NameTrimmedMean, 0.2, 0.5 })},
		namedConfig{"fedadam+clip", with(func(c *Config) { c.Strategy, c.ClipNorm = NameFedAdam, 0.05 })},
	)
	return cs
}

func bitsEqual64(a, b []float64) (int, bool) {
	if len(a) != len(b) {
		return -1, false
	}
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return i, false
		}
	}
	return 0, true
}
