package train

import (
	"errors"
	"math"
	"slices"
	"testing"
)

// TestExampleGrads checks the per-example gradients against the minibatch
// gradient (their mean), which the finite-difference checks cover, and
// that each depends only on its example: the same bits in any order and
// after a minibatch pass of another size.
func TestExampleGrads(t *testing.T) {
	for _, s := range []Spec{
		{Arch: ArchLogReg, Height: 3, Width: 3, Channels: 1, Classes: 4},
		{Arch: Arch2NN, Height: 3, Width: 3, Channels: 1, Classes: 4},
		{Arch: ArchCNN, Height: 4, Width: 8, Channels: 2, Classes: 3},
	} {
		t.Run(s.Arch, func(t *testing.T) {
			const b = 7
			d := randomDataset(s, b, 4)
			m, _ := NewModel(s)
			p := make([]float32, m.NumParams())
			m.Init(p, 2)
			m.ensure(b)
			m.bind(p)
			wantLoss := m.lossGrad(d.X, d.Y, b)
			want := slices.Clone(m.grad)

			per := make([][]float32, b)
			var loss float64
			sum := make([]float64, len(p))
			err := m.ExampleGrads(p, d, allIndices(b), func(k int, l float64, g []float32) error {
				per[k] = slices.Clone(g)
				loss += l
				for i, v := range g {
					sum[i] += float64(v)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(loss-wantLoss) > 1e-9*math.Abs(wantLoss) {
				t.Errorf("per-example losses sum to %v, minibatch %v", loss, wantLoss)
			}
			var scale float64
			for _, g := range want {
				scale = max(scale, math.Abs(float64(g)))
			}
			for i, g := range want {
				if mean := sum[i] / b; math.Abs(float64(g)-mean) > 1e-5*scale {
					t.Fatalf("gradient[%d]: minibatch %v, mean of per-example %v", i, g, mean)
				}
			}

			// Reversed order, after a full-batch pass left its state behind.
			m.lossGrad(d.X, d.Y, b)
			rev := []int{6, 5, 4, 3, 2, 1, 0}
			err = m.ExampleGrads(p, d, rev, func(k int, _ float64, g []float32) error {
				if !slices.Equal(g, per[rev[k]]) {
					t.Errorf("example %d: gradient depends on what came before", rev[k])
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestExampleGradsErrors(t *testing.T) {
	s := Spec{Arch: ArchLogReg, Height: 2, Width: 2, Channels: 1, Classes: 2}
	m, _ := NewModel(s)
	d := randomDataset(s, 3, 1)
	p := make([]float32, m.NumParams())
	nop := func(int, float64, []float32) error { return nil }
	if err := m.ExampleGrads(p[:1], d, []int{0}, nop); err == nil {
		t.Error("short parameters accepted")
	}
	if err := m.ExampleGrads(p, d, []int{0, 3}, nop); err == nil {
		t.Error("out-of-range index accepted")
	}
	stop := errors.New("stop")
	calls := 0
	err := m.ExampleGrads(p, d, []int{0, 1, 2}, func(int, float64, []float32) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("fn's error: got %v after %d calls", err, calls)
	}
	if err := m.ExampleGrads(p, d, nil, nop); err != nil {
		t.Errorf("no examples: %v", err)
	}
}
