package manifest

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/internal/strictyaml"
)

// Limits Validate enforces.
const (
	// MinVoters is the smallest voter set: Raft with fewer voters cannot
	// lose one and keep a majority.
	MinVoters = 3
	// MinDeadlineTicks is the shortest round deadline, in ticks.
	MinDeadlineTicks = 10
	// MinElectionTicks is the shortest election timeout, in ticks; the
	// heartbeat is one tick and the timeout must leave room for a few.
	MinElectionTicks = 3
	// MinTick is the shortest protocol tick.
	MinTick = time.Millisecond
	// MaxInputValues bounds Height x Width x Channels, as package train does.
	MaxInputValues = 1 << 24
	// MaxClasses is the most output classes a model may have.
	MaxClasses = 256
)

// Validate checks every field of m and reports every problem it finds, each
// a *FieldError naming the field, joined with errors.Join.
func (m *Manifest) Validate() error {
	return strictyaml.Join(m.validate())
}

// validator collects FieldErrors.
type validator struct{ errs []*FieldError }

func (v *validator) bad(field, format string, args ...any) {
	v.errs = append(v.errs, dialect.Errorf(field, format, args...))
}

// finite reports a float field that is NaN or infinite and returns whether it
// was finite.
func (v *validator) finite(field string, x float64) bool {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		v.bad(field, "%v, want a finite number", x)
		return false
	}
	return true
}

func (m *Manifest) validate() []*FieldError {
	var v validator
	m.validateName(&v)
	m.validateMembers(&v)
	m.validateModel(&v)
	trainingOK := m.validateTraining(&v)
	m.validateRound(&v)
	m.validateStrategy(&v, trainingOK)
	m.validatePrivacy(&v)
	return v.errs
}

func (m *Manifest) validateName(v *validator) {
	switch {
	case strings.TrimSpace(m.Name) == "":
		v.bad("name", "required")
	case !utf8.ValidString(m.Name):
		v.bad("name", "%q is not valid UTF-8", m.Name)
	case strings.ContainsFunc(m.Name, unicode.IsControl):
		v.bad("name", "%q contains control characters", m.Name)
	}
}

func (m *Manifest) validateMembers(v *validator) {
	voters := 0
	first := make(map[string]int, len(m.Members)) // peer ID bytes -> index
	for i, mem := range m.Members {
		if mem.Voter {
			voters++
		}
		field := fmt.Sprintf("members[%d].id", i)
		if mem.ID == "" {
			v.bad(field, "required")
			continue
		}
		id, err := identity.ParsePeerID(mem.ID)
		if err != nil {
			v.bad(field, "%v", err)
			continue
		}
		if j, dup := first[string(id)]; dup {
			v.bad(field, "%s duplicates members[%d]", mem.ID, j)
			continue
		}
		first[string(id)] = i
	}
	if voters < MinVoters {
		v.bad("members", "%d voters among %d members, want >= %d (3 to 7 recommended; set voter: true)", voters, len(m.Members), MinVoters)
	}
}

func (m *Manifest) validateModel(v *validator) {
	md := m.Model
	switch md.Arch {
	case ArchLogReg, Arch2NN, ArchCNN:
	case "":
		v.bad("model.arch", "required (%s, %s or %s)", ArchLogReg, Arch2NN, ArchCNN)
	default:
		v.bad("model.arch", "%q unknown, want %s, %s or %s", md.Arch, ArchLogReg, Arch2NN, ArchCNN)
	}
	shapeOK := true
	for _, d := range []struct {
		field string
		n     int
	}{{"model.height", md.Height}, {"model.width", md.Width}, {"model.channels", md.Channels}} {
		switch {
		case d.n < 1:
			v.bad(d.field, "%d, want >= 1", d.n)
			shapeOK = false
		case d.n > MaxInputValues:
			v.bad(d.field, "%d, want <= %d", d.n, MaxInputValues)
			shapeOK = false
		}
	}
	if shapeOK {
		// Each factor is at most 2^24, so neither product overflows.
		if hw := md.Height * md.Width; hw > MaxInputValues || hw*md.Channels > MaxInputValues {
			v.bad("model", "input %dx%dx%d is too large, want at most %d values per example", md.Height, md.Width, md.Channels, MaxInputValues)
		}
	}
	if md.Arch == ArchCNN {
		if md.Height%4 != 0 {
			v.bad("model.height", "%d, want a multiple of 4 for cnn (two 2x2 max-pools)", md.Height)
		}
		if md.Width%4 != 0 {
			v.bad("model.width", "%d, want a multiple of 4 for cnn (two 2x2 max-pools)", md.Width)
		}
	}
	if md.Classes < 2 || md.Classes > MaxClasses {
		v.bad("model.classes", "%d, want 2..%d", md.Classes, MaxClasses)
	}
	if len(md.Labels) > 0 && len(md.Labels) != md.Classes {
		v.bad("model.labels", "%d names for %d classes, want one per class (or none)", len(md.Labels), md.Classes)
	}
	seen := map[string]int{}
	for i, l := range md.Labels {
		field := fmt.Sprintf("model.labels[%d]", i)
		switch j, dup := seen[l]; {
		case l == "" || strings.TrimSpace(l) != l:
			v.bad(field, "%q, want a name without spaces around it", l)
		case dup:
			v.bad(field, "%q duplicates model.labels[%d]", l, j)
		default:
			seen[l] = i
		}
	}
}

// validateTraining reports whether the training fields are valid.
func (m *Manifest) validateTraining(v *validator) bool {
	n := len(v.errs)
	t := m.Training
	if t.Rounds < 0 {
		v.bad("training.rounds", "%d, want >= 0 (0 runs until stopped)", t.Rounds)
	}
	if t.Epochs < 1 {
		v.bad("training.epochs", "%d, want >= 1", t.Epochs)
	}
	if t.BatchSize < 1 {
		v.bad("training.batch_size", "%d, want >= 1", t.BatchSize)
	}
	if !(t.LR > 0) || math.IsInf(t.LR, 0) {
		v.bad("training.lr", "%v, want > 0 and finite", t.LR)
	}
	if !(t.ProxMu >= 0) || math.IsInf(t.ProxMu, 0) {
		v.bad("training.prox_mu", "%v, want >= 0 and finite", t.ProxMu)
	}
	return len(v.errs) == n
}

func (m *Manifest) validateRound(v *validator) {
	r := m.Round
	if !(r.Fraction > 0 && r.Fraction <= 1) {
		v.bad("round.fraction", "%v, want in (0, 1]", r.Fraction)
	}
	switch {
	case r.MinParticipants < 1:
		v.bad("round.min_participants", "%d, want >= 1", r.MinParticipants)
	case len(m.Members) > 0 && r.MinParticipants > len(m.Members):
		v.bad("round.min_participants", "%d, want <= %d (the number of members)", r.MinParticipants, len(m.Members))
	}
	if r.OverSelect < 0 {
		v.bad("round.over_select", "%d, want >= 0", r.OverSelect)
	}
	if time.Duration(r.Tick) < MinTick {
		v.bad("round.tick", "%v, want >= %v", r.Tick, MinTick)
	} else {
		switch ticks := r.Deadline / r.Tick; {
		case r.Deadline%r.Tick != 0:
			v.bad("round.deadline", "%v is not a whole number of ticks (round.tick is %v)", r.Deadline, r.Tick)
		case ticks < MinDeadlineTicks:
			v.bad("round.deadline", "%v is %d ticks of %v, want >= %d ticks", r.Deadline, int64(ticks), r.Tick, MinDeadlineTicks)
		}
	}
	if r.ElectionTicks < MinElectionTicks {
		v.bad("round.election_ticks", "%d, want >= %d", r.ElectionTicks, MinElectionTicks)
	}
	if r.MaxExamplesPerMember <= 0 {
		v.bad("round.max_examples_per_member", "%d, want > 0 (required)", r.MaxExamplesPerMember)
	}
	if r.RetainRounds < 1 {
		v.bad("round.retain_rounds", "%d, want >= 1", r.RetainRounds)
	}
}

// validateStrategy checks the strategy through fedavg.Config.Validate. The
// strategy's own fields are checked with a known-good training configuration
// so that a training error is not reported twice; the complete configuration
// is checked once the training fields are valid.
func (m *Manifest) validateStrategy(v *validator, trainingOK bool) {
	s := m.Strategy
	ok := true
	for _, f := range []struct {
		field string
		x     float64
	}{
		{"strategy.server_lr", s.ServerLR}, {"strategy.momentum", s.Momentum},
		{"strategy.beta1", s.Beta1}, {"strategy.beta2", s.Beta2}, {"strategy.tau", s.Tau},
		{"strategy.trim_fraction", s.TrimFraction}, {"strategy.clip_norm", s.ClipNorm},
	} {
		ok = v.finite(f.field, f.x) && ok
	}
	if !ok {
		return
	}
	c := m.StrategyConfig()
	probe := c
	probe.Train = fedavg.DefaultConfig().Train
	if err := probe.Validate(); err != nil {
		v.errs = append(v.errs, dialect.Wrap("strategy", err))
		return
	}
	if trainingOK {
		if err := c.Validate(); err != nil {
			v.errs = append(v.errs, dialect.Wrap("training", err))
		}
	}
}
