package fedavg

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// TrainConfig is what Configure hands participants for a round.
type TrainConfig struct {
	Epochs    int     // local epochs over the member's data
	BatchSize int     // minibatch size
	LR        float64 // local learning rate
	ProxMu    float64 // FedProx proximal term; 0 is plain FedAvg training
}

// Strategy turns a round's updates into the next global model.
type Strategy interface {
	// Name is the strategy's configured name ("fedavg", "krum", ...).
	Name() string
	// Configure returns the training configuration for the given round.
	Configure(round uint64, g *Global) TrainConfig
	// Aggregate returns the next global model from g and the round's
	// validated updates. A nil *Global with a nil error means "no new
	// model", a normal outcome: no updates, or fewer than the rule needs.
	// Aggregate does not modify g or the updates, and its result is
	// identical to the bit whatever order the updates arrive in.
	Aggregate(round uint64, g *Global, updates []Update) (*Global, error)
}

// Strategy names accepted by Config.
const (
	NameFedAvg      = "fedavg"
	NameFedAvgM     = "fedavgm"
	NameFedAdam     = "fedadam"
	NameFedYogi     = "fedyogi"
	NameFedAdagrad  = "fedadagrad"
	NameMedian      = "median"
	NameTrimmedMean = "trimmedmean"
	NameKrum        = "krum"
	NameMultiKrum   = "multikrum"
)

var strategyNames = []string{
	NameFedAvg, NameFedAvgM, NameFedAdam, NameFedYogi, NameFedAdagrad,
	NameMedian, NameTrimmedMean, NameKrum, NameMultiKrum,
}

// Config selects and parameterizes a strategy.
//
// The server optimizers follow Reddi et al. 2021, "Adaptive Federated
// Optimization". ServerLR 0 means the strategy's default: 1 for fedavg and
// fedavgm, 0.01 for fedadam, fedyogi and fedadagrad. The robust rules
// (median, trimmedmean, krum, multikrum) add their aggregate to the weights
// as is and ignore ServerLR. Krum and MultiKrum need at least 2f+3 updates
// (f = Byzantine); with fewer, Aggregate returns no new model (nil, nil), as
// every strategy does for a round without updates.
type Config struct {
	Strategy string // one of fedavg, fedavgm, fedadam, fedyogi, fedadagrad, median, trimmedmean, krum, multikrum
	Train    TrainConfig

	ServerLR float64 // server learning rate (eta); 0 means the strategy's default
	Momentum float64 // fedavgm: server momentum, [0, 1)
	Beta1    float64 // adaptive: first-moment decay, [0, 1)
	Beta2    float64 // adaptive: second-moment decay, [0, 1)
	Tau      float64 // adaptive: degree of adaptivity, > 0

	TrimFraction float64 // trimmedmean: fraction trimmed at each end, [0, 0.5)
	Byzantine    int     // krum, multikrum: f, the number of Byzantine updates tolerated
	MultiKrumM   int     // multikrum: m, the number of updates averaged; 0 means n - f, and m never exceeds n - f

	ClipNorm float64 // > 0 wraps the strategy in Clip with this L2 bound
}

// DefaultConfig returns FedAvg with the defaults of every parameter filled
// in, so that changing Strategy alone gives a sensible configuration.
func DefaultConfig() Config {
	return Config{
		Strategy: NameFedAvg,
		Train:    TrainConfig{Epochs: 1, BatchSize: 10, LR: 0.05},
		Momentum: 0.9,
		Beta1:    0.9,
		Beta2:    0.99,
		Tau:      1e-3,
	}
}

// Validate reports the first invalid field of c by name. Parameters are
// checked for the strategy c selects; the others must only be finite and in
// range if set.
func (c Config) Validate() error {
	if !slices.Contains(strategyNames, c.Strategy) {
		return fmt.Errorf("fedavg: config: Strategy: unknown strategy %q (valid: %s)", c.Strategy, strings.Join(strategyNames, ", "))
	}
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("fedavg: config: %s: "+format, append([]any{field}, args...)...)
	}
	t := c.Train
	switch {
	case t.Epochs < 1:
		return bad("Train.Epochs", "%d, want >= 1", t.Epochs)
	case t.BatchSize < 1:
		return bad("Train.BatchSize", "%d, want >= 1", t.BatchSize)
	case !(t.LR > 0) || math.IsInf(t.LR, 0):
		return bad("Train.LR", "%v, want > 0 and finite", t.LR)
	case !(t.ProxMu >= 0) || math.IsInf(t.ProxMu, 0):
		return bad("Train.ProxMu", "%v, want >= 0 and finite", t.ProxMu)
	case !(c.ServerLR >= 0) || math.IsInf(c.ServerLR, 0):
		return bad("ServerLR", "%v, want > 0 and finite (0 for the strategy's default)", c.ServerLR)
	case !(c.ClipNorm >= 0) || math.IsInf(c.ClipNorm, 0):
		return bad("ClipNorm", "%v, want >= 0 and finite (0 for no clipping)", c.ClipNorm)
	case c.Byzantine < 0:
		return bad("Byzantine", "%d, want >= 0", c.Byzantine)
	case c.MultiKrumM < 0:
		return bad("MultiKrumM", "%d, want >= 0 (0 for n - f)", c.MultiKrumM)
	}
	unit := func(field string, v float64) error {
		if !(v >= 0 && v < 1) {
			return bad(field, "%v, want in [0, 1)", v)
		}
		return nil
	}
	switch c.Strategy {
	case NameFedAvgM:
		return unit("Momentum", c.Momentum)
	case NameFedAdam, NameFedYogi, NameFedAdagrad:
		if err := unit("Beta1", c.Beta1); err != nil {
			return err
		}
		if c.Strategy != NameFedAdagrad {
			if err := unit("Beta2", c.Beta2); err != nil {
				return err
			}
		}
		if !(c.Tau > 0) || math.IsInf(c.Tau, 0) {
			return bad("Tau", "%v, want > 0 and finite", c.Tau)
		}
	case NameTrimmedMean:
		if !(c.TrimFraction >= 0 && c.TrimFraction < 0.5) {
			return bad("TrimFraction", "%v, want in [0, 0.5)", c.TrimFraction)
		}
	}
	return nil
}

// NeedsIndividualUpdates reports whether the strategy c describes must see
// each update on its own: the robust rules and server-side clipping. Such a
// strategy cannot run on the masked sum that secure aggregation reveals.
func (c Config) NeedsIndividualUpdates() bool {
	switch c.Strategy {
	case NameMedian, NameTrimmedMean, NameKrum, NameMultiKrum:
		return true
	}
	return c.ClipNorm > 0
}

// New returns the strategy c describes, wrapped in Clip if c.ClipNorm > 0.
func New(c Config) (Strategy, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	lr := c.ServerLR
	var s Strategy
	switch c.Strategy {
	case NameFedAvg, NameFedAvgM:
		if lr == 0 {
			lr = 1
		}
		if c.Strategy == NameFedAvg {
			s = fedAvg{train: c.Train, lr: lr}
		} else {
			s = fedAvgM{train: c.Train, lr: lr, momentum: c.Momentum}
		}
	case NameFedAdam, NameFedYogi, NameFedAdagrad:
		if lr == 0 {
			lr = 0.01
		}
		s = adaptive{name: c.Strategy, train: c.Train, lr: lr, beta1: c.Beta1, beta2: c.Beta2, tau: c.Tau}
	case NameMedian:
		s = median{train: c.Train}
	case NameTrimmedMean:
		s = trimmed{train: c.Train, fraction: c.TrimFraction}
	case NameKrum, NameMultiKrum:
		s = krum{name: c.Strategy, train: c.Train, f: c.Byzantine, m: c.MultiKrumM}
	}
	if c.ClipNorm > 0 {
		s = Clip{Inner: s, Norm: c.ClipNorm}
	}
	return s, nil
}

// sortedUpdates returns a copy of updates sorted by peer ID, after checking
// what every strategy needs: a global model, no duplicate peer, the model's
// dimension and at least one example each. The deltas are shared, not copied.
func sortedUpdates(g *Global, updates []Update) ([]Update, error) {
	if g == nil {
		return nil, errors.New("fedavg: nil global model")
	}
	us := slices.Clone(updates)
	slices.SortFunc(us, func(a, b Update) int { return bytes.Compare(a.Peer, b.Peer) })
	for i, u := range us {
		if i > 0 && bytes.Equal(us[i-1].Peer, u.Peer) {
			return nil, fmt.Errorf("%w %s", ErrDuplicatePeer, peerString(u.Peer))
		}
		if len(u.Delta) != len(g.Weights) {
			return nil, fmt.Errorf("%w: peer %s sent %d values, the model has %d", ErrDimension, peerString(u.Peer), len(u.Delta), len(g.Weights))
		}
		if u.Examples < 1 {
			return nil, fmt.Errorf("%w: peer %s claims %d examples", ErrNoExamples, peerString(u.Peer), u.Examples)
		}
	}
	return us, nil
}

// checkFinite rejects updates with NaN or ±Inf, for the rules that could
// otherwise hide them (a median drops extreme values, Krum turns them into
// distances).
func checkFinite(us []Update) error {
	for _, u := range us {
		if i := firstNonFinite(u.Delta); i >= 0 {
			return fmt.Errorf("%w: peer %s: delta[%d] = %v", ErrNonFinite, peerString(u.Peer), i, u.Delta[i])
		}
	}
	return nil
}

// nextState returns the state header of the model a strategy produces from g.
func nextState(name string, g *Global, vectors [][]float32) State {
	step := uint64(1)
	if g.State.Strategy == name {
		step = g.State.Step + 1
	}
	return State{Strategy: name, Step: step, Vectors: vectors}
}

// checkResult rejects a new model with a non-finite value: finite updates can
// still overflow float32 when added to the weights.
func checkResult(next *Global) (*Global, error) {
	if i := firstNonFinite(next.Weights); i >= 0 {
		return nil, fmt.Errorf("%w: aggregated weights[%d] = %v", ErrNonFinite, i, next.Weights[i])
	}
	for k, v := range next.State.Vectors {
		if i := firstNonFinite(v); i >= 0 {
			return nil, fmt.Errorf("%w: aggregated state vector %d [%d] = %v", ErrNonFinite, k, i, v[i])
		}
	}
	return next, nil
}
