package modelfile

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/nlpodyssey/safetensors"

	"github.com/globalbrain/globalbrain/train"
)

// maxHeader bounds the JSON header of a safetensors file this package
// reads: the header of a model of this package's architectures takes a
// few hundred bytes, metadata included.
const maxHeader = 1 << 20

// EncodeSafetensors writes weights, the flat parameter vector of spec's
// model, as a safetensors file: one float32 tensor per parameter, named
// and shaped as Layout says, with meta as the file's __metadata__.
func EncodeSafetensors(spec train.Spec, weights []float32, meta map[string]string) ([]byte, error) {
	lay, err := checkWeights(spec, weights)
	if err != nil {
		return nil, err
	}
	views := make(map[string]safetensors.TensorView, len(lay))
	for _, t := range lay {
		vals := make([]float32, t.Len)
		t.toFile(vals, weights[t.Offset:t.Offset+t.Len])
		data := make([]byte, 4*t.Len)
		for i, v := range vals {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
		}
		shape := make([]uint64, len(t.Shape))
		for i, d := range t.Shape {
			shape[i] = uint64(d)
		}
		tv, err := safetensors.NewTensorView(safetensors.F32, shape, data)
		if err != nil {
			return nil, fmt.Errorf("modelfile: %s: %w", t.Name, err)
		}
		views[t.Name] = tv
	}
	return safetensors.Serialize(views, meta)
}

// ReadSafetensors reads the safetensors file at path as the flat parameter
// vector of spec's model; see DecodeSafetensors. A file larger than such a
// model's file can be is refused before it is read.
func ReadSafetensors(path string, spec train.Spec) ([]float32, error) {
	lay, err := Layout(spec)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("modelfile: %w", err)
	}
	defer f.Close()
	limit := int64(8+maxHeader) + 4*int64(numParams(lay))
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("modelfile: %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("modelfile: %s: larger than %d bytes, more than a %s model's file", path, limit, spec.Arch)
	}
	w, err := DecodeSafetensors(spec, b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return w, nil
}

// DecodeSafetensors checks that b is a safetensors file of spec's model,
// exactly the tensors of Layout by name, float32, of their shapes, every
// value finite, and returns its values as the flat parameter vector.
// Every problem is an error that names the tensor and what was wrong.
func DecodeSafetensors(spec train.Spec, b []byte) ([]float32, error) {
	lay, err := Layout(spec)
	if err != nil {
		return nil, err
	}
	if len(b) >= 8 {
		if n := binary.LittleEndian.Uint64(b); n > maxHeader {
			return nil, fmt.Errorf("safetensors: header of %d bytes, at most %d", n, maxHeader)
		}
	}
	st, err := safetensors.Deserialize(b)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	want := map[string]bool{}
	for _, t := range lay {
		want[t.Name] = true
	}
	var extra []string
	for _, name := range st.Names() {
		if !want[name] {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return nil, fmt.Errorf("safetensors: tensors %s are not parameters of model %s (want %s)", strings.Join(extra, ", "), spec.Arch, names(lay))
	}
	weights := make([]float32, numParams(lay))
	vals := make([]float32, 0)
	for _, t := range lay {
		tv, ok := st.Tensor(t.Name)
		if !ok {
			return nil, fmt.Errorf("safetensors: tensor %s missing (model %s has %s)", t.Name, spec.Arch, names(lay))
		}
		if tv.DType() != safetensors.F32 {
			return nil, fmt.Errorf("safetensors: tensor %s is %s, want F32 (float32)", t.Name, tv.DType())
		}
		if !sameShape(tv.Shape(), t.Shape) {
			return nil, fmt.Errorf("safetensors: tensor %s has shape %v, want %v", t.Name, tv.Shape(), t.Shape)
		}
		data := tv.Data()
		vals = slices.Grow(vals[:0], t.Len)[:t.Len]
		for i := range vals {
			v := math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("safetensors: tensor %s: value %d (of %d) is %v, want finite", t.Name, i, t.Len, v)
			}
			vals[i] = v
		}
		t.fromFile(weights[t.Offset:t.Offset+t.Len], vals)
	}
	return weights, nil
}

func checkWeights(spec train.Spec, weights []float32) ([]Tensor, error) {
	lay, err := Layout(spec)
	if err != nil {
		return nil, err
	}
	if n := numParams(lay); len(weights) != n {
		return nil, fmt.Errorf("modelfile: %d weights, model %s has %d parameters", len(weights), spec.Arch, n)
	}
	return lay, nil
}

func numParams(lay []Tensor) int {
	n := 0
	for _, t := range lay {
		n += t.Len
	}
	return n
}

func names(lay []Tensor) string {
	s := make([]string, len(lay))
	for i, t := range lay {
		s[i] = t.Name
	}
	return strings.Join(s, ", ")
}

func sameShape(got []uint64, want []int) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != uint64(want[i]) {
			return false
		}
	}
	return true
}
