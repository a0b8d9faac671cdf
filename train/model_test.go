package train

import (
	"math"
	"slices"
	"strings"
	"testing"
)

var mnistShape = Spec{Height: 28, Width: 28, Channels: 1, Classes: 10}

func withArch(s Spec, arch string) Spec { s.Arch = arch; return s }

func TestNumParams(t *testing.T) {
	for _, tc := range []struct {
		arch string
		want int
	}{{ArchLogReg, 7850}, {Arch2NN, 199210}, {ArchCNN, 1663370}} {
		arch, want := tc.arch, tc.want
		m, err := NewModel(withArch(mnistShape, arch))
		if err != nil {
			t.Fatal(err)
		}
		if got := m.NumParams(); got != want {
			t.Errorf("%s: %d parameters, want %d", arch, got, want)
		}
		// The tensors tile the vector.
		off := 0
		for _, tn := range m.Tensors() {
			n := 1
			for _, d := range tn.Shape {
				n *= d
			}
			if tn.Offset != off || tn.Len != n {
				t.Errorf("%s: tensor %s at %d len %d shape %v, want offset %d len %d", arch, tn.Name, tn.Offset, tn.Len, tn.Shape, off, n)
			}
			off += tn.Len
		}
		if off != want {
			t.Errorf("%s: tensors cover %d values, want %d", arch, off, want)
		}
		if m.Spec().Arch != arch {
			t.Errorf("Spec().Arch = %q", m.Spec().Arch)
		}
	}
}

func TestFLOPsPerExample(t *testing.T) {
	m, err := NewModel(withArch(mnistShape, Arch2NN))
	if err != nil {
		t.Fatal(err)
	}
	// forward 784*200+200*200+200*10, weight gradients the same, input
	// gradients of the second and third layers only.
	fwd := 784.0*200 + 200*200 + 200*10
	want := 2 * (2*fwd + 200*200 + 200*10)
	if got := m.FLOPsPerExample(); got != want {
		t.Errorf("2nn FLOPs %v, want %v", got, want)
	}
	c, _ := NewModel(withArch(mnistShape, ArchCNN))
	if got := c.FLOPsPerExample(); got < 60e6 || got > 80e6 {
		t.Errorf("cnn FLOPs %v, want about 72e6", got)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		s    Spec
		want string
	}{
		{withArch(mnistShape, "resnet"), "logreg, 2nn, cnn"},
		{withArch(mnistShape, ""), "unknown model architecture"},
		{Spec{Arch: ArchCNN, Height: 30, Width: 28, Channels: 1, Classes: 10}, "divisible by 4"},
		{Spec{Arch: ArchCNN, Height: 28, Width: 26, Channels: 1, Classes: 10}, "divisible by 4"},
		{Spec{Arch: Arch2NN, Height: 0, Width: 28, Channels: 1, Classes: 10}, "positive"},
		{Spec{Arch: ArchLogReg, Height: 28, Width: 28, Channels: 1, Classes: 1}, "classes"},
		{Spec{Arch: ArchLogReg, Height: 28, Width: 28, Channels: 1, Classes: 257}, "classes"},
		{Spec{Arch: ArchLogReg, Height: 1 << 20, Width: 1 << 20, Channels: 1, Classes: 2}, "too large"},
	} {
		err := tc.s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one mentioning %q", tc.s, err, tc.want)
		}
		if _, err := NewModel(tc.s); err == nil {
			t.Errorf("NewModel(%+v) succeeded", tc.s)
		}
	}
	for _, arch := range Archs {
		if err := withArch(mnistShape, arch).Validate(); err != nil {
			t.Errorf("%s: %v", arch, err)
		}
	}
	if err := (Spec{Arch: Arch2NN, Height: 1, Width: 54, Channels: 1, Classes: 2}).Validate(); err != nil {
		t.Errorf("tabular 2nn: %v", err)
	}
}

func TestInit(t *testing.T) {
	for _, arch := range Archs {
		m, _ := NewModel(withArch(mnistShape, arch))
		a := make([]float32, m.NumParams())
		b := make([]float32, m.NumParams())
		c := make([]float32, m.NumParams())
		m.Init(a, 42)
		m.Init(b, 42)
		m.Init(c, 43)
		if !slices.Equal(a, b) {
			t.Errorf("%s: same seed, different parameters", arch)
		}
		if slices.Equal(a, c) {
			t.Errorf("%s: different seeds, same parameters", arch)
		}
		for _, tn := range m.Tensors() {
			v := a[tn.Offset : tn.Offset+tn.Len]
			if strings.HasSuffix(tn.Name, ".bias") {
				for _, x := range v {
					if x != 0 {
						t.Fatalf("%s: %s not zero", arch, tn.Name)
					}
				}
				continue
			}
			fanOut := tn.Shape[len(tn.Shape)-1] // dense [in, out]
			if len(tn.Shape) == 4 {
				fanOut = tn.Shape[0] // convolution [out, kh, kw, in]
			}
			fanIn := tn.Len / fanOut
			limit := math.Sqrt(6 / float64(fanIn)) // He
			if tn.Name == m.tensors[len(m.tensors)-2].Name {
				limit = math.Sqrt(6 / float64(fanIn+fanOut)) // Glorot on the output layer
			}
			var sum2, maxAbs float64
			for _, x := range v {
				sum2 += float64(x) * float64(x)
				maxAbs = max(maxAbs, math.Abs(float64(x)))
			}
			// Uniform on [-l, l]: variance l^2/3.
			std, wantStd := math.Sqrt(sum2/float64(len(v))), limit/math.Sqrt(3)
			if maxAbs > limit || math.Abs(std-wantStd) > 0.1*wantStd {
				t.Errorf("%s: %s: max |w| %.4f (limit %.4f), std %.4f (want %.4f)", arch, tn.Name, maxAbs, limit, std, wantStd)
			}
		}
	}
}

func TestInitPanicsOnWrongLength(t *testing.T) {
	m, _ := NewModel(withArch(mnistShape, ArchLogReg))
	defer func() {
		if recover() == nil {
			t.Error("Init with a short vector did not panic")
		}
	}()
	m.Init(make([]float32, 10), 1)
}
