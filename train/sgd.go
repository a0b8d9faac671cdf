package train

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// SGDConfig configures local minibatch SGD.
type SGDConfig struct {
	// Epochs is the number of passes over the local examples (E).
	Epochs int
	// BatchSize is the minibatch size (B); the last minibatch of an epoch
	// may be smaller.
	BatchSize int
	// LR is the learning rate.
	LR float64
	// ProxMu is FedProx's proximal coefficient mu; 0 gives plain SGD.
	ProxMu float64
}

// Validate reports whether c is usable.
func (c SGDConfig) Validate() error {
	switch {
	case c.Epochs < 1:
		return fmt.Errorf("train: SGD: %d epochs, want at least 1", c.Epochs)
	case c.BatchSize < 1:
		return fmt.Errorf("train: SGD: batch size %d, want at least 1", c.BatchSize)
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("train: SGD: learning rate %v, want a finite value > 0", c.LR)
	case !(c.ProxMu >= 0) || math.IsInf(c.ProxMu, 0):
		return fmt.Errorf("train: SGD: proximal mu %v, want a finite value >= 0", c.ProxMu)
	}
	return nil
}

// TrainStats summarises a Train call.
type TrainStats struct {
	// Loss is the mean cross-entropy of the examples of the last epoch,
	// each measured on its minibatch before that minibatch's step.
	Loss float64
	// Examples is the number of examples processed (epochs x examples).
	Examples int
	// Steps is the number of SGD steps taken.
	Steps int
}

// Train runs cfg.Epochs epochs of minibatch SGD over the examples of d
// named by idx, updating params in place. The example order is shuffled
// with rng at the start of every epoch (idx itself is not modified); the
// last minibatch of an epoch may be smaller than cfg.BatchSize. The loss is
// the mean softmax cross-entropy of the minibatch.
//
// If cfg.ProxMu > 0, the FedProx term mu/2*||params - global||^2 is added to
// the objective (gradient mu*(params - global)); global may be nil when
// cfg.ProxMu == 0.
//
// Train is deterministic: the same params, global, data, idx, cfg and rng
// state give bit-identical parameters. If the loss becomes NaN or infinite
// Train stops with an error and params hold the values reached so far.
func (m *Model) Train(params, global []float32, d *Dataset, idx []int, cfg SGDConfig, rng *rand.Rand) (TrainStats, error) {
	var st TrainStats
	if err := cfg.Validate(); err != nil {
		return st, err
	}
	if err := m.checkParams("Train: parameters", params); err != nil {
		return st, err
	}
	if cfg.ProxMu > 0 {
		if err := m.checkParams("Train: global parameters", global); err != nil {
			return st, err
		}
	}
	if rng == nil {
		return st, errors.New("train: Train: nil random source")
	}
	if err := m.checkData(d); err != nil {
		return st, err
	}
	if len(idx) == 0 {
		return st, fmt.Errorf("train: Train: no examples of data set %q selected", d.Name)
	}
	for i, j := range idx {
		if j < 0 || j >= d.N {
			return st, fmt.Errorf("train: Train: index %d (position %d) out of range [0,%d) of data set %q", j, i, d.N, d.Name)
		}
	}

	B := min(cfg.BatchSize, len(idx))
	m.ensure(B)
	m.bind(params)
	m.order = append(m.order[:0], idx...)
	n := len(m.order)
	lr := float32(cfg.LR)
	mu := float32(cfg.ProxMu)
	dim := m.inDim
	steps := cfg.Epochs * ((n + B - 1) / B)

	for epoch := 0; epoch < cfg.Epochs; epoch++ {
		rng.Shuffle(n, func(i, j int) { m.order[i], m.order[j] = m.order[j], m.order[i] })
		var epochLoss float64
		for s := 0; s < n; s += B {
			b := min(B, n-s)
			for i, j := range m.order[s : s+b] {
				copy(m.x[i*dim:(i+1)*dim], d.X[j*dim:(j+1)*dim])
				m.y[i] = d.Y[j]
			}
			sum := m.lossGrad(m.x, m.y, b)
			if math.IsNaN(sum) || math.IsInf(sum, 0) {
				return st, fmt.Errorf("train: training diverged: loss %v at epoch %d, step %d (learning rate %v)", sum/float64(b), epoch+1, st.Steps+1, cfg.LR)
			}
			epochLoss += sum
			if mu > 0 {
				addProx(m.grad, params, global, mu)
			}
			blasImpl.Saxpy(len(params), -lr, m.grad, 1, params, 1)
			st.Steps++
			st.Examples += b
			if m.OnStep != nil {
				m.OnStep(Progress{Epoch: epoch + 1, Epochs: cfg.Epochs, Step: st.Steps, Steps: steps, Examples: st.Examples,
					Loss: epochLoss / float64(s+b)})
			}
		}
		st.Loss = epochLoss / float64(n)
	}
	return st, nil
}

// addProx adds the gradient of mu/2*||w - global||^2 to g.
func addProx(g, w, global []float32, mu float32) {
	blasImpl.Saxpy(len(g), mu, w, 1, g, 1)
	blasImpl.Saxpy(len(g), -mu, global, 1, g, 1)
}
