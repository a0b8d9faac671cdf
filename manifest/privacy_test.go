package manifest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPrivacyDefaults(t *testing.T) {
	s := load(t, "secagg.good.yaml").Privacy.SecAgg
	if want := (SecAgg{KMin: 2, Clip: 1, Scale: 1 << 20, MaxWeight: 1000, PhaseDeadline: Duration(15 * time.Second)}); s != want {
		t.Errorf("secagg defaults %+v, want %+v", s, want)
	}
	u := load(t, "update.good.yaml").Privacy
	if want := (DP{Z: 1.1, Clip: 0.5, Scale: 1 << 20, Delta: 1e-5, Epsilon: 8}); u.DP != want || u.SecAgg != (SecAgg{}) {
		t.Errorf("update defaults %+v, want dp %+v and no secagg", u, want)
	}
	d := load(t, "dpsgd.good.yaml").Privacy.DP
	if d.Scale != 0 || d.Clip != 0 || d.Delta != 1e-5 {
		t.Errorf("dp-sgd takes no scale or clip: %+v", d)
	}
	if p := load(t, "distributed.good.yaml").Privacy.SecAgg; p.Clip != 0 || p.Scale != 0 || p.MaxWeight != 0 || p.KMin != 2 {
		t.Errorf("distributed takes no secagg clip, scale or max_weight: %+v", p)
	}

	// The defaults written out give the same consortium ID as left out.
	data, err := os.ReadFile(filepath.Join("testdata", "secagg.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	explicit := strings.Replace(string(data), "  mode: secagg\n",
		"  mode: secagg\n  secagg: {gamma: 0, k_min: 2, clip: 1, scale: 1048576, max_weight: 1000, phase_deadline: 15s}\n", 1)
	m, err := Parse([]byte(explicit), "explicit.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if m.ConsortiumID() != load(t, "secagg.good.yaml").ConsortiumID() {
		t.Errorf("explicit defaults changed the consortium ID")
	}

	// A manifest built in code: ApplyDefaults, then Validate; idempotent.
	c := Example(peers(5))
	c.Privacy = Privacy{Mode: PrivacyUpdate, DP: DP{Z: 1, Clip: 1, Epsilon: 3}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "privacy.dp.delta: 0, want in (0, 1)") {
		t.Errorf("Validate without defaults = %v, want delta reported", err)
	}
	c.ApplyDefaults()
	once := c.Privacy
	c.ApplyDefaults()
	if c.Privacy != once {
		t.Errorf("ApplyDefaults is not idempotent: %+v then %+v", once, c.Privacy)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate after ApplyDefaults: %v", err)
	}

	// The deadline / 4 is rounded down to whole ticks, at least one tick.
	c = Example(peers(5))
	c.Privacy.Mode = PrivacySecAgg
	c.Round.Tick = Duration(100 * time.Millisecond)
	c.Round.Deadline = Duration(1500 * time.Millisecond)
	c.ApplyDefaults()
	if got := c.Privacy.SecAgg.PhaseDeadline; got != Duration(300*time.Millisecond) || c.PhaseDeadlineTicks() != 3 {
		t.Errorf("phase_deadline of a 15-tick deadline = %v (%d ticks), want 300ms", got, c.PhaseDeadlineTicks())
	}
}

func TestGammaFor(t *testing.T) {
	for _, tc := range []struct{ gamma, n, want int }{{0, 3, 1}, {0, 10, 3}, {0, 2, 0}, {2, 10, 2}} {
		if got := (SecAgg{Gamma: tc.gamma}).GammaFor(tc.n); got != tc.want {
			t.Errorf("gamma %d, n %d: %d, want %d", tc.gamma, tc.n, got, tc.want)
		}
	}
}

func TestSecAggStrategies(t *testing.T) {
	for _, name := range []string{"median", "trimmedmean", "krum", "multikrum"} {
		for _, mode := range []string{PrivacySecAgg, PrivacyDistributed} {
			m := Example(peers(5))
			m.Strategy.Name = name
			m.Privacy = Privacy{Mode: mode}
			if mode == PrivacyDistributed {
				m.Privacy.DP = DP{Z: 1, Clip: 1, Epsilon: 3}
			}
			m.ApplyDefaults()
			if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "strategy.name: "+name+" needs every participant's individual update") {
				t.Errorf("%s under %s: %v", name, mode, err)
			}
		}
	}
	// Norm clipping is allowed under secure aggregation, and the robust
	// rules under the modes that reveal (noisy) individual updates.
	m := Example(peers(5))
	m.Strategy.ClipNorm = 2
	m.Privacy = Privacy{Mode: PrivacySecAgg}
	m.ApplyDefaults()
	if err := m.Validate(); err != nil {
		t.Errorf("fedavg with clip_norm under secagg: %v", err)
	}
	m = Example(peers(5))
	m.Strategy.Name = "median"
	m.Privacy = Privacy{Mode: PrivacyUpdate, DP: DP{Z: 1, Clip: 1, Epsilon: 3}}
	m.ApplyDefaults()
	if err := m.Validate(); err != nil {
		t.Errorf("median under update: %v", err)
	}
}
