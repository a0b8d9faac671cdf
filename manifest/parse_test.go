package manifest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/internal/strictyaml/yamltest"
	"github.com/globalbrain/globalbrain/train"
	"go.yaml.in/yaml/v3"
)

// load parses testdata/name or fails the test.
func load(t testing.TB, name string) *Manifest {
	t.Helper()
	m, err := Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("Load(%s): %v", name, err)
	}
	return m
}

func TestGoodFixtures(t *testing.T) {
	for _, name := range yamltest.Fixtures(t, ".good.yaml") {
		t.Run(name, func(t *testing.T) {
			m := load(t, name)
			if err := m.Validate(); err != nil {
				t.Fatalf("Validate after Parse: %v", err)
			}
			// The model is one package train can build.
			spec := train.Spec{Arch: m.Model.Arch, Height: m.Model.Height, Width: m.Model.Width, Channels: m.Model.Channels, Classes: m.Model.Classes}
			if err := spec.Validate(); err != nil {
				t.Errorf("train rejects the model: %v", err)
			}
			// So is the training configuration.
			tc := m.StrategyConfig().Train
			if err := (train.SGDConfig{Epochs: tc.Epochs, BatchSize: tc.BatchSize, LR: tc.LR, ProxMu: tc.ProxMu}).Validate(); err != nil {
				t.Errorf("train rejects the training configuration: %v", err)
			}
		})
	}
}

// badFixtures lists every testdata/*.bad.yaml and the strings its error must
// contain. Every validation rule and every parsing rule has one.
var badFixtures = []yamltest.Bad{
	// The document.
	{"empty.bad.yaml", []string{"empty.bad.yaml: empty, want a mapping"}},
	{"comments_only.bad.yaml", []string{"comments_only.bad.yaml: empty, want a mapping"}},
	{"null_document.bad.yaml", []string{"null_document.bad.yaml:2: the document is empty, want a mapping"}},
	{"top_level_list.bad.yaml", []string{"top_level_list.bad.yaml:1: the document is a list, want a mapping"}},
	{"multiple_documents.bad.yaml", []string{"multiple_documents.bad.yaml:19: a second YAML document, want exactly one"}},
	{"syntax_error.bad.yaml", []string{"did not find expected ',' or ']'"}}, // the line is package yaml's
	{"alias.bad.yaml", []string{"alias.bad.yaml:22: strategy.server_lr: alias *rate: aliases are not supported"}},
	{"merge_key.bad.yaml", []string{"merge_key.bad.yaml:20: training: merge keys (<<) are not supported"}},

	// Keys and types.
	{"unknown_key.bad.yaml", []string{"unknown_key.bad.yaml:19: colour: unknown field, want one of name, members, model, training, round, strategy, privacy"}},
	{"unknown_key_nested.bad.yaml", []string{"unknown_key_nested.bad.yaml:18: round.deadline_ticks: unknown field, want one of fraction, min_participants,"}},
	{"unknown_key_member.bad.yaml", []string{"unknown_key_member.bad.yaml:7: members[1].role: unknown field, want one of id, voter"}},
	{"duplicate_key.bad.yaml", []string{"duplicate_key.bad.yaml:21: training.lr: duplicate key, first at line 20"}},
	{"wrong_type_fraction.bad.yaml", []string{"wrong_type_fraction.bad.yaml:18: round.fraction: got !!str `lots`, want a number"}},
	{"wrong_type_voter.bad.yaml", []string{"wrong_type_voter.bad.yaml:4: members[0].voter: got !!str `maybe`, want true or false"}},
	{"wrong_type_members.bad.yaml", []string{"wrong_type_members.bad.yaml:2: members: got !!str `everyone`, want a list of members"}},
	{"wrong_type_round.bad.yaml", []string{"wrong_type_round.bad.yaml:17: round: got a list, want a mapping"}},
	{"wrong_type_name.bad.yaml", []string{"wrong_type_name.bad.yaml:1: name: got a mapping, want a string"}},
	{"float_in_int.bad.yaml", []string{"float_in_int.bad.yaml:20: training.epochs: got !!float `1.5`, want an integer"}},
	{"negative_init_seed.bad.yaml", []string{"negative_init_seed.bad.yaml:17: model.init_seed: got !!int `-1`, want a non-negative integer"}},
	{"duration_without_unit.bad.yaml", []string{"duration_without_unit.bad.yaml:18: round.tick: got !!int `100`, want a duration such as \"100ms\""}},
	{"duration_garbage.bad.yaml", []string{"duration_garbage.bad.yaml:18: round.deadline: got !!str `soon`, want a duration"}},

	// name and members.
	{"name_missing.bad.yaml", []string{"name_missing.bad.yaml: name: required"}},
	{"name_control.bad.yaml", []string{"name_control.bad.yaml:1: name: \"north\\tsouth\" contains control characters"}},
	{"members_missing.bad.yaml", []string{"members_missing.bad.yaml: members: 0 voters among 0 members, want >= 3"}},
	{"voters_too_few.bad.yaml", []string{"voters_too_few.bad.yaml:2: members: 2 voters among 4 members, want >= 3"}},
	{"member_id_missing.bad.yaml", []string{"member_id_missing.bad.yaml:7: members[2].id: required"}},
	{"member_id_invalid.bad.yaml", []string{"member_id_invalid.bad.yaml:5: members[1].id: identity: peer ID \"QmNotAPeerID\""}},
	{"member_id_duplicate.bad.yaml", []string{"member_id_duplicate.bad.yaml:9: members[3].id: 12D3KooWF3dQobJMTDvW3XuHBKgtfmDsDNZSyXW7sLhZGvVuvajk duplicates members[0]"}},

	// model.
	{"model_arch_missing.bad.yaml", []string{"model_arch_missing.bad.yaml:11: model.arch: required (logreg, 2nn or cnn)"}},
	{"model_arch_unknown.bad.yaml", []string{"model_arch_unknown.bad.yaml:12: model.arch: \"resnet\" unknown, want logreg, 2nn or cnn"}},
	{"model_height_zero.bad.yaml", []string{"model_height_zero.bad.yaml:13: model.height: 0, want >= 1"}},
	{"model_channels_negative.bad.yaml", []string{"model_channels_negative.bad.yaml:15: model.channels: -1, want >= 1"}},
	{"model_too_large.bad.yaml", []string{"model_too_large.bad.yaml:11: model: input 8192x8192x3 is too large, want at most 16777216 values per example"}},
	{"model_cnn_not_divisible.bad.yaml", []string{"model_cnn_not_divisible.bad.yaml:13: model.height: 30, want a multiple of 4 for cnn"}},
	{"model_classes_one.bad.yaml", []string{"model_classes_one.bad.yaml:16: model.classes: 1, want 2..256"}},
	{"labels_count.bad.yaml", []string{"labels_count.bad.yaml:17: model.labels: 2 names for 3 classes, want one per class (or none)"}},
	{"labels_duplicate.bad.yaml", []string{`labels_duplicate.bad.yaml:17: model.labels[2]: "benign" duplicates model.labels[0]`}},
	{"labels_space.bad.yaml", []string{`labels_space.bad.yaml:17: model.labels[1]: " malignant", want a name without spaces around it`}},
	{"model_classes_too_many.bad.yaml", []string{"model_classes_too_many.bad.yaml:16: model.classes: 257, want 2..256"}},

	// training.
	{"training_rounds_negative.bad.yaml", []string{"training_rounds_negative.bad.yaml:20: training.rounds: -1, want >= 0"}},
	{"training_epochs_zero.bad.yaml", []string{"training_epochs_zero.bad.yaml:20: training.epochs: 0, want >= 1"}},
	{"training_batch_size_zero.bad.yaml", []string{"training_batch_size_zero.bad.yaml:20: training.batch_size: 0, want >= 1"}},
	{"training_lr_zero.bad.yaml", []string{"training_lr_zero.bad.yaml:20: training.lr: 0, want > 0 and finite"}},
	{"training_lr_inf.bad.yaml", []string{"training_lr_inf.bad.yaml:20: training.lr: +Inf, want > 0 and finite"}},
	{"training_prox_mu_negative.bad.yaml", []string{"training_prox_mu_negative.bad.yaml:20: training.prox_mu: -0.01, want >= 0 and finite"}},

	// round.
	{"round_fraction_zero.bad.yaml", []string{"round_fraction_zero.bad.yaml:18: round.fraction: 0, want in (0, 1]"}},
	{"round_fraction_above_one.bad.yaml", []string{"round_fraction_above_one.bad.yaml:18: round.fraction: 1.5, want in (0, 1]"}},
	{"round_min_participants_zero.bad.yaml", []string{"round_min_participants_zero.bad.yaml:18: round.min_participants: 0, want >= 1"}},
	{"round_min_participants_above_members.bad.yaml", []string{"round_min_participants_above_members.bad.yaml:18: round.min_participants: 5, want <= 4 (the number of members)"}},
	{"round_over_select_negative.bad.yaml", []string{"round_over_select_negative.bad.yaml:18: round.over_select: -1, want >= 0"}},
	{"round_tick_zero.bad.yaml", []string{"round_tick_zero.bad.yaml:18: round.tick: 0s, want >= 1ms"}},
	{"round_deadline_not_whole_ticks.bad.yaml", []string{"round_deadline_not_whole_ticks.bad.yaml:18: round.deadline: 1.05s is not a whole number of ticks (round.tick is 100ms)"}},
	{"round_deadline_too_short.bad.yaml", []string{"round_deadline_too_short.bad.yaml:18: round.deadline: 900ms is 9 ticks of 100ms, want >= 10 ticks"}},
	{"round_election_ticks_too_few.bad.yaml", []string{"round_election_ticks_too_few.bad.yaml:18: round.election_ticks: 2, want >= 3"}},
	{"round_max_examples_missing.bad.yaml", []string{"round_max_examples_missing.bad.yaml:17: round.max_examples_per_member: 0, want > 0 (required)"}},
	{"round_max_examples_negative.bad.yaml", []string{"round_max_examples_negative.bad.yaml:18: round.max_examples_per_member: -5, want > 0"}},
	{"round_retain_rounds_zero.bad.yaml", []string{"round_retain_rounds_zero.bad.yaml:18: round.retain_rounds: 0, want >= 1"}},

	// strategy, through fedavg.Config.Validate.
	{"strategy_unknown.bad.yaml", []string{"strategy_unknown.bad.yaml:19: strategy: fedavg: config: Strategy: unknown strategy \"fedsgd\""}},
	{"strategy_momentum.bad.yaml", []string{"strategy_momentum.bad.yaml:19: strategy: fedavg: config: Momentum: 1, want in [0, 1)"}},
	{"strategy_trim_fraction.bad.yaml", []string{"strategy_trim_fraction.bad.yaml:19: strategy: fedavg: config: TrimFraction: 0.5, want in [0, 0.5)"}},
	{"strategy_tau_zero.bad.yaml", []string{"strategy_tau_zero.bad.yaml:19: strategy: fedavg: config: Tau: 0, want > 0"}},
	{"strategy_byzantine_negative.bad.yaml", []string{"strategy_byzantine_negative.bad.yaml:19: strategy: fedavg: config: Byzantine: -1, want >= 0"}},
	{"strategy_multikrum_m_negative.bad.yaml", []string{"strategy_multikrum_m_negative.bad.yaml:19: strategy: fedavg: config: MultiKrumM: -1, want >= 0"}},
	{"strategy_clip_norm_negative.bad.yaml", []string{"strategy_clip_norm_negative.bad.yaml:19: strategy: fedavg: config: ClipNorm: -1, want >= 0"}},
	{"strategy_server_lr_negative.bad.yaml", []string{"strategy_server_lr_negative.bad.yaml:19: strategy: fedavg: config: ServerLR: -0.5, want > 0"}},
	{"strategy_beta1_nan.bad.yaml", []string{"strategy_beta1_nan.bad.yaml:21: strategy.beta1: NaN, want a finite number"}},

	// privacy: the mode, the sections a mode does not use, the ranges, and
	// the strategies secure aggregation cannot run.
	{"privacy_mode_empty.bad.yaml", []string{`privacy_mode_empty.bad.yaml:20: privacy.mode: "" unknown, want one of none, secagg, update, distributed, dp-sgd`}},
	{"privacy_mode_unknown.bad.yaml", []string{`privacy_mode_unknown.bad.yaml:20: privacy.mode: "dp" unknown, want one of none, secagg, update, distributed, dp-sgd`}},
	{"privacy_none_dp_section.bad.yaml", []string{
		"privacy_none_dp_section.bad.yaml:22: privacy.dp.z: set, but mode none uses no dp section; remove it",
		"privacy_none_dp_section.bad.yaml:23: privacy.dp.epsilon: set, but mode none uses no dp section; remove it",
	}},
	{"privacy_update_secagg_section.bad.yaml", []string{"privacy_update_secagg_section.bad.yaml:22: privacy.secagg.k_min: set, but mode update uses no secagg section; remove it"}},
	{"privacy_dpsgd_clip.bad.yaml", []string{"privacy_dpsgd_clip.bad.yaml:23: privacy.dp.clip: set, but mode dp-sgd does not use it (dp-sgd bounds each example's gradient, with dp.example_clip); remove it"}},
	{"privacy_distributed_max_weight.bad.yaml", []string{"privacy_distributed_max_weight.bad.yaml:22: privacy.secagg.max_weight: set, but mode distributed does not use it (the distributed mode aggregates the unweighted mean); remove it"}},
	{"privacy_update_missing.bad.yaml", []string{
		"privacy_update_missing.bad.yaml:19: privacy.dp.z: required for privacy.mode update (> 0)",
		"privacy_update_missing.bad.yaml:19: privacy.dp.clip: required for privacy.mode update (> 0)",
		"privacy_update_missing.bad.yaml:19: privacy.dp.epsilon: required for privacy.mode update (> 0)",
	}},
	{"privacy_dp_ranges.bad.yaml", []string{
		"privacy_dp_ranges.bad.yaml:22: privacy.dp.z: -1, want > 0 and finite",
		"privacy_dp_ranges.bad.yaml:23: privacy.dp.clip: +Inf, want > 0 and finite",
		"privacy_dp_ranges.bad.yaml:24: privacy.dp.delta: 1, want in (0, 1)",
		"privacy_dp_ranges.bad.yaml:25: privacy.dp.epsilon: -3, want > 0 and finite",
	}},
	{"privacy_dp_grid.bad.yaml", []string{"privacy_dp_grid.bad.yaml:21: privacy.dp: dp: bad parameter: update: clip*scale = 1e+15, want at most 2^40"}},
	{"privacy_secagg_ranges.bad.yaml", []string{
		"privacy_secagg_ranges.bad.yaml:22: privacy.secagg.gamma: -2, want >= 0 (0: floor(n/3) of each round's sample)",
		"privacy_secagg_ranges.bad.yaml:23: privacy.secagg.k_min: 1, want >= 2",
		"privacy_secagg_ranges.bad.yaml:24: privacy.secagg.clip: -1, want > 0 and finite",
		"privacy_secagg_ranges.bad.yaml:25: privacy.secagg.max_weight: 5000, want 1..1000 (round.max_examples_per_member)",
		"privacy_secagg_ranges.bad.yaml:26: privacy.secagg.phase_deadline: 150ms is not a whole number of ticks (round.tick is 100ms)",
	}},
	{"privacy_secagg_phase_long.bad.yaml", []string{"privacy_secagg_phase_long.bad.yaml:22: privacy.secagg.phase_deadline: 2m0s, want from one tick (100ms) to round.deadline (1m0s)"}},
	{"privacy_secagg_gamma.bad.yaml", []string{"privacy_secagg_gamma.bad.yaml:21: privacy.secagg: gamma 3 + k_min 2 = 5 is more than a round's 4 sampled members: no sum could ever be unmasked"}},
	{"privacy_secagg_sample.bad.yaml", []string{"privacy_secagg_sample.bad.yaml:17: round: a round samples 2 members, want >= 3 under privacy.mode secagg (secure aggregation needs n >= 3"}},
	{"privacy_secagg_wrap.bad.yaml", []string{"privacy_secagg_wrap.bad.yaml:21: privacy.secagg: members 4 x max_weight 1000000000 x clip 100 x scale 1e+09 = 4e+20, want <= 2^62: the encoded sum would wrap around 2^64"}},
	{"privacy_secagg_median.bad.yaml", []string{"privacy_secagg_median.bad.yaml:20: strategy.name: median needs every participant's individual update, and under privacy.mode secagg secure aggregation reveals only their sum (PRIVACY.md section 3); use fedavg, fedavgm, fedadam, fedyogi or fedadagrad (strategy.clip_norm stays allowed: clipping happens before encoding)"}},
	{"privacy_distributed_krum.bad.yaml", []string{"privacy_distributed_krum.bad.yaml:20: strategy.name: krum needs every participant's individual update, and under privacy.mode distributed secure aggregation reveals only their sum"}},

	// Every problem is reported, not only the first.
	{"several_errors.bad.yaml", []string{
		"several_errors.bad.yaml: name: required",
		"several_errors.bad.yaml:12: model.height: 30, want a multiple of 4 for cnn",
		"several_errors.bad.yaml:17: round.fraction: 2, want in (0, 1]",
	}},
}

func TestBadFixtures(t *testing.T) {
	yamltest.CheckBad(t, badFixtures, ErrInvalid, func(t *testing.T, tc yamltest.Bad) error {
		path := filepath.Join("testdata", tc.File)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Parse(data, tc.File)
		if err == nil {
			t.Fatalf("Parse accepted it: %+v", m)
		}
		if m != nil {
			t.Errorf("Parse returned a manifest with its error")
		}
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != len(tc.Errs) {
			t.Errorf("got %d errors, want %d:\n%v", len(lines), len(tc.Errs), err)
		}
		for _, line := range lines {
			if !strings.HasPrefix(line, tc.File+":") {
				t.Errorf("error %q does not start with the source", line)
			}
		}
		// Load names the path it was given.
		if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path) {
			t.Errorf("Load(%s) = %v, want an error prefixed with the path", path, err)
		}
		return err
	})
}

// TestBadModelsAgreeWithTrain holds the model rules in step with the models
// package train can build: every model fixture this package rejects, train
// rejects too.
func TestBadModelsAgreeWithTrain(t *testing.T) {
	for _, name := range yamltest.Fixtures(t, ".bad.yaml") {
		if !strings.HasPrefix(name, "model_") {
			continue
		}
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		var m Manifest
		if err := yaml.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		spec := train.Spec{Arch: m.Model.Arch, Height: m.Model.Height, Width: m.Model.Width, Channels: m.Model.Channels, Classes: m.Model.Classes}
		if err := spec.Validate(); err == nil {
			t.Errorf("%s: train accepts the model %+v", name, spec)
		}
	}
}

func TestDefaults(t *testing.T) {
	m := load(t, "minimal.good.yaml")
	def := fedavg.DefaultConfig()
	want := Manifest{
		Name:    "minimal",
		Members: m.Members,
		Model:   Model{Arch: ArchLogReg, Height: 28, Width: 28, Channels: 1, Classes: 10},
		Training: Training{
			Rounds: 0, Epochs: def.Train.Epochs, BatchSize: def.Train.BatchSize, LR: def.Train.LR, ProxMu: 0,
		},
		Round: Round{
			Fraction: 1, MinParticipants: 1, OverSelect: 0,
			Tick: Duration(100 * time.Millisecond), Deadline: Duration(60 * time.Second),
			ElectionTicks: 10, MaxExamplesPerMember: 1000, RetainRounds: 10,
		},
		Strategy: Strategy{
			Name: fedavg.NameFedAvg, Momentum: def.Momentum, Beta1: def.Beta1, Beta2: def.Beta2, Tau: def.Tau,
		},
		Privacy: Privacy{Mode: PrivacyNone},
	}
	if !reflect.DeepEqual(*m, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", *m, want)
	}
	if got := m.StrategyConfig(); got != def {
		t.Errorf("StrategyConfig of the defaults = %+v, want fedavg.DefaultConfig() %+v", got, def)
	}

	// A section that sets some fields keeps the defaults of the others.
	l := load(t, "learners.good.yaml")
	if l.Round.Fraction != 0.3 || l.Round.Tick != Duration(DefaultTick) || l.Round.RetainRounds != DefaultRetainRounds {
		t.Errorf("learners round = %+v, want fraction 0.3 and the default tick and retain_rounds", l.Round)
	}
	if l.Training.ProxMu != 0 || l.Training.LR != 0.1 {
		t.Errorf("learners training = %+v", l.Training)
	}

	// An empty section is the defaults, like an absent one.
	data, err := os.ReadFile(filepath.Join("testdata", "minimal.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Parse(append(data, "training:\nstrategy: ~\n"...), "empty-sections.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if e.ConsortiumID() != m.ConsortiumID() {
		t.Errorf("empty sections changed the consortium ID")
	}
}

func TestLoad(t *testing.T) {
	if _, err := Load(filepath.Join("testdata", "full.good.yaml")); err != nil {
		t.Fatal(err)
	}
	_, err := Load(filepath.Join("testdata", "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
	if errors.Is(err, ErrInvalid) {
		t.Errorf("a missing file is not an invalid manifest: %v", err)
	}
}

func TestFieldErrors(t *testing.T) {
	m := load(t, "full.good.yaml")
	m.Round.MinParticipants = 0
	m.Strategy.Name = "fedsgd"
	err := m.Validate()
	if err == nil {
		t.Fatal("Validate accepted min_participants 0")
	}
	// Without a source, errors are prefixed with the package name.
	want := "manifest: round.min_participants: 0, want >= 1\nmanifest: strategy: fedavg: config: Strategy: unknown strategy \"fedsgd\""
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Validate() =\n%v\nwant prefix\n%s", err, want)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "round.min_participants" || fe.Line != 0 || fe.Source != "" {
		t.Errorf("errors.As FieldError = %+v", fe)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is(err, ErrInvalid) = false")
	}
	// The strategy's error is fedavg's, wrapped.
	all := err.(interface{ Unwrap() []error }).Unwrap()
	if len(all) != 2 {
		t.Fatalf("got %d errors, want 2: %v", len(all), err)
	}
	if inner := errors.Unwrap(all[1]); inner == nil || !strings.HasPrefix(inner.Error(), "fedavg: config: Strategy") {
		t.Errorf("strategy error unwraps to %v, want fedavg's", inner)
	}
}

func TestFloatsInIntegerFields(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("testdata", "minimal.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		yaml string
		ok   bool
	}{
		{"training: {epochs: 2.0}", true},
		{"training: {epochs: 1e1}", true},
		{"training: {epochs: 2.5}", false},
		{"training: {epochs: -.inf}", false},
		{"training: {epochs: .nan}", false},
		{"training: {rounds: -1e300}", false},
		{"model: {arch: logreg, height: 28, width: 28, channels: 1, classes: 10, init_seed: 1e300}", false},
	} {
		data := append([]byte(nil), base...)
		data = append(data, tc.yaml+"\n"...)
		if tc.yaml[0] == 'm' {
			data = []byte(strings.Replace(string(data), "model:\n  arch: logreg\n  height: 28\n  width: 28\n  channels: 1\n  classes: 10\n", "", 1))
		}
		_, err := Parse(data, "ints.yaml")
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.yaml, err, tc.ok)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, suffix := range []string{".good.yaml", ".bad.yaml"} {
		for _, name := range yamltest.Fixtures(f, suffix) {
			data, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not match ErrInvalid: %v", err)
			}
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(out, "marshaled.yaml")
		if err != nil {
			t.Fatalf("Marshal output does not parse: %v\n%s", err, out)
		}
		if again.ConsortiumID() != m.ConsortiumID() {
			t.Fatalf("round trip changed the consortium ID:\n%s", out)
		}
	})
}
