package fedavg

import (
	"errors"
	"fmt"
	"math"
)

// Clip bounds every update's influence: it scales each delta whose L2 norm
// exceeds Norm down to norm at most Norm, then hands the updates to Inner.
// Updates within the bound pass unchanged. Clip composes by wrapping, so any
// strategy can be clipped: Clip{Inner: s, Norm: 5}.
//
// The bound is exact: a clipped delta, rounded to float32, has an L2 norm
// (computed in float64, in index order) of at most Norm.
type Clip struct {
	Inner Strategy
	Norm  float64
}

// Name returns the inner strategy's name followed by "+clip".
func (c Clip) Name() string { return c.Inner.Name() + "+clip" }

// Configure returns the inner strategy's configuration.
func (c Clip) Configure(round uint64, g *Global) TrainConfig { return c.Inner.Configure(round, g) }

// Aggregate clips the updates (copies, never the originals) and aggregates
// them with Inner.
func (c Clip) Aggregate(round uint64, g *Global, updates []Update) (*Global, error) {
	if c.Inner == nil {
		return nil, errors.New("fedavg: clip: no inner strategy")
	}
	if !(c.Norm > 0) || math.IsInf(c.Norm, 0) {
		return nil, fmt.Errorf("fedavg: clip: norm %v, want > 0 and finite", c.Norm)
	}
	clipped := make([]Update, len(updates))
	for i, u := range updates {
		clipped[i] = u
		n := l2Norm(u.Delta)
		if math.IsNaN(n) || math.IsInf(n, 0) {
			// Scaling would turn an infinity into zeros and hide it.
			return nil, fmt.Errorf("%w: peer %s: delta norm %v", ErrNonFinite, peerString(u.Peer), n)
		}
		if n > c.Norm {
			clipped[i].Delta = clipTo(u.Delta, n, c.Norm)
		}
	}
	return c.Inner.Aggregate(round, g, clipped)
}

// clipTo returns a copy of xs (whose norm is n > limit) scaled to norm at
// most limit. Rounding the scaled values to float32 can push the norm a hair
// above limit; the scale then shrinks by a relative 2^-22 until it does not.
func clipTo(xs []float32, n, limit float64) []float32 {
	out := make([]float32, len(xs))
	scale := limit / n
	for {
		for j, x := range xs {
			out[j] = float32(float64(x) * scale)
		}
		if l2Norm(out) <= limit {
			return out
		}
		scale = float64(scale * (1 - 0x1p-22))
	}
}
