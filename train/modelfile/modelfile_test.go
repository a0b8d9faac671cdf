package modelfile

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nlpodyssey/safetensors"

	"github.com/globalbrain/globalbrain/train"
)

var specs = []train.Spec{
	{Arch: train.ArchLogReg, Height: 28, Width: 28, Channels: 1, Classes: 10},
	{Arch: train.Arch2NN, Height: 28, Width: 28, Channels: 1, Classes: 10},
	{Arch: train.ArchCNN, Height: 28, Width: 28, Channels: 1, Classes: 10},
}

// weights returns a vector whose values are all distinct: value i is i.
func weights(t *testing.T, s train.Spec) []float32 {
	m, err := train.NewModel(s)
	if err != nil {
		t.Fatal(err)
	}
	w := make([]float32, m.NumParams())
	for i := range w {
		w[i] = float32(i)
	}
	return w
}

func TestRoundTrip(t *testing.T) {
	for _, s := range specs {
		w := weights(t, s)
		b, err := EncodeSafetensors(s, w, map[string]string{"format": "pt"})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "m.safetensors")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadSafetensors(path, s)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, w) {
			t.Errorf("%s: round trip changed the weights", s.Arch)
		}
	}
}

// The files hold PyTorch's layout: each value lands where torch.nn puts
// that weight.
func TestLayoutIsPyTorchs(t *testing.T) {
	s := specs[2] // cnn
	w := weights(t, s)
	b, err := EncodeSafetensors(s, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := safetensors.Deserialize(b)
	if err != nil {
		t.Fatal(err)
	}
	lay, _ := Layout(s)
	off := map[string]int{}
	for _, l := range lay {
		off[l.Name] = l.Offset
	}
	at := func(name string, i int) float32 {
		tv, _ := st.Tensor(name)
		return math.Float32frombits(binary.LittleEndian.Uint32(tv.Data()[4*i:]))
	}
	// conv2: file [64, 32, 5, 5], flat [64, 5, 5, 32].
	o, ci, kh, kw := 3, 7, 1, 4
	if got, want := at("conv2.weight", ((o*32+ci)*5+kh)*5+kw), w[off["conv2.weight"]+((o*5+kh)*5+kw)*32+ci]; got != want {
		t.Errorf("conv2.weight[%d,%d,%d,%d] = %v, want %v", o, ci, kh, kw, got, want)
	}
	// fc1: file [512, 64*7*7] over (c, h, w), flat [7*7*64, 512] over (h, w, c).
	o, c, h, x := 100, 9, 2, 5
	if got, want := at("fc1.weight", o*3136+c*49+h*7+x), w[off["fc1.weight"]+((h*7+x)*64+c)*512+o]; got != want {
		t.Errorf("fc1.weight[%d, (%d,%d,%d)] = %v, want %v", o, c, h, x, got, want)
	}
	// fc2: file [10, 512], flat [512, 10].
	if got, want := at("fc2.weight", 7*512+300), w[off["fc2.weight"]+300*10+7]; got != want {
		t.Errorf("fc2.weight[7,300] = %v, want %v", got, want)
	}
	want := map[string][]int{"conv1.weight": {32, 1, 5, 5}, "conv1.bias": {32}, "conv2.weight": {64, 32, 5, 5}, "conv2.bias": {64},
		"fc1.weight": {512, 3136}, "fc1.bias": {512}, "fc2.weight": {10, 512}, "fc2.bias": {10}}
	for _, l := range lay {
		if !slices.Equal(l.Shape, want[l.Name]) {
			t.Errorf("%s shape %v, want %v", l.Name, l.Shape, want[l.Name])
		}
	}
}

// tensor builds a view of n float32 values.
func tensor(t *testing.T, dt safetensors.DType, shape []uint64, vals []float32) safetensors.TensorView {
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	data := make([]byte, n*int(dt.Size()))
	if dt == safetensors.F32 {
		for i := range n {
			v := float32(0.01)
			if i < len(vals) {
				v = vals[i]
			}
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
		}
	}
	tv, err := safetensors.NewTensorView(dt, shape, data)
	if err != nil {
		t.Fatal(err)
	}
	return tv
}

// Bad files are errors that name the tensor and the problem.
func TestBadFiles(t *testing.T) {
	s := specs[0] // logreg: fc.weight [10, 784], fc.bias [10]
	good := func() map[string]safetensors.TensorView {
		return map[string]safetensors.TensorView{
			"fc.weight": tensor(t, safetensors.F32, []uint64{10, 784}, nil),
			"fc.bias":   tensor(t, safetensors.F32, []uint64{10}, nil),
		}
	}
	cases := []struct {
		name string
		edit func(map[string]safetensors.TensorView)
		want string
	}{
		{"wrong shape", func(m map[string]safetensors.TensorView) {
			m["fc.weight"] = tensor(t, safetensors.F32, []uint64{784, 10}, nil)
		}, "tensor fc.weight has shape [784 10], want [10 784]"},
		{"wrong dtype", func(m map[string]safetensors.TensorView) {
			m["fc.bias"] = tensor(t, safetensors.F64, []uint64{10}, nil)
		}, "tensor fc.bias is F64, want F32"},
		{"NaN", func(m map[string]safetensors.TensorView) {
			m["fc.bias"] = tensor(t, safetensors.F32, []uint64{10}, []float32{0, 0, 0, float32(math.NaN())})
		}, "tensor fc.bias: value 3 (of 10) is NaN, want finite"},
		{"Inf", func(m map[string]safetensors.TensorView) {
			m["fc.bias"] = tensor(t, safetensors.F32, []uint64{10}, []float32{float32(math.Inf(-1))})
		}, "tensor fc.bias: value 0 (of 10) is -Inf"},
		{"missing", func(m map[string]safetensors.TensorView) { delete(m, "fc.bias") }, "tensor fc.bias missing"},
		{"extra", func(m map[string]safetensors.TensorView) {
			m["fc.scale"] = tensor(t, safetensors.F32, []uint64{10}, nil)
		}, "tensors fc.scale are not parameters of model logreg"},
	}
	for _, c := range cases {
		m := good()
		c.edit(m)
		b, err := safetensors.Serialize(m, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = DecodeSafetensors(s, b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	b, _ := safetensors.Serialize(good(), nil)
	if _, err := DecodeSafetensors(s, b); err != nil {
		t.Fatalf("the good file: %v", err)
	}
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"truncated", b[:len(b)-3], "safetensors: metadata incomplete buffer"},
		{"empty", nil, "safetensors: header too small"},
		{"huge header", binary.LittleEndian.AppendUint64(nil, 1<<40), "header of 1099511627776 bytes"},
		{"not JSON", append(binary.LittleEndian.AppendUint64(nil, 4), "{{{{"...), "safetensors: invalid header"},
	} {
		if _, err := DecodeSafetensors(s, c.b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	// A file far larger than the model's is refused before it is read.
	path := filepath.Join(t.TempDir(), "big.safetensors")
	if err := os.WriteFile(path, make([]byte, 8+1<<20+4*7850+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSafetensors(path, s); err == nil || !strings.Contains(err.Error(), "more than a logreg model's file") {
		t.Errorf("oversized file: %v", err)
	}
}

// The .npz archive holds one .npy per tensor with NumPy's header.
func TestNPZ(t *testing.T) {
	s := specs[1]
	w := weights(t, s)
	var buf bytes.Buffer
	if err := WriteNPZ(&buf, s, w); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if f.Name != "fc1.weight.npy" {
			continue
		}
		r, _ := f.Open()
		b, _ := io.ReadAll(r)
		hl := int(binary.LittleEndian.Uint16(b[8:]))
		header := string(b[10 : 10+hl])
		if !strings.HasPrefix(string(b), "\x93NUMPY\x01\x00") || (10+hl)%64 != 0 ||
			!strings.HasPrefix(header, "{'descr': '<f4', 'fortran_order': False, 'shape': (200, 784), }") || !strings.HasSuffix(header, "\n") {
			t.Errorf("npy header %q", header)
		}
		if len(b) != 10+hl+4*784*200 {
			t.Errorf("fc1.weight.npy: %d bytes", len(b))
		}
		// fc1.weight[1][0] is the flat vector's [0][1], value 1.
		if v := math.Float32frombits(binary.LittleEndian.Uint32(b[10+hl+4*784:])); v != 1 {
			t.Errorf("fc1.weight[1,0] = %v, want 1", v)
		}
	}
	if want := []string{"fc1.weight.npy", "fc1.bias.npy", "fc2.weight.npy", "fc2.bias.npy", "fc3.weight.npy", "fc3.bias.npy"}; !slices.Equal(names, want) {
		t.Errorf("npz holds %v, want %v", names, want)
	}
	if h := npyHeader(nil, []int{10}); !strings.Contains(string(h), "'shape': (10,), }") {
		t.Errorf("1-d header %q", h)
	}
}
