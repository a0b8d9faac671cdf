package modelfile

import (
	"fmt"
	"slices"

	"github.com/globalbrain/globalbrain/train"
)

// Tensor is one parameter tensor as the files hold it: its name, its
// shape in PyTorch's layout, and where its values live in the flat
// parameter vector and in which order.
type Tensor struct {
	// Name is the parameter's name in the model spec and in PyTorch's
	// state_dict ("fc1.weight", "conv2.bias").
	Name string
	// Shape is the tensor's shape in the file (PyTorch's layout).
	Shape []int
	// Offset and Len locate the values in the flat vector.
	Offset, Len int

	// view is the flat vector's slice reshaped so that permuting its axes
	// by perm gives Shape's order (Shape may merge axes of the result).
	view, perm []int
}

// Layout returns the tensors of spec's model in the files' layout, in the
// order of the flat parameter vector.
func Layout(spec train.Spec) ([]Tensor, error) {
	m, err := train.NewModel(spec)
	if err != nil {
		return nil, err
	}
	var out []Tensor
	for _, t := range m.Tensors() {
		ft := Tensor{Name: t.Name, Offset: t.Offset, Len: t.Len, view: t.Shape, perm: identity(len(t.Shape)), Shape: t.Shape}
		switch {
		case len(t.Shape) == 1: // a bias
		case len(t.Shape) == 4: // conv kernel [out, kh, kw, in] -> [out, in, kh, kw]
			ft.perm = []int{0, 3, 1, 2}
			ft.Shape = permuted(t.Shape, ft.perm)
		case spec.Arch == train.ArchCNN && t.Name == "fc1.weight":
			// The dense layer after the last pool reads the feature map
			// channel-last, (h, w, c); PyTorch flattens it (c, h, w).
			h, w := spec.Height/4, spec.Width/4
			c := t.Shape[0] / (h * w)
			if c*h*w != t.Shape[0] {
				return nil, fmt.Errorf("modelfile: %s: %d inputs are not a %dx%d feature map", t.Name, t.Shape[0], h, w)
			}
			ft.view = []int{h, w, c, t.Shape[1]}
			ft.perm = []int{3, 2, 0, 1}
			ft.Shape = []int{t.Shape[1], t.Shape[0]}
		case len(t.Shape) == 2: // dense [in, out] -> nn.Linear's [out, in]
			ft.perm = []int{1, 0}
			ft.Shape = permuted(t.Shape, ft.perm)
		default:
			return nil, fmt.Errorf("modelfile: %s: shape %v has no file layout", t.Name, t.Shape)
		}
		ft.Shape = slices.Clone(ft.Shape)
		out = append(out, ft)
	}
	return out, nil
}

func identity(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	return p
}

func permuted(shape, perm []int) []int {
	out := make([]int, len(perm))
	for i, p := range perm {
		out[i] = shape[p]
	}
	return out
}

// strides returns the row-major strides of shape.
func strides(shape []int) []int {
	s := make([]int, len(shape))
	acc := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = acc
		acc *= shape[i]
	}
	return s
}

// toFile writes t's values, src in the flat vector's order, into dst
// (len t.Len) in the file's order.
func (t Tensor) toFile(dst, src []float32) { t.walk(func(file, flat int) { dst[file] = src[flat] }) }

// fromFile writes t's values, src in the file's order, into dst in the
// flat vector's order.
func (t Tensor) fromFile(dst, src []float32) { t.walk(func(file, flat int) { dst[flat] = src[file] }) }

// walk calls f with every (file index, flat index) pair of t.
func (t Tensor) walk(f func(file, flat int)) {
	vs := strides(t.view)
	out := permuted(t.view, t.perm)
	// in[i] is the flat stride of the file's axis i.
	in := make([]int, len(out))
	for i, p := range t.perm {
		in[i] = vs[p]
	}
	idx := make([]int, len(out))
	flat := 0
	for file := 0; file < t.Len; file++ {
		f(file, flat)
		for a := len(out) - 1; a >= 0; a-- {
			idx[a]++
			flat += in[a]
			if idx[a] < out[a] {
				break
			}
			flat -= in[a] * out[a]
			idx[a] = 0
		}
	}
}
