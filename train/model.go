package train

import (
	"errors"
	"fmt"
	"math/rand/v2"
)

// Architectures accepted in Spec.Arch.
const (
	// ArchLogReg is multinomial logistic regression: one dense layer from
	// the flattened input to the classes.
	ArchLogReg = "logreg"
	// Arch2NN is the FedAvg paper's multilayer perceptron: two hidden dense
	// layers of 200 units with ReLU (784-200-200-10 on MNIST, 199,210
	// parameters).
	Arch2NN = "2nn"
	// ArchCNN is the FedAvg paper's MNIST CNN: two 5x5 "same" convolutions
	// with 32 and 64 channels, each followed by ReLU and 2x2 max-pooling, a
	// dense layer of 512 units with ReLU and a dense output layer (1,663,370
	// parameters on MNIST).
	ArchCNN = "cnn"
)

// Archs lists the valid values of Spec.Arch.
var Archs = []string{ArchLogReg, Arch2NN, ArchCNN}

// maxInputDim bounds the per-example input size so that buffer sizes
// cannot overflow.
const maxInputDim = 1 << 24

// Spec describes a model: its architecture and the shape of its input
// (Height x Width x Channels, channel-last, as in Dataset) and output.
// The dense architectures only care about the flattened size.
type Spec struct {
	// Arch is the architecture: ArchLogReg, Arch2NN or ArchCNN.
	Arch string
	// Height, Width and Channels are the input shape; their product is the
	// data set's Dim. The CNN needs Height and Width divisible by 4.
	Height, Width, Channels int
	// Classes is the number of output classes, 2..256.
	Classes int
}

// Validate reports whether s describes a model this package can build.
func (s Spec) Validate() error {
	switch s.Arch {
	case ArchLogReg, Arch2NN, ArchCNN:
	default:
		return fmt.Errorf("train: unknown model architecture %q (valid: %s, %s, %s)", s.Arch, ArchLogReg, Arch2NN, ArchCNN)
	}
	if s.Height < 1 || s.Width < 1 || s.Channels < 1 {
		return fmt.Errorf("train: model %s: input shape %dx%dx%d must be positive", s.Arch, s.Height, s.Width, s.Channels)
	}
	if s.Height > maxInputDim || s.Width > maxInputDim || s.Channels > maxInputDim ||
		s.Height*s.Width > maxInputDim || s.Height*s.Width*s.Channels > maxInputDim {
		return fmt.Errorf("train: model %s: input shape %dx%dx%d too large", s.Arch, s.Height, s.Width, s.Channels)
	}
	if s.Classes < 2 || s.Classes > 256 {
		return fmt.Errorf("train: model %s: %d classes, want 2..256", s.Arch, s.Classes)
	}
	if s.Arch == ArchCNN && (s.Height%4 != 0 || s.Width%4 != 0) {
		return fmt.Errorf("train: model cnn: input %dx%d: height and width must be divisible by 4 (two 2x2 max-pools)", s.Height, s.Width)
	}
	return nil
}

// InputDim is the flattened size of one input example, Height*Width*Channels.
func (s Spec) InputDim() int { return s.Height * s.Width * s.Channels }

// Tensor locates one parameter tensor inside the flat parameter vector:
// params[Offset:Offset+Len] holds it row-major in Shape. Dense weights have
// shape [in, out] (Y = X W + b); convolution kernels have shape
// [out channels, kh, kw, in channels]; biases have shape [out].
type Tensor struct {
	// Name is the layer and role, such as "conv1.weight" or "fc2.bias".
	Name string
	// Shape is the tensor's shape, outermost dimension first.
	Shape []int
	// Offset is the index of the first value in the parameter vector.
	Offset int
	// Len is the number of values, the product of Shape.
	Len int
}

// Model is one of the built-in networks. It owns no parameters: they are
// passed to each call as one flat []float32 whose layout Tensors describes.
// A Model holds scratch buffers (activations, gradients), so it is NOT safe
// for concurrent use: use one Model per goroutine.
type Model struct {
	spec    Spec
	layers  []layer
	tensors []Tensor
	nparams int
	inDim   int

	grad   []float32 // gradient, same layout as the parameters
	chunk  int       // most examples a forward/backward pass works on
	lbatch int       // examples the layers' scratch buffers are sized for
	x      []float32 // gathered minibatch input, cap >= batch x inDim
	y      []uint8   // gathered minibatch labels
	loss   softmaxXent
	order  []int     // shuffled example order
	bound  []float32 // parameters the layers view

	// OnStep, if set, is called after every SGD step of Train (and of
	// local DP-SGD) with the progress so far; it must be cheap (a caller
	// that logs throttles inside it).
	OnStep func(Progress)
}

// Larger minibatches are processed in chunks of at most this many examples
// (accumulating the gradient), so that scratch memory stays bounded: the
// CNN's unrolled second convolution takes 0.6 MB per example.
const (
	cnnChunk   = 64
	denseChunk = 512
)

// NewModel builds the model s describes.
func NewModel(s Spec) (*Model, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	in := s.InputDim()
	var ls []layer
	switch s.Arch {
	case ArchLogReg:
		ls = []layer{newDense("fc", in, s.Classes, false)}
	case Arch2NN:
		ls = []layer{
			newDense("fc1", in, 200, true), newReLU(200),
			newDense("fc2", 200, 200, true), newReLU(200),
			newDense("fc3", 200, s.Classes, false),
		}
	case ArchCNN:
		h, w := s.Height, s.Width
		ls = []layer{
			newConv("conv1", h, w, s.Channels, 32, 5, true), newReLU(h * w * 32), newMaxPool(h, w, 32, true),
			newConv("conv2", h/2, w/2, 32, 64, 5, false), newReLU(h / 2 * w / 2 * 64), newMaxPool(h/2, w/2, 64, false),
			newDense("fc1", h/4*w/4*64, 512, true), newReLU(512),
			newDense("fc2", 512, s.Classes, false),
		}
	}
	m := &Model{spec: s, layers: ls, inDim: in, loss: softmaxXent{classes: s.Classes}, chunk: denseChunk}
	if s.Arch == ArchCNN {
		m.chunk = cnnChunk
	}
	for _, l := range ls {
		for _, t := range l.tensors() {
			t.Offset = m.nparams
			m.nparams += t.Len
			m.tensors = append(m.tensors, t)
		}
	}
	m.grad = make([]float32, m.nparams)
	return m, nil
}

// Spec returns the specification the model was built from.
func (m *Model) Spec() Spec { return m.spec }

// NumParams is the length of the flat parameter vector.
func (m *Model) NumParams() int { return m.nparams }

// Tensors describes the layout of the flat parameter vector, in order.
func (m *Model) Tensors() []Tensor {
	out := make([]Tensor, len(m.tensors))
	for i, t := range m.tensors {
		t.Shape = append([]int(nil), t.Shape...)
		out[i] = t
	}
	return out
}

// Init fills params with fresh initial values drawn from a PCG generator
// seeded with seed: He-uniform weights for layers followed by ReLU,
// Glorot-uniform for the output layer, zero biases. The same seed gives the
// same parameters. Init panics if len(params) != NumParams(), a programming
// error.
func (m *Model) Init(params []float32, seed uint64) {
	if len(params) != m.nparams {
		panic(fmt.Sprintf("train: Init: %d parameters, model %s has %d", len(params), m.spec.Arch, m.nparams))
	}
	rng := rand.New(rand.NewPCG(seed, 0x676c6f62616c6272)) // "globalbr"
	m.bind(params)
	for _, l := range m.layers {
		l.initParams(rng)
	}
}

// FLOPsPerExample is the nominal number of floating-point operations
// (2 per multiply-add of the matrix products, forward and backward, without
// the input gradient of the first layer) that training spends on one
// example. Element-wise work and the savings gonum's kernels make on zero
// operands are not counted.
func (m *Model) FLOPsPerExample() float64 {
	var macs float64
	for i, l := range m.layers {
		fwd, bwdW, bwdX := l.macs()
		macs += fwd + bwdW
		if i > 0 {
			macs += bwdX
		}
	}
	return 2 * macs
}

// bind points the layers' parameter and gradient views into params and m.grad.
func (m *Model) bind(params []float32) {
	if len(m.bound) == len(params) && len(params) > 0 && &m.bound[0] == &params[0] {
		return
	}
	off := 0
	for _, l := range m.layers {
		n := l.numParams()
		l.bind(params[off:off+n:off+n], m.grad[off:off+n:off+n])
		off += n
	}
	m.bound = params
}

// ensure sizes the scratch buffers for minibatches of up to b examples.
func (m *Model) ensure(b int) {
	if b*m.inDim > len(m.x) {
		m.x = make([]float32, b*m.inDim)
		m.y = make([]uint8, b)
	}
	m.ensureLayers(min(b, m.chunk))
}

// ensureLayers sizes the layers' scratch buffers for passes over up to c
// examples.
func (m *Model) ensureLayers(c int) {
	if c <= m.lbatch {
		return
	}
	m.lbatch = c
	for _, l := range m.layers {
		l.alloc(c)
	}
	m.loss.alloc(c)
}

// forward runs the layers over the b examples in x and returns the logits.
func (m *Model) forward(x []float32, b int) []float32 {
	for _, l := range m.layers {
		x = l.forward(x, b)
	}
	return x
}

// lossGrad runs forward and backward passes over the b examples in x with
// labels y, in chunks of at most m.chunk examples, leaves the gradient of
// the mean cross-entropy in m.grad and returns the sum (not the mean) of
// the per-example losses. The parameters must have been bound and the
// scratch buffers sized by ensure(b).
func (m *Model) lossGrad(x []float32, y []uint8, b int) float64 {
	var sum float64
	for s := 0; s < b; s += m.chunk {
		c := min(m.chunk, b-s)
		logits := m.forward(x[s*m.inDim:(s+c)*m.inDim], c)
		sum += m.loss.forwardBackward(logits, y[s:s+c], c, b)
		d := m.loss.grad[:c*m.spec.Classes]
		for i := len(m.layers) - 1; i >= 0; i-- {
			d = m.layers[i].backward(d, c, i > 0, s > 0)
		}
	}
	return sum
}

// checkParams validates a parameter vector's length.
func (m *Model) checkParams(what string, p []float32) error {
	if len(p) != m.nparams {
		return fmt.Errorf("train: %s: %d values, model %s has %d parameters", what, len(p), m.spec.Arch, m.nparams)
	}
	return nil
}

// checkData validates that d is consistent and matches the model's input
// and output shape.
func (m *Model) checkData(d *Dataset) error {
	if d == nil {
		return errors.New("train: nil data set")
	}
	if err := d.Validate(); err != nil {
		return err
	}
	s := m.spec
	if d.Dim != s.InputDim() {
		return fmt.Errorf("train: data set %q: dimension %d, model %s expects %dx%dx%d = %d", d.Name, d.Dim, s.Arch, s.Height, s.Width, s.Channels, s.InputDim())
	}
	if s.Arch == ArchCNN && (d.Height != s.Height || d.Width != s.Width || d.Channels != s.Channels) {
		return fmt.Errorf("train: data set %q: shape %dx%dx%d, model cnn expects %dx%dx%d", d.Name, d.Height, d.Width, d.Channels, s.Height, s.Width, s.Channels)
	}
	if d.Classes != s.Classes {
		return fmt.Errorf("train: data set %q: %d classes, model %s has %d", d.Name, d.Classes, s.Arch, s.Classes)
	}
	return nil
}
