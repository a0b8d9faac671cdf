package train

import (
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// layer is one stage of a network working on minibatches laid out as
// row-major b x inSize matrices. A layer's parameters and gradients are
// views into the model's flat vectors, set by bind. Buffers returned by
// forward and backward belong to the layer (or, for in-place layers, to
// the caller) and stay valid until its next call.
type layer interface {
	// tensors lists the layer's parameter tensors (offsets relative to
	// the layer's own slice).
	tensors() []Tensor
	numParams() int
	bind(params, grads []float32)
	initParams(rng *rand.Rand)
	// alloc sizes scratch buffers for minibatches of up to b examples.
	alloc(b int)
	// forward computes the output of the b examples in x (b x inSize).
	forward(x []float32, b int) []float32
	// backward takes the gradient of the loss with respect to the last
	// forward output, writes the parameter gradients (adds them to the
	// current ones if acc) and, if needDX, returns the gradient with
	// respect to the last forward input.
	backward(dy []float32, b int, needDX, acc bool) []float32
	// macs reports multiply-adds per example of the forward pass, of the
	// weight gradient and of the input gradient.
	macs() (fwd, bwdW, bwdX float64)
}

var blasImpl gonum.Implementation

// gemmTile bounds the sub-products sgemm hands to gonum: gonum splits C
// into 64x64 blocks and spreads products of 4 or more blocks over new
// goroutines, which allocates on every call. Sub-products of at most 3
// blocks run serially in the calling goroutine.
const gemmTile = 64

// sgemm computes C = alpha*op(A)*op(B) + beta*C (op transposes when tA,
// tB) with gonum's pure Go implementation, tiling C so that each call runs
// serially without allocating. The tiling depends only on the shapes, and
// each element of C is computed by one serial call, so results are
// deterministic.
func sgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	if tA {
		ta = blas.Trans
	}
	if tB {
		tb = blas.Trans
	}
	mt, nt := m, n
	switch {
	case m <= gemmTile:
		nt = balancedTile(n, 3*gemmTile)
	case n <= gemmTile:
		mt = 3 * gemmTile
	default:
		mt, nt = gemmTile, balancedTile(n, 3*gemmTile)
	}
	for i := 0; i < m; i += mt {
		mi := min(mt, m-i)
		var ai []float32
		if tA {
			ai = a[i:]
		} else {
			ai = a[i*lda:]
		}
		for j := 0; j < n; j += nt {
			nj := min(nt, n-j)
			var bj []float32
			if tB {
				bj = b[j*ldb:]
			} else {
				bj = b[j:]
			}
			blasImpl.Sgemm(ta, tb, mi, nj, k, alpha, ai, lda, bj, ldb, beta, c[i*ldc+j:], ldc)
		}
	}
}

// accBeta is the gemm coefficient of C that overwrites it or accumulates
// into it.
func accBeta(acc bool) float32 {
	if acc {
		return 1
	}
	return 0
}

// balancedTile splits n into the fewest tiles of at most limit and returns
// the tile size that makes them (nearly) equal.
func balancedTile(n, limit int) int {
	tiles := (n + limit - 1) / limit
	return (n + tiles - 1) / tiles
}

// sumRows sets dst (len n) to the column sums of the b x n matrix x, or
// adds them to it if acc.
func sumRows(dst, x []float32, b, n int, acc bool) {
	if !acc {
		clear(dst)
	}
	for i := 0; i < b; i++ {
		blasImpl.Saxpy(n, 1, x[i*n:(i+1)*n], 1, dst, 1)
	}
}

// uniformFill fills w with values drawn uniformly from [-limit, limit).
func uniformFill(w []float32, limit float64, rng *rand.Rand) {
	for i := range w {
		w[i] = float32((2*rng.Float64() - 1) * limit)
	}
}

// growF32 returns s if it holds n values, else a new slice of length n.
func growF32(s []float32, n int) []float32 {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]float32, n)
}

// dense is a fully connected layer Y = X W + b with W of shape in x out.
type dense struct {
	name    string
	in, out int
	he      bool // He-uniform init (followed by ReLU), else Glorot-uniform

	w, b, dw, db []float32
	x            []float32 // last input
	y, dx        []float32
}

func newDense(name string, in, out int, he bool) *dense {
	return &dense{name: name, in: in, out: out, he: he}
}

func (l *dense) tensors() []Tensor {
	return []Tensor{
		{Name: l.name + ".weight", Shape: []int{l.in, l.out}, Len: l.in * l.out},
		{Name: l.name + ".bias", Shape: []int{l.out}, Len: l.out},
	}
}

func (l *dense) numParams() int { return l.in*l.out + l.out }

func (l *dense) bind(p, g []float32) {
	nw := l.in * l.out
	l.w, l.b = p[:nw], p[nw:]
	l.dw, l.db = g[:nw], g[nw:]
}

func (l *dense) initParams(rng *rand.Rand) {
	limit := math.Sqrt(6 / float64(l.in+l.out))
	if l.he {
		limit = math.Sqrt(6 / float64(l.in))
	}
	uniformFill(l.w, limit, rng)
	clear(l.b)
}

func (l *dense) alloc(b int) {
	l.y = growF32(l.y, b*l.out)
	l.dx = growF32(l.dx, b*l.in)
}

func (l *dense) forward(x []float32, b int) []float32 {
	l.x = x
	y := l.y[:b*l.out]
	for i := 0; i < b; i++ {
		copy(y[i*l.out:(i+1)*l.out], l.b)
	}
	sgemm(false, false, b, l.out, l.in, 1, x, l.in, l.w, l.out, 1, y, l.out)
	return y
}

func (l *dense) backward(dy []float32, b int, needDX, acc bool) []float32 {
	// dW = X^T dY, db = column sums of dY, dX = dY W^T.
	sgemm(true, false, l.in, l.out, b, 1, l.x, l.in, dy, l.out, accBeta(acc), l.dw, l.out)
	sumRows(l.db, dy, b, l.out, acc)
	if !needDX {
		return nil
	}
	dx := l.dx[:b*l.in]
	sgemm(false, true, b, l.in, l.out, 1, dy, l.out, l.w, l.out, 0, dx, l.in)
	return dx
}

func (l *dense) macs() (fwd, bwdW, bwdX float64) {
	n := float64(l.in) * float64(l.out)
	return n, n, n
}

// relu is the rectifier max(0, x), applied in place: forward overwrites its
// input and backward its incoming gradient.
type relu struct {
	n int // values per example
	y []float32
}

func newReLU(n int) *relu { return &relu{n: n} }

func (l *relu) tensors() []Tensor       { return nil }
func (l *relu) numParams() int          { return 0 }
func (l *relu) bind(_, _ []float32)     {}
func (l *relu) initParams(_ *rand.Rand) {}
func (l *relu) alloc(int)               {}
func (l *relu) macs() (_, _, _ float64) { return }
func (l *relu) forward(x []float32, b int) []float32 {
	y := x[:b*l.n]
	for i, v := range y {
		y[i] = max(v, 0) // branch-free; NaN stays NaN so that divergence shows in the loss
	}
	l.y = y
	return y
}

func (l *relu) backward(dy []float32, b int, _, _ bool) []float32 {
	dy = dy[:b*l.n]
	y := l.y[:len(dy)]
	for i, v := range y {
		// v >= 0 (or NaN): keep dy[i] iff v's bits are non-zero, without
		// a branch (signs of activations are unpredictable).
		keep := (math.Float32bits(v) + 0x7fffffff) >> 31
		dy[i] = math.Float32frombits(math.Float32bits(dy[i]) & -keep)
	}
	return dy
}

// softmaxXent is the softmax cross-entropy loss over a b x classes matrix of
// logits, computed with the log-sum-exp shift in float64.
type softmaxXent struct {
	classes int
	grad    []float32
}

func (s *softmaxXent) alloc(b int) { s.grad = growF32(s.grad, b*s.classes) }

// forwardBackward returns the sum over the b examples of -log softmax(z)[y]
// and, if meanOver > 0, leaves in s.grad the gradient with respect to the
// logits of that sum divided by meanOver (the size of the whole minibatch
// when it is processed in chunks).
func (s *softmaxXent) forwardBackward(logits []float32, y []uint8, b, meanOver int) float64 {
	c := s.classes
	var sum float64
	needGrad := meanOver > 0
	inv := 1 / float64(meanOver)
	for i := 0; i < b; i++ {
		z := logits[i*c : (i+1)*c]
		zmax := float64(z[0])
		for _, v := range z[1:] {
			zmax = max(zmax, float64(v))
		}
		var se float64
		for _, v := range z {
			se += math.Exp(float64(v) - zmax)
		}
		lse := zmax + math.Log(se)
		label := int(y[i])
		sum += lse - float64(z[label])
		if needGrad {
			g := s.grad[i*c : (i+1)*c]
			for j, v := range z {
				p := math.Exp(float64(v) - lse)
				if j == label {
					p--
				}
				g[j] = float32(p * inv)
			}
		}
	}
	return sum
}
