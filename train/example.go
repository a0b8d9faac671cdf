package train

import "fmt"

// ExampleGrads computes, for each example of d named by idx in turn, the
// gradient at params of that example's own softmax cross-entropy (a
// minibatch of one), and calls fn with the example's position k in idx, its
// loss and the gradient, laid out as the parameters. This is what DP-SGD
// needs to clip every example's gradient before summing (Abadi et al.
// 2016).
//
// grad is the model's scratch buffer: it is valid only until fn returns,
// and fn may modify it. params must not change during the call, except by
// fn (the next example then sees the new values). An error from fn stops
// the pass and is returned. The gradients are deterministic: the same
// params and example give the same bits, whatever came before.
func (m *Model) ExampleGrads(params []float32, d *Dataset, idx []int, fn func(k int, loss float64, grad []float32) error) error {
	if err := m.checkParams("ExampleGrads: parameters", params); err != nil {
		return err
	}
	if err := m.checkData(d); err != nil {
		return err
	}
	for k, j := range idx {
		if j < 0 || j >= d.N {
			return fmt.Errorf("train: ExampleGrads: index %d (position %d) out of range [0,%d) of data set %q", j, k, d.N, d.Name)
		}
	}
	m.ensure(1)
	m.bind(params)
	dim := m.inDim
	x, y := m.x[:dim], m.y[:1]
	for k, j := range idx {
		copy(x, d.X[j*dim:(j+1)*dim])
		y[0] = d.Y[j]
		loss := m.lossGrad(x, y, 1)
		if err := fn(k, loss, m.grad); err != nil {
			return err
		}
	}
	return nil
}
