package manifest

import (
	"math"
	"strings"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/privacy/dp"
)

// Privacy selects how updates are protected (PRIVACY.md). Each mode uses
// some fields of the two sections (the table below); a field the mode does
// not use must be left out (zero), and a used field left out takes its
// default when the manifest is parsed (ApplyDefaults). A manifest of mode
// none therefore has no sections, and its canonical encoding is
// {"mode":"none"}, as before the sections existed.
//
//	mode         secagg                                          dp
//	none         -                                               -
//	secagg       gamma k_min clip scale max_weight phase_deadline -
//	update       -                                               z clip scale delta epsilon
//	distributed  gamma k_min phase_deadline                      z clip scale delta epsilon
//	dp-sgd       -                                               z example_clip delta epsilon
type Privacy struct {
	// Mode is none, secagg, update, distributed or dp-sgd. Default none.
	Mode string `yaml:"mode" json:"mode"`
	// SecAgg parameterizes secure aggregation (modes secagg, distributed).
	SecAgg SecAgg `yaml:"secagg,omitempty" json:"secagg,omitzero"`
	// DP parameterizes differential privacy (modes update, distributed,
	// dp-sgd).
	DP DP `yaml:"dp,omitempty" json:"dp,omitzero"`
}

// SecAgg holds the secure-aggregation parameters (PRIVACY.md section 1).
type SecAgg struct {
	// Gamma is the number of colluding participants tolerated, >= 0; 0
	// (the default) means floor(n/3) of each round's sample of n (GammaFor).
	// A consortium cannot ask for "no collusion tolerated".
	Gamma int `yaml:"gamma,omitempty" json:"gamma,omitempty"`
	// KMin >= 2 is the fewest honest updates a revealed sum may contain.
	// Default 2.
	KMin int `yaml:"k_min,omitempty" json:"k_min,omitempty"`
	// Clip bounds every coordinate of an update before encoding (+/- Clip),
	// > 0. Default 1 (mode secagg only).
	Clip float64 `yaml:"clip,omitempty" json:"clip,omitempty"`
	// Scale is the fixed-point scale of the encoding mod 2^64, > 0.
	// Default 2^20 (mode secagg only).
	Scale float64 `yaml:"scale,omitempty" json:"scale,omitempty"`
	// MaxWeight clamps a participant's FedAvg weight (its example count),
	// 1..round.max_examples_per_member. Default max_examples_per_member
	// (mode secagg only).
	MaxWeight int64 `yaml:"max_weight,omitempty" json:"max_weight,omitempty"`
	// PhaseDeadline bounds each phase (keys, shares, input, reveal): a
	// whole number of ticks, at least one tick and at most round.deadline.
	// Default round.deadline / 4, rounded down to whole ticks.
	PhaseDeadline Duration `yaml:"phase_deadline,omitempty" json:"phase_deadline,omitempty"`
}

// DP holds the differential-privacy parameters (PRIVACY.md section 2).
type DP struct {
	// Z is the noise multiplier: noise standard deviation over the bound,
	// > 0. Required.
	Z float64 `yaml:"z,omitempty" json:"z,omitempty"`
	// Clip is S, the L2 bound of an update, > 0 (update, distributed).
	// Required.
	Clip float64 `yaml:"clip,omitempty" json:"clip,omitempty"`
	// ExampleClip is the L2 bound of one example's gradient, > 0 (dp-sgd).
	// Required.
	ExampleClip float64 `yaml:"example_clip,omitempty" json:"example_clip,omitempty"`
	// Scale is the fixed-point grid of the update and distributed modes: one
	// step is 1/Scale, > 0, clip x scale <= 2^40. Default 2^20.
	Scale float64 `yaml:"scale,omitempty" json:"scale,omitempty"`
	// Delta is the delta of the (epsilon, delta) every node reports, in
	// (0, 1). Default 1e-5.
	Delta float64 `yaml:"delta,omitempty" json:"delta,omitempty"`
	// Epsilon is the ceiling, > 0: a node whose next participation would
	// spend more declines the round. A node's config may only lower it.
	// Required.
	Epsilon float64 `yaml:"epsilon,omitempty" json:"epsilon,omitempty"`
}

// Defaults of the privacy fields (PRIVACY.md).
const (
	DefaultKMin        = 2       // privacy.secagg.k_min
	DefaultSecAggClip  = 1.0     // privacy.secagg.clip
	DefaultSecAggScale = 1 << 20 // privacy.secagg.scale
	DefaultDPScale     = 1 << 20 // privacy.dp.scale
	DefaultDelta       = 1e-5    // privacy.dp.delta
	// PhasesPerRound is the number of secure-aggregation phases the
	// default phase_deadline divides round.deadline by.
	PhasesPerRound = 4
	// MinSecAggSample is the smallest round sample secure aggregation runs
	// with (PRIVACY.md section 1: n >= 3).
	MinSecAggSample = 3
)

// Modes lists the privacy modes.
var Modes = []string{PrivacyNone, PrivacySecAgg, PrivacyUpdate, PrivacyDistributed, PrivacyDPSGD}

// UsesSecAgg reports whether the mode runs secure aggregation.
func (p Privacy) UsesSecAgg() bool {
	return p.Mode == PrivacySecAgg || p.Mode == PrivacyDistributed
}

// UsesDP reports whether the mode adds noise and keeps a budget.
func (p Privacy) UsesDP() bool {
	return p.Mode == PrivacyUpdate || p.Mode == PrivacyDistributed || p.Mode == PrivacyDPSGD
}

// UpdateNoise is the update mode's mechanism (privacy.dp's z, clip and
// scale).
func (p Privacy) UpdateNoise() dp.UpdateNoise {
	return dp.UpdateNoise{Z: p.DP.Z, Clip: p.DP.Clip, Scale: p.DP.Scale}
}

// DistributedNoise is the distributed mode's encoding (privacy.dp's z,
// clip and scale, conditional rounding at dp.DefaultBeta) for a round that
// counts on honest inputs (t - gamma of its sample).
func (p Privacy) DistributedNoise(honest int) dp.DistributedNoise {
	return dp.DistributedNoise{Z: p.DP.Z, Clip: p.DP.Clip, Scale: p.DP.Scale, Honest: honest, Beta: dp.DefaultBeta}
}

// GammaFor is the number of colluders tolerated in a round whose sample
// has n members: Gamma, or floor(n/3) when Gamma is 0.
func (s SecAgg) GammaFor(n int) int {
	if s.Gamma > 0 {
		return s.Gamma
	}
	return n / 3
}

// privacyField is one field of the privacy sections: its path, whether it
// is set, the modes that use it and why the others do not.
type privacyField struct {
	path string
	set  bool
	used []string
	why  string // why a mode that uses the section does not use the field
}

func (p *Privacy) fields() []privacyField {
	s, d := p.SecAgg, p.DP
	sa := []string{PrivacySecAgg, PrivacyDistributed}
	secOnly := []string{PrivacySecAgg}
	const ddgOwn = "the distributed mode encodes with dp.clip and dp.scale (Distributed Discrete Gaussian)"
	return []privacyField{
		{"privacy.secagg.gamma", s.Gamma != 0, sa, ""},
		{"privacy.secagg.k_min", s.KMin != 0, sa, ""},
		{"privacy.secagg.clip", s.Clip != 0, secOnly, ddgOwn},
		{"privacy.secagg.scale", s.Scale != 0, secOnly, ddgOwn},
		{"privacy.secagg.max_weight", s.MaxWeight != 0, secOnly, "the distributed mode aggregates the unweighted mean"},
		{"privacy.secagg.phase_deadline", s.PhaseDeadline != 0, sa, ""},
		{"privacy.dp.z", d.Z != 0, []string{PrivacyUpdate, PrivacyDistributed, PrivacyDPSGD}, ""},
		{"privacy.dp.clip", d.Clip != 0, []string{PrivacyUpdate, PrivacyDistributed}, "dp-sgd bounds each example's gradient, with dp.example_clip"},
		{"privacy.dp.example_clip", d.ExampleClip != 0, []string{PrivacyDPSGD}, "it bounds one example's gradient in dp-sgd; this mode bounds whole updates with dp.clip"},
		{"privacy.dp.scale", d.Scale != 0, []string{PrivacyUpdate, PrivacyDistributed}, "dp-sgd adds continuous noise to gradients, on no grid"},
		{"privacy.dp.delta", d.Delta != 0, []string{PrivacyUpdate, PrivacyDistributed, PrivacyDPSGD}, ""},
		{"privacy.dp.epsilon", d.Epsilon != 0, []string{PrivacyUpdate, PrivacyDistributed, PrivacyDPSGD}, ""},
	}
}

// ApplyDefaults fills in the privacy fields the mode uses and m leaves at
// zero with their defaults (secagg: k_min 2, clip 1, scale 2^20,
// max_weight = round.max_examples_per_member, phase_deadline =
// round.deadline / 4 in whole ticks; dp: scale 2^20, delta 1e-5). Fields
// the mode does not use, and the required ones (z, clip, example_clip,
// epsilon), are left alone, for Validate to report. Parse calls it; a
// manifest built in code calls it before Validate. It is idempotent.
func (m *Manifest) ApplyDefaults() {
	p := &m.Privacy
	if p.Mode == PrivacySecAgg {
		if p.SecAgg.Clip == 0 {
			p.SecAgg.Clip = DefaultSecAggClip
		}
		if p.SecAgg.Scale == 0 {
			p.SecAgg.Scale = DefaultSecAggScale
		}
		if p.SecAgg.MaxWeight == 0 {
			p.SecAgg.MaxWeight = m.Round.MaxExamplesPerMember
		}
	}
	if p.UsesSecAgg() {
		if p.SecAgg.KMin == 0 {
			p.SecAgg.KMin = DefaultKMin
		}
		if p.SecAgg.PhaseDeadline == 0 && m.Round.Tick > 0 {
			ticks := m.Round.Deadline / m.Round.Tick / PhasesPerRound
			p.SecAgg.PhaseDeadline = max(ticks, 1) * m.Round.Tick
		}
	}
	if p.Mode == PrivacyUpdate || p.Mode == PrivacyDistributed {
		if p.DP.Scale == 0 {
			p.DP.Scale = DefaultDPScale
		}
	}
	if p.UsesDP() && p.DP.Delta == 0 {
		p.DP.Delta = DefaultDelta
	}
}

// robustStrategies need every individual update, which secure aggregation
// never reveals.
var robustStrategies = []string{fedavg.NameMedian, fedavg.NameTrimmedMean, fedavg.NameKrum, fedavg.NameMultiKrum}

// SampleSize is the number of members sampled per round at genesis: k =
// max(min_participants, ceil(fraction x members)) + over_select, at most
// the number of members.
func (m *Manifest) SampleSize() int {
	n := len(m.Members)
	k := int(math.Ceil(m.Round.Fraction * float64(n)))
	k = max(k, m.Round.MinParticipants) + m.Round.OverSelect
	return min(k, n)
}

func (m *Manifest) validatePrivacy(v *validator) {
	p := &m.Privacy
	known := false
	for _, mode := range Modes {
		known = known || p.Mode == mode
	}
	if !known {
		v.bad("privacy.mode", "%q unknown, want one of %s", p.Mode, strings.Join(Modes, ", "))
		return
	}
	used := true
	for _, f := range p.fields() {
		if !f.set || contains(f.used, p.Mode) {
			continue
		}
		used = false
		section, _, _ := strings.Cut(strings.TrimPrefix(f.path, "privacy."), ".")
		switch {
		case f.why != "" && ((section == "secagg" && p.UsesSecAgg()) || (section == "dp" && p.UsesDP())):
			v.bad(f.path, "set, but mode %s does not use it (%s); remove it", p.Mode, f.why)
		default:
			v.bad(f.path, "set, but mode %s uses no %s section; remove it", p.Mode, section)
		}
	}
	if !used {
		return
	}
	if p.UsesSecAgg() {
		m.validateSecAgg(v)
	}
	if p.UsesDP() {
		m.validateDP(v)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func (m *Manifest) validateSecAgg(v *validator) {
	s, mode := m.Privacy.SecAgg, m.Privacy.Mode
	if contains(robustStrategies, m.Strategy.Name) {
		v.bad("strategy.name", "%s needs every participant's individual update, and under privacy.mode %s secure aggregation reveals only their sum (PRIVACY.md section 3); use fedavg, fedavgm, fedadam, fedyogi or fedadagrad (strategy.clip_norm stays allowed: clipping happens before encoding)",
			m.Strategy.Name, mode)
	}
	n := m.SampleSize()
	if len(m.Members) > 0 && n < MinSecAggSample {
		v.bad("round", "a round samples %d members, want >= %d under privacy.mode %s (secure aggregation needs n >= 3; raise round.fraction, min_participants or over_select)", n, MinSecAggSample, mode)
	}
	if s.Gamma < 0 {
		v.bad("privacy.secagg.gamma", "%d, want >= 0 (0: floor(n/3) of each round's sample)", s.Gamma)
	}
	if s.KMin < 2 {
		v.bad("privacy.secagg.k_min", "%d, want >= 2", s.KMin)
	}
	if s.Gamma >= 0 && s.KMin >= 2 && len(m.Members) > 0 && n >= MinSecAggSample {
		if g := s.GammaFor(n); g+s.KMin > n {
			v.bad("privacy.secagg", "gamma %d + k_min %d = %d is more than a round's %d sampled members: no sum could ever be unmasked", g, s.KMin, g+s.KMin, n)
		}
	}
	if mode == PrivacySecAgg {
		clipOK := v.positive("privacy.secagg.clip", s.Clip)
		scaleOK := v.positive("privacy.secagg.scale", s.Scale)
		weightOK := true
		if s.MaxWeight < 1 || (m.Round.MaxExamplesPerMember > 0 && s.MaxWeight > m.Round.MaxExamplesPerMember) {
			v.bad("privacy.secagg.max_weight", "%d, want 1..%d (round.max_examples_per_member)", s.MaxWeight, m.Round.MaxExamplesPerMember)
			weightOK = false
		}
		// Every coordinate of the sum of [w, w*x] must stay below 2^62, with
		// room to spare for the rounding, whatever the sample.
		if clipOK && scaleOK && weightOK {
			if bound := float64(len(m.Members)) * float64(s.MaxWeight) * s.Clip * s.Scale; !(bound <= 0x1p62) {
				v.bad("privacy.secagg", "members %d x max_weight %d x clip %v x scale %v = %.3g, want <= 2^62: the encoded sum would wrap around 2^64", len(m.Members), s.MaxWeight, s.Clip, s.Scale, bound)
			}
		}
	}
	if tick := m.Round.Tick; tick >= Duration(MinTick) {
		switch {
		case s.PhaseDeadline%tick != 0:
			v.bad("privacy.secagg.phase_deadline", "%v is not a whole number of ticks (round.tick is %v)", s.PhaseDeadline, tick)
		case s.PhaseDeadline < tick || s.PhaseDeadline > m.Round.Deadline:
			v.bad("privacy.secagg.phase_deadline", "%v, want from one tick (%v) to round.deadline (%v)", s.PhaseDeadline, tick, m.Round.Deadline)
		}
	}
}

func (m *Manifest) validateDP(v *validator) {
	d, mode := m.Privacy.DP, m.Privacy.Mode
	ok := v.required("privacy.dp.z", d.Z, mode)
	switch mode {
	case PrivacyUpdate, PrivacyDistributed:
		ok = v.required("privacy.dp.clip", d.Clip, mode) && ok
		ok = v.positive("privacy.dp.scale", d.Scale) && ok
	case PrivacyDPSGD:
		ok = v.required("privacy.dp.example_clip", d.ExampleClip, mode) && ok
	}
	if !(d.Delta > 0 && d.Delta < 1) {
		v.bad("privacy.dp.delta", "%v, want in (0, 1)", d.Delta)
	}
	v.required("privacy.dp.epsilon", d.Epsilon, mode)
	if ok && (mode == PrivacyUpdate || mode == PrivacyDistributed) {
		// The grid and the sampler's reach (clip x scale <= 2^40, the noise
		// below 2^50 grid steps), as package dp checks them.
		if err := m.Privacy.UpdateNoise().Validate(1); err != nil {
			v.errs = append(v.errs, dialect.Wrap("privacy.dp", err))
		} else if mode == PrivacyDistributed {
			// The least noise a participant adds is for a round counting on
			// its whole sample; it must still be a usable discrete Gaussian.
			if err := m.Privacy.DistributedNoise(max(m.SampleSize(), 1)).Validate(1); err != nil {
				v.errs = append(v.errs, dialect.Wrap("privacy.dp", err))
			}
		}
	}
}

// positive reports a float field that is not > 0 and finite.
func (v *validator) positive(field string, x float64) bool {
	if !(x > 0) || math.IsInf(x, 0) {
		v.bad(field, "%v, want > 0 and finite", x)
		return false
	}
	return true
}

// required reports a float field the mode needs that is missing, or not
// > 0 and finite.
func (v *validator) required(field string, x float64, mode string) bool {
	if x == 0 {
		v.bad(field, "required for privacy.mode %s (> 0)", mode)
		return false
	}
	return v.positive(field, x)
}

// PhaseDeadlineTicks is privacy.secagg.phase_deadline in ticks, 0 if the
// tick is not positive.
func (m *Manifest) PhaseDeadlineTicks() int {
	if m.Round.Tick <= 0 {
		return 0
	}
	return int(m.Privacy.SecAgg.PhaseDeadline / m.Round.Tick)
}
