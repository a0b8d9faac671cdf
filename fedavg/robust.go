package fedavg

import (
	"math"
	"slices"
)

// The robust rules treat every update alike (no weighting by examples,
// except MultiKrum's final average) and add their aggregate to the weights
// as is: w' = w + aggregate. They need the individual updates, so they cannot
// run under secure aggregation.

// median is the coordinate-wise median (Yin et al. 2018); for an even number
// of updates, the mean of the two middle values.
type median struct{ train TrainConfig }

func (s median) Name() string                          { return NameMedian }
func (s median) Configure(uint64, *Global) TrainConfig { return s.train }

func (s median) Aggregate(_ uint64, g *Global, updates []Update) (*Global, error) {
	us, err := sortedUpdates(g, updates)
	if err != nil || len(us) == 0 {
		return nil, err
	}
	return trimmedAggregate(s.Name(), g, us, (len(us)-1)/2)
}

// trimmed is the coordinate-wise trimmed mean (Yin et al. 2018): drop the
// floor(fraction*n) smallest and largest values of each coordinate and
// average the rest, unweighted. fraction < 0.5 keeps at least one value.
type trimmed struct {
	train    TrainConfig
	fraction float64
}

func (s trimmed) Name() string                          { return NameTrimmedMean }
func (s trimmed) Configure(uint64, *Global) TrainConfig { return s.train }

func (s trimmed) Aggregate(_ uint64, g *Global, updates []Update) (*Global, error) {
	us, err := sortedUpdates(g, updates)
	if err != nil || len(us) == 0 {
		return nil, err
	}
	return trimmedAggregate(s.Name(), g, us, trimCount(s.fraction, len(us)))
}

// trimCount returns floor(fraction*n), the values trimmed at each end.
func trimCount(fraction float64, n int) int {
	return int(math.Floor(float64(fraction * float64(n))))
}

func trimmedAggregate(name string, g *Global, us []Update, trim int) (*Global, error) {
	if err := checkFinite(us); err != nil {
		return nil, err
	}
	w := g.Weights
	out := make([]float32, len(w))
	trimmedMean(us, len(w), trim, func(lo int, d []float64) {
		w, out := w[lo:lo+len(d)], out[lo:lo+len(d)]
		for j, dj := range d {
			out[j] = float32(float64(w[j]) + dj)
		}
	})
	return checkResult(&Global{Weights: out, State: nextState(name, g, nil)})
}

// krum is Krum and Multi-Krum (Blanchard et al. 2017). With n updates and f
// Byzantine, each update's score is the sum of its squared distances to its
// n-f-2 nearest neighbors. Krum adds the update with the lowest score (ties
// go to the lowest peer ID); Multi-Krum adds the example-weighted mean of the
// m lowest-scoring updates (m = n-f when unset, and never more than n-f).
// Both need n >= 2f+3; with fewer updates there is no new model (nil, nil).
type krum struct {
	name  string
	train TrainConfig
	f, m  int
}

func (s krum) Name() string                          { return s.name }
func (s krum) Configure(uint64, *Global) TrainConfig { return s.train }

func (s krum) Aggregate(_ uint64, g *Global, updates []Update) (*Global, error) {
	us, err := sortedUpdates(g, updates)
	if err != nil {
		return nil, err
	}
	n := len(us)
	if n < 2*s.f+3 {
		return nil, nil
	}
	if err := checkFinite(us); err != nil {
		return nil, err
	}
	w := g.Weights
	order := krumOrder(krumScores(us, len(w), n-s.f-2))
	out := make([]float32, len(w))
	if s.name == NameKrum {
		best := us[order[0]].Delta
		for j := range out {
			out[j] = float32(float64(w[j]) + float64(best[j]))
		}
	} else {
		m := n - s.f
		if s.m > 0 && s.m < m {
			m = s.m
		}
		chosen := order[:m]
		slices.Sort(chosen) // back to peer order for the sum
		sel := make([]Update, m)
		for i, k := range chosen {
			sel[i] = us[k]
		}
		weightedMean(sel, len(w), func(lo int, d []float64) {
			w, out := w[lo:lo+len(d)], out[lo:lo+len(d)]
			for j, dj := range d {
				out[j] = float32(float64(w[j]) + dj)
			}
		})
	}
	return checkResult(&Global{Weights: out, State: nextState(s.name, g, nil)})
}
