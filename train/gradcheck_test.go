package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// gcCoord is one checked coordinate: the analytic and numeric derivatives.
type gcCoord struct {
	what     string
	i        int
	ana, num float64
}

// gcResult collects a finite-difference check.
type gcResult struct {
	checked, skipped int
	bad              []gcCoord
}

// gcCompare reports whether an analytic derivative matches a numeric one:
// relative tolerance rtol, absolute tolerance atol.
func gcCompare(ana, num, rtol, atol float64) bool {
	return math.Abs(ana-num) <= atol+rtol*math.Max(math.Abs(ana), math.Abs(num))
}

// gcCheck compares grad[i] with the central difference of f along vals[i]
// for each i in pick. f returns the objective (accumulated in float64) and
// whether the point lies in the same piece (ReLU signs, max-pool winners) as
// the unperturbed point; coordinates whose perturbation crosses a kink are
// skipped. vals is restored.
func gcCheck(res *gcResult, what string, f func() (float64, bool), vals, grad []float32, pick []int, eps, rtol, atol float64) {
	for _, i := range pick {
		v := vals[i]
		vp, vm := float32(float64(v)+eps), float32(float64(v)-eps)
		vals[i] = vp
		fp, okp := f()
		vals[i] = vm
		fm, okm := f()
		vals[i] = v
		if !okp || !okm {
			res.skipped++
			continue
		}
		num := (fp - fm) / (float64(vp) - float64(vm))
		ana := float64(grad[i])
		res.checked++
		if !gcCompare(ana, num, rtol, atol) {
			res.bad = append(res.bad, gcCoord{what, i, ana, num})
		}
	}
}

// gcPick returns up to k distinct indices in [0, n), all of them if n <= k.
func gcPick(rng *rand.Rand, n, k int) []int {
	if n <= k {
		p := make([]int, n)
		for i := range p {
			p[i] = i
		}
		return p
	}
	return rng.Perm(n)[:k]
}

// gcReport fails t if res has mismatches or too few coordinates were checked.
func gcReport(t *testing.T, res *gcResult) {
	t.Helper()
	t.Logf("checked %d coordinates, skipped %d at kinks", res.checked, res.skipped)
	if res.checked < 40 || res.skipped > res.checked {
		t.Errorf("checked %d coordinates, skipped %d at kinks: too few checked", res.checked, res.skipped)
	}
	for i, c := range res.bad {
		if i == 10 {
			t.Errorf("... %d mismatches in all", len(res.bad))
			break
		}
		t.Errorf("%s[%d]: analytic %.6g, numeric %.6g", c.what, c.i, c.ana, c.num)
	}
}

func gcRandom(rng *rand.Rand, n int, scale float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32((2*rng.Float64() - 1) * scale)
	}
	return s
}

// layerCheck runs a finite-difference check of l on a minibatch of b
// examples of inDim values, with objective sum(r .* forward(x)).
func layerCheck(t *testing.T, l layer, b, inDim int, x []float32, eps float64) *gcResult {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	np := l.numParams()
	params := gcRandom(rng, np, 0.5)
	grads := make([]float32, np)
	l.bind(params, grads)
	l.alloc(b)
	in := make([]float32, len(x))
	fwd := func() []float32 {
		copy(in, x) // in-place layers overwrite their input
		return l.forward(in, b)
	}
	y := fwd()
	r := gcRandom(rng, len(y), 1)
	obj := func() (float64, bool) {
		var s float64
		for i, v := range fwd() {
			s += float64(r[i]) * float64(v)
		}
		return s, true
	}
	fwd()
	dy := slices.Clone(r)
	dx := slices.Clone(l.backward(dy, b, true, false))
	grads = slices.Clone(grads)

	res := &gcResult{}
	gcCheck(res, "param", obj, params, grads, gcPick(rng, np, 300), eps, 1e-2, 1e-4)
	gcCheck(res, "input", obj, x, dx, gcPick(rng, len(x), 300), eps, 1e-2, 1e-4)
	return res
}

func TestGradDense(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, b := range []int{1, 5} {
		l := newDense("fc", 13, 7, true)
		x := gcRandom(rng, b*13, 1)
		gcReport(t, layerCheck(t, l, b, 13, x, 1e-2))
	}
}

func TestGradReLU(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	const b, n = 4, 30
	x := gcRandom(rng, b*n, 1)
	for i, v := range x { // keep away from the kink at 0
		if math.Abs(float64(v)) < 0.05 {
			x[i] = 0.1
		}
	}
	res := layerCheck(t, newReLU(n), b, n, x, 1e-3)
	gcReport(t, res)
}

func TestGradMaxPool(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	const b, h, w, c = 2, 4, 6, 3
	n := b * h * w * c
	// Distinct values 0.01 apart, so that no perturbation changes a winner.
	x := make([]float32, n)
	for i, p := range rng.Perm(n) {
		x[i] = float32(p)*0.01 - 0.5
	}
	for _, cmajor := range []bool{false, true} {
		t.Run(fmt.Sprint("cmajor=", cmajor), func(t *testing.T) {
			gcReport(t, layerCheck(t, newMaxPool(h, w, c, cmajor), b, h*w*c, x, 1e-3))
		})
	}
}

func TestGradConv(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for _, tc := range []struct{ b, h, w, cin, cout int }{
		{1, 5, 5, 1, 2}, {2, 6, 4, 3, 4}, {2, 8, 8, 2, 3}, {1, 2, 3, 2, 2},
	} {
		for _, cmajor := range []bool{false, true} {
			t.Run(fmt.Sprintf("%dx%dx%dx%d-%d-cmajor=%v", tc.b, tc.h, tc.w, tc.cin, tc.cout, cmajor), func(t *testing.T) {
				l := newConv("conv", tc.h, tc.w, tc.cin, tc.cout, 5, cmajor)
				x := gcRandom(rng, tc.b*tc.h*tc.w*tc.cin, 1)
				gcReport(t, layerCheck(t, l, tc.b, tc.h*tc.w*tc.cin, x, 1e-2))
			})
		}
	}
}

func TestGradSoftmaxXent(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	const b, c = 10, 6
	s := softmaxXent{classes: c}
	s.alloc(b)
	z := gcRandom(rng, b*c, 3)
	y := make([]uint8, b)
	for i := range y {
		y[i] = uint8(rng.IntN(c))
	}
	obj := func() (float64, bool) { return s.forwardBackward(z, y, b, 0) / b, true }
	s.forwardBackward(z, y, b, b)
	res := &gcResult{}
	gcCheck(res, "logit", obj, z, slices.Clone(s.grad), gcPick(rng, len(z), 100), 1e-3, 1e-2, 1e-5)
	gcReport(t, res)

	// Extreme logits must not overflow.
	z2 := []float32{1000, -1000, 0, 0, 0, 0}
	s2 := softmaxXent{classes: c}
	s2.alloc(1)
	if l := s2.forwardBackward(z2, []uint8{1}, 1, 1); math.Abs(l-2000) > 1e-6 {
		t.Errorf("loss of extreme logits = %v, want 2000", l)
	}
	for _, g := range s2.grad {
		if math.IsNaN(float64(g)) {
			t.Fatalf("NaN gradient for extreme logits: %v", s2.grad)
		}
	}
}

// pattern snapshots the piece of a piecewise-linear network the last
// forward pass was in: ReLU signs and max-pool winners.
func pattern(m *Model) []int32 {
	var p []int32
	for _, l := range m.layers {
		switch l := l.(type) {
		case *relu:
			for _, v := range l.y {
				if v > 0 {
					p = append(p, 1)
				} else {
					p = append(p, 0)
				}
			}
		case *maxPool:
			for _, a := range l.arg {
				p = append(p, int32(a))
			}
		}
	}
	return p
}

// modelCheck checks the gradient of the whole model's objective (mean
// cross-entropy plus, if mu > 0, the proximal term) against finite
// differences on a random subset of parameters. corrupt, if not nil, may
// alter the analytic gradient before the comparison.
func modelCheck(t *testing.T, s Spec, b int, mu float64, corrupt func([]float32)) *gcResult {
	t.Helper()
	m, err := NewModel(s)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, uint64(b)))
	params := make([]float32, m.NumParams())
	m.Init(params, 3)
	for i := range params { // non-zero biases too
		params[i] += float32(0.05 * (2*rng.Float64() - 1))
	}
	global := gcRandom(rng, len(params), 0.3)
	dim := s.InputDim()
	x := make([]float32, b*dim)
	for i := range x {
		x[i] = rng.Float32()
	}
	y := make([]uint8, b)
	for i := range y {
		y[i] = uint8(rng.IntN(s.Classes))
	}
	m.ensure(b)
	m.bind(params)
	m.lossGrad(x, y, b)
	if mu > 0 {
		addProx(m.grad, params, global, float32(mu))
	}
	grad := slices.Clone(m.grad)
	if corrupt != nil {
		corrupt(grad)
	}
	m.forward(x, b)
	base := pattern(m)
	obj := func() (float64, bool) {
		l := m.loss.forwardBackward(m.forward(x, b), y, b, 0) / float64(b)
		if mu > 0 {
			var p float64
			for i, w := range params {
				d := float64(w) - float64(global[i])
				p += d * d
			}
			l += mu / 2 * p
		}
		return l, slices.Equal(pattern(m), base)
	}
	// Central differences in float32 need a step well above the rounding
	// noise; coordinates whose step crosses a kink are skipped, so check
	// enough of them.
	const eps = 1e-2
	res := &gcResult{}
	// Check every tensor, a subset of its coordinates each.
	for _, tn := range m.Tensors() {
		pick := gcPick(rng, tn.Len, 60)
		for i := range pick {
			pick[i] += tn.Offset
		}
		gcCheck(res, tn.Name, obj, params, grad, pick, eps, 2e-2, 2e-4)
	}
	return res
}

func TestGradModels(t *testing.T) {
	for _, tc := range []struct {
		s Spec
		b int
	}{
		{Spec{Arch: ArchLogReg, Height: 3, Width: 4, Channels: 2, Classes: 5}, 3},
		{Spec{Arch: Arch2NN, Height: 4, Width: 4, Channels: 1, Classes: 3}, 4},
		{Spec{Arch: ArchCNN, Height: 8, Width: 8, Channels: 1, Classes: 10}, 2},
		{Spec{Arch: ArchCNN, Height: 4, Width: 8, Channels: 2, Classes: 3}, 3},
	} {
		t.Run(fmt.Sprintf("%s-%dx%dx%d", tc.s.Arch, tc.s.Height, tc.s.Width, tc.s.Channels), func(t *testing.T) {
			gcReport(t, modelCheck(t, tc.s, tc.b, 0, nil))
		})
	}
}

func TestGradProx(t *testing.T) {
	for _, s := range []Spec{
		{Arch: ArchLogReg, Height: 2, Width: 5, Channels: 1, Classes: 4},
		{Arch: Arch2NN, Height: 3, Width: 3, Channels: 1, Classes: 3},
	} {
		t.Run(s.Arch, func(t *testing.T) {
			gcReport(t, modelCheck(t, s, 3, 0.7, nil))
		})
	}
}

// TestGradCheckCatchesErrors makes sure the check is able to fail: a wrong
// gradient must be reported.
func TestGradCheckCatchesErrors(t *testing.T) {
	s := Spec{Arch: Arch2NN, Height: 4, Width: 4, Channels: 1, Classes: 3}
	cnn := Spec{Arch: ArchCNN, Height: 8, Width: 8, Channels: 1, Classes: 10}
	for _, tc := range []struct {
		name    string
		s       Spec
		corrupt func([]float32)
	}{
		{"scaled", s, func(g []float32) {
			for i := range g {
				g[i] *= 1.1
			}
		}},
		{"bias-sign", s, func(g []float32) { // fc3.bias is the last tensor
			for i := len(g) - 3; i < len(g); i++ {
				g[i] = -g[i]
			}
		}},
		{"cnn-conv1-scaled", cnn, func(g []float32) { // conv1.weight comes first
			for i := 0; i < 5*5*32; i++ {
				g[i] *= 1.1
			}
		}},
		{"prox-missing", s, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res *gcResult
			if tc.corrupt != nil {
				res = modelCheck(t, tc.s, 3, 0, tc.corrupt)
			} else {
				// The plain loss gradient must not pass as the gradient
				// of the proximal objective (same parameters and data:
				// modelCheck is deterministic).
				var plain []float32
				modelCheck(t, tc.s, 3, 0, func(g []float32) { plain = slices.Clone(g) })
				res = modelCheck(t, tc.s, 3, 0.7, func(g []float32) { copy(g, plain) })
			}
			if len(res.bad) == 0 {
				t.Errorf("corrupted gradient passed the check (%d coordinates checked)", res.checked)
			}
		})
	}
}

// TestConvForwardReference compares both convolution layouts with a direct
// convolution.
func TestConvForwardReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	const b, h, w, cin, cout, k = 2, 6, 4, 3, 5, 5
	x := gcRandom(rng, b*h*w*cin, 1)
	params := gcRandom(rng, cout*k*k*cin+cout, 1)
	want := make([]float32, b*h*w*cout) // channel-last
	for n := 0; n < b; n++ {
		for oh := 0; oh < h; oh++ {
			for ow := 0; ow < w; ow++ {
				for co := 0; co < cout; co++ {
					s := float64(params[cout*k*k*cin+co])
					for kh := 0; kh < k; kh++ {
						for kw := 0; kw < k; kw++ {
							ih, iw := oh+kh-k/2, ow+kw-k/2
							if ih < 0 || ih >= h || iw < 0 || iw >= w {
								continue
							}
							for ci := 0; ci < cin; ci++ {
								s += float64(params[((co*k+kh)*k+kw)*cin+ci]) * float64(x[((n*h+ih)*w+iw)*cin+ci])
							}
						}
					}
					want[((n*h+oh)*w+ow)*cout+co] = float32(s)
				}
			}
		}
	}
	for _, cmajor := range []bool{false, true} {
		l := newConv("conv", h, w, cin, cout, k, cmajor)
		l.bind(params, make([]float32, len(params)))
		l.alloc(b)
		y := l.forward(x, b)
		rows := b * h * w
		for p := 0; p < rows; p++ {
			for co := 0; co < cout; co++ {
				got := y[p*cout+co]
				if cmajor {
					got = y[co*rows+p]
				}
				if d := math.Abs(float64(got - want[p*cout+co])); d > 1e-5 {
					t.Fatalf("cmajor=%v: position %d channel %d: %v, want %v", cmajor, p, co, got, want[p*cout+co])
				}
			}
		}
	}
}

// TestMaxPoolForwardReference compares both input layouts with a direct
// 2x2 max-pool.
func TestMaxPoolForwardReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	const b, h, w, c = 3, 4, 6, 2
	x := gcRandom(rng, b*h*w*c, 1) // channel-last
	xT := make([]float32, len(x))  // channel-major
	for p := 0; p < b*h*w; p++ {
		for ch := 0; ch < c; ch++ {
			xT[ch*b*h*w+p] = x[p*c+ch]
		}
	}
	for _, cmajor := range []bool{false, true} {
		l := newMaxPool(h, w, c, cmajor)
		l.alloc(b)
		in := x
		if cmajor {
			in = xT
		}
		y := l.forward(in, b)
		for n := 0; n < b; n++ {
			for oh := 0; oh < h/2; oh++ {
				for ow := 0; ow < w/2; ow++ {
					for ch := 0; ch < c; ch++ {
						m := float32(math.Inf(-1))
						for dh := 0; dh < 2; dh++ {
							for dw := 0; dw < 2; dw++ {
								m = max(m, x[((n*h+2*oh+dh)*w+2*ow+dw)*c+ch])
							}
						}
						if got := y[((n*h/2+oh)*w/2+ow)*c+ch]; got != m {
							t.Fatalf("cmajor=%v: (%d,%d,%d,%d) = %v, want %v", cmajor, n, oh, ow, ch, got, m)
						}
					}
				}
			}
		}
	}
}

// TestDenseForwardReference checks Y = X W + b directly.
func TestDenseForwardReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	const b, in, out = 3, 70, 130 // wider than one gemm tile
	x := gcRandom(rng, b*in, 1)
	params := gcRandom(rng, in*out+out, 1)
	l := newDense("fc", in, out, true)
	l.bind(params, make([]float32, len(params)))
	l.alloc(b)
	y := l.forward(x, b)
	for i := 0; i < b; i++ {
		for j := 0; j < out; j++ {
			s := float64(params[in*out+j])
			for k := 0; k < in; k++ {
				s += float64(x[i*in+k]) * float64(params[k*out+j])
			}
			if d := math.Abs(s - float64(y[i*out+j])); d > 1e-4 {
				t.Fatalf("y[%d,%d] = %v, want %v", i, j, y[i*out+j], s)
			}
		}
	}
}

// TestChunkedGradient checks that a minibatch processed in chunks (to bound
// memory) gets the same gradient as in one pass.
func TestChunkedGradient(t *testing.T) {
	for _, s := range []Spec{
		{Arch: Arch2NN, Height: 3, Width: 3, Channels: 1, Classes: 4},
		{Arch: ArchCNN, Height: 4, Width: 8, Channels: 2, Classes: 3},
	} {
		t.Run(s.Arch, func(t *testing.T) {
			const b = 11
			d := randomDataset(s, b, 4)
			grads := make([][]float32, 2)
			losses := make([]float64, 2)
			for i, chunk := range []int{b, 3} {
				m, _ := NewModel(s)
				m.chunk = chunk
				p := make([]float32, m.NumParams())
				m.Init(p, 2)
				m.ensure(b)
				m.bind(p)
				losses[i] = m.lossGrad(d.X, d.Y, b)
				grads[i] = m.grad
			}
			if math.Abs(losses[0]-losses[1]) > 1e-6*math.Abs(losses[0]) {
				t.Errorf("loss %v in one pass, %v in chunks", losses[0], losses[1])
			}
			var scale float64
			for _, g := range grads[0] {
				scale = max(scale, math.Abs(float64(g)))
			}
			for i, g := range grads[0] {
				if math.Abs(float64(g-grads[1][i])) > 1e-5*scale {
					t.Fatalf("gradient[%d]: %v in one pass, %v in chunks", i, g, grads[1][i])
				}
			}
		})
	}
}
