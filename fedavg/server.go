package fedavg

import (
	"fmt"
	"math"
)

// fedAvg is McMahan et al. 2017: w' = w + eta * sum_i(n_i delta_i) / sum_i n_i.
type fedAvg struct {
	train TrainConfig
	lr    float64
}

func (s fedAvg) Name() string                          { return NameFedAvg }
func (s fedAvg) Configure(uint64, *Global) TrainConfig { return s.train }

func (s fedAvg) Aggregate(_ uint64, g *Global, updates []Update) (*Global, error) {
	us, err := sortedUpdates(g, updates)
	if err != nil || len(us) == 0 {
		return nil, err
	}
	w := g.Weights
	out := make([]float32, len(w))
	lr := s.lr
	weightedMean(us, len(w), func(lo int, d []float64) {
		w, out := w[lo:lo+len(d)], out[lo:lo+len(d)]
		for j, dj := range d {
			out[j] = float32(float64(w[j]) + float64(lr*dj))
		}
	})
	return checkResult(&Global{Weights: out, State: nextState(s.Name(), g, nil)})
}

// fedAvgM is FedAvg with server momentum (Hsu et al. 2019):
//
//	d = weighted mean delta;  v' = momentum*v + d;  w' = w + eta*v'
//
// v is State.Vectors[0]. v' is computed in float64 from the stored float32 v,
// used unrounded for w', and stored rounded to float32.
type fedAvgM struct {
	train        TrainConfig
	lr, momentum float64
}

func (s fedAvgM) Name() string                          { return NameFedAvgM }
func (s fedAvgM) Configure(uint64, *Global) TrainConfig { return s.train }

func (s fedAvgM) Aggregate(_ uint64, g *Global, updates []Update) (*Global, error) {
	us, err := sortedUpdates(g, updates)
	if err != nil || len(us) == 0 {
		return nil, err
	}
	w := g.Weights
	state, err := stateVectors(s.Name(), g, 1, nil)
	if err != nil {
		return nil, err
	}
	v := state[0]
	out := make([]float32, len(w))
	vOut := make([]float32, len(w))
	lr, mom := s.lr, s.momentum
	weightedMean(us, len(w), func(lo int, d []float64) {
		w, v := w[lo:lo+len(d)], v[lo:lo+len(d)]
		out, vOut := out[lo:lo+len(d)], vOut[lo:lo+len(d)]
		for j, dj := range d {
			vj := float64(mom*float64(v[j])) + dj
			vOut[j] = float32(vj)
			out[j] = float32(float64(w[j]) + float64(lr*vj))
		}
	})
	return checkResult(&Global{Weights: out, State: nextState(s.Name(), g, [][]float32{vOut})})
}

// adaptive is FedAdam, FedYogi and FedAdagrad (Reddi et al. 2021,
// Algorithm 2), with d the weighted mean delta:
//
//	m' = b1*m + (1-b1)*d
//	v' = b2*v + (1-b2)*d^2               fedadam
//	v' = v - (1-b2)*d^2*sign(v - d^2)    fedyogi
//	v' = v + d^2                         fedadagrad
//	w' = w + eta * m' / (sqrt(v') + tau)
//
// As in the paper there is no bias correction. State.Vectors is [m, v];
// a fresh state starts from m = 0 and v = tau^2 (the paper's v_{-1} >= tau^2).
// m' and v' are computed in float64 from the stored float32 m and v, used
// unrounded for w', and stored rounded to float32.
type adaptive struct {
	name                  string
	train                 TrainConfig
	lr, beta1, beta2, tau float64
}

func (s adaptive) Name() string                          { return s.name }
func (s adaptive) Configure(uint64, *Global) TrainConfig { return s.train }

func (s adaptive) Aggregate(_ uint64, g *Global, updates []Update) (*Global, error) {
	us, err := sortedUpdates(g, updates)
	if err != nil || len(us) == 0 {
		return nil, err
	}
	w := g.Weights
	state, err := stateVectors(s.Name(), g, 2, []float32{0, float32(float64(s.tau * s.tau))})
	if err != nil {
		return nil, err
	}
	m, v := state[0], state[1]
	out := make([]float32, len(w))
	mOut := make([]float32, len(w))
	vOut := make([]float32, len(w))
	lr, b1, b2, tau := s.lr, s.beta1, s.beta2, s.tau
	c1, c2 := 1-b1, 1-b2
	kind := 0 // fedadagrad
	switch s.name {
	case NameFedAdam:
		kind = 1
	case NameFedYogi:
		kind = 2
	}
	weightedMean(us, len(w), func(lo int, d []float64) {
		n := len(d)
		w, m, v := w[lo:lo+n], m[lo:lo+n], v[lo:lo+n]
		out, mOut, vOut := out[lo:lo+n], mOut[lo:lo+n], vOut[lo:lo+n]
		for j, dj := range d {
			mj := float64(b1*float64(m[j])) + float64(c1*dj)
			d2 := float64(dj * dj)
			v0 := float64(v[j])
			var vj float64
			switch kind {
			case 1: // fedadam
				vj = float64(b2*v0) + float64(c2*d2)
			case 2: // fedyogi
				vj = v0 - float64(float64(c2*d2)*sign(v0-d2))
			default: // fedadagrad
				vj = v0 + d2
			}
			mOut[j], vOut[j] = float32(mj), float32(vj)
			out[j] = float32(float64(w[j]) + float64(lr*mj)/(math.Sqrt(vj)+tau))
		}
	})
	return checkResult(&Global{Weights: out, State: nextState(s.Name(), g, [][]float32{mOut, vOut})})
}

func sign(x float64) float64 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}

// stateVectors returns the k state vectors of g if g was produced by the
// strategy name, or a fresh state otherwise: vector i filled with init[i]
// (zero if init is short). State of the strategy's own name with the wrong
// shape is an error.
func stateVectors(name string, g *Global, k int, init []float32) ([][]float32, error) {
	dim := len(g.Weights)
	if g.State.Strategy == name {
		if len(g.State.Vectors) != k {
			return nil, fmt.Errorf("%w: %s state has %d vectors, want %d", ErrState, name, len(g.State.Vectors), k)
		}
		for i, v := range g.State.Vectors {
			if len(v) != dim {
				return nil, fmt.Errorf("%w: %s state vector %d has %d values, the model has %d", ErrState, name, i, len(v), dim)
			}
		}
		return g.State.Vectors, nil
	}
	vs := make([][]float32, k)
	for i := range vs {
		vs[i] = make([]float32, dim)
		if i < len(init) && init[i] != 0 {
			for j := range vs[i] {
				vs[i][j] = init[i]
			}
		}
	}
	return vs, nil
}
