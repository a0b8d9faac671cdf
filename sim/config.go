package sim

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/local"
)

// Config describes one simulated consortium.
type Config struct {
	Dataset         string  // "mnist" or "fashion-mnist"
	DataDir         string  // overrides where the data set's files are found
	Partition       string  // "iid", "shards" or "dirichlet"
	Alpha           float64 // Dirichlet concentration, for partition "dirichlet"
	ShardsPerMember int     // shards per member, for partition "shards"
	Members         int
	Model           string // "logreg", "2nn" or "cnn"
	Rounds          int
	Fraction        float64 // fraction of members sampled per round
	MinParticipants int
	MaxExamples     int64 // cap on the example count a member reports; 0: no cap
	Strategy        fedavg.Config
	Seed            uint64
	Target          float64 // test accuracy whose first crossing is reported
	StopAtTarget    bool    // end the run at the first round reaching Target
	Workers         int     // members trained at once; 0: one
	// Privacy is the manifest's privacy section (Manifest applies its
	// defaults); the zero value is mode none. Only full nodes run a
	// privacy mode, not the direct loop.
	Privacy manifest.Privacy
}

// DefaultConfig is the demo: 10 members, IID MNIST, the 2NN, FedAvg.
func DefaultConfig() Config {
	s := fedavg.DefaultConfig()
	s.Strategy = "fedavg"
	s.Train = fedavg.TrainConfig{Epochs: 1, BatchSize: 10, LR: 0.1}
	return Config{
		Dataset:         "mnist",
		Partition:       "iid",
		Alpha:           0.5,
		ShardsPerMember: 2,
		Members:         10,
		Model:           "2nn",
		Rounds:          15,
		Fraction:        1,
		MinParticipants: 1,
		Strategy:        s,
		Seed:            1,
		Target:          0.97,
		Workers:         1,
	}
}

var (
	datasets   = []string{"mnist", "fashion-mnist"}
	partitions = []string{"iid", "shards", "dirichlet"}
)

// Validate checks the configuration and names the first field that is wrong.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("sim: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !slices.Contains(datasets, c.Dataset) {
		bad("dataset", "%q unknown (want one of %v)", c.Dataset, datasets)
	}
	if !slices.Contains(partitions, c.Partition) {
		bad("partition", "%q unknown (want one of %v)", c.Partition, partitions)
	}
	if c.Partition == "dirichlet" && !(c.Alpha > 0 && !math.IsInf(c.Alpha, 0)) {
		bad("alpha", "%v, want > 0", c.Alpha)
	}
	if c.Partition == "shards" && c.ShardsPerMember < 1 {
		bad("shards", "%d per member, want >= 1", c.ShardsPerMember)
	}
	if c.Members < 1 {
		bad("members", "%d, want >= 1", c.Members)
	}
	if err := (train.Spec{Arch: c.Model, Height: 28, Width: 28, Channels: 1, Classes: 10}).Validate(); err != nil {
		bad("model", "%v", err)
	}
	if c.Rounds < 1 {
		bad("rounds", "%d, want >= 1", c.Rounds)
	}
	if !(c.Fraction > 0 && c.Fraction <= 1) {
		bad("fraction", "%v, want in (0, 1]", c.Fraction)
	}
	if c.MinParticipants < 1 || c.MinParticipants > c.Members {
		bad("min-participants", "%d, want 1..members (%d)", c.MinParticipants, c.Members)
	}
	if c.MaxExamples < 0 {
		bad("max-examples", "%d, want >= 0", c.MaxExamples)
	}
	if !(c.Target > 0 && c.Target <= 1) {
		bad("target", "%v, want in (0, 1]", c.Target)
	}
	if c.Workers < 0 {
		bad("workers", "%d, want >= 0", c.Workers)
	}
	switch c.Privacy.Mode {
	case "", manifest.PrivacyNone:
	case manifest.PrivacyUpdate, manifest.PrivacyDPSGD, manifest.PrivacySecAgg, manifest.PrivacyDistributed:
		errs = append(errs, c.privacyErrors()...)
	default:
		bad("privacy", "%q unknown", c.Privacy.Mode)
	}
	if err := c.Strategy.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("sim: strategy: %w", err))
	}
	if err := local.SGD(c.Strategy.Train).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("sim: training: %w", err))
	}
	return errors.Join(errs...)
}

// privacyErrors are the manifest's errors about the privacy section, as
// the manifest Manifest builds would report them.
func (c Config) privacyErrors() []error {
	ids := make([]identity.PeerID, max(c.Members, manifest.MinVoters))
	for i := range ids {
		ids[i] = identity.Derive(c.Seed, i).ID
	}
	m := manifest.Example(ids)
	m.Privacy = c.Privacy
	m.ApplyDefaults()
	err := m.Validate()
	if err == nil {
		return nil
	}
	all := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	}
	var out []error
	for _, e := range all {
		var fe *manifest.FieldError
		if errors.As(e, &fe) && strings.HasPrefix(fe.Field, "privacy") {
			out = append(out, fmt.Errorf("sim: %w", e))
		}
	}
	return out
}

// PrivacyOn reports whether the configuration runs a privacy mode.
func (c Config) PrivacyOn() bool {
	return c.Privacy.Mode != "" && c.Privacy.Mode != manifest.PrivacyNone
}

// SampleSize is k = max(min_participants, ceil(fraction x members)).
func (c Config) SampleSize() int {
	k := int(math.Ceil(c.Fraction * float64(c.Members)))
	return min(max(k, c.MinParticipants), c.Members)
}
