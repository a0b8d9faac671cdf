package train

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// blobsDataset makes a linearly separable problem: each class is a tight
// cluster around its own random centre in [0,1]^dim.
func blobsDataset(n, h, w, classes int, seed uint64) *Dataset {
	rng := rand.New(rand.NewPCG(seed, 99))
	dim := h * w
	centres := make([][]float32, classes)
	for c := range centres {
		centres[c] = make([]float32, dim)
		for j := range centres[c] {
			centres[c][j] = rng.Float32()
		}
	}
	d := &Dataset{Name: "blobs", N: n, Dim: dim, Height: h, Width: w, Channels: 1, Classes: classes,
		X: make([]float32, n*dim), Y: make([]uint8, n)}
	for i := 0; i < n; i++ {
		c := i % classes
		d.Y[i] = uint8(c)
		for j, v := range centres[c] {
			d.X[i*dim+j] = min(1, max(0, v+float32(0.1*rng.NormFloat64())))
		}
	}
	return d
}

// randomDataset makes n examples of uniform pixels with random labels.
func randomDataset(s Spec, n int, seed uint64) *Dataset {
	rng := rand.New(rand.NewPCG(seed, 5))
	dim := s.InputDim()
	d := &Dataset{Name: "random", N: n, Dim: dim, Height: s.Height, Width: s.Width, Channels: s.Channels,
		Classes: s.Classes, X: make([]float32, n*dim), Y: make([]uint8, n)}
	for i := range d.X {
		d.X[i] = rng.Float32()
	}
	for i := range d.Y {
		d.Y[i] = uint8(rng.IntN(s.Classes))
	}
	return d
}

func allIndices(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

func TestTrainConverges(t *testing.T) {
	d := blobsDataset(400, 4, 5, 4, 1)
	for _, arch := range []string{ArchLogReg, Arch2NN} {
		t.Run(arch, func(t *testing.T) {
			m, err := NewModel(Spec{Arch: arch, Height: 4, Width: 5, Channels: 1, Classes: 4})
			if err != nil {
				t.Fatal(err)
			}
			p := make([]float32, m.NumParams())
			m.Init(p, 1)
			before, err := m.Evaluate(p, d)
			if err != nil {
				t.Fatal(err)
			}
			cfg := SGDConfig{Epochs: 10, BatchSize: 10, LR: 0.1}
			st, err := m.Train(p, nil, d, allIndices(d.N), cfg, rand.New(rand.NewPCG(2, 3)))
			if err != nil {
				t.Fatal(err)
			}
			if st.Examples != 10*400 || st.Steps != 10*40 {
				t.Errorf("stats %+v, want 4000 examples in 400 steps", st)
			}
			after, err := m.Evaluate(p, d)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("before %v; train loss %.4f; after %v", before, st.Loss, after)
			if after.Accuracy < 0.95 {
				t.Errorf("train accuracy %.3f after training, want > 0.95", after.Accuracy)
			}
			if !(after.Loss < before.Loss/2) || math.Abs(st.Loss-after.Loss) > 0.5 {
				t.Errorf("loss %.4f -> %.4f (last epoch %.4f)", before.Loss, after.Loss, st.Loss)
			}
		})
	}
}

func TestTrainCNNLearns(t *testing.T) {
	d := blobsDataset(60, 8, 8, 3, 4)
	s := Spec{Arch: ArchCNN, Height: 8, Width: 8, Channels: 1, Classes: 3}
	m, _ := NewModel(s)
	p := make([]float32, m.NumParams())
	m.Init(p, 1)
	before, _ := m.Evaluate(p, d)
	if _, err := m.Train(p, nil, d, allIndices(d.N), SGDConfig{Epochs: 3, BatchSize: 10, LR: 0.05}, rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
	after, _ := m.Evaluate(p, d)
	t.Logf("before %v; after %v", before, after)
	if after.Accuracy < 0.95 || !(after.Loss < before.Loss) {
		t.Errorf("cnn did not learn a separable problem: %v -> %v", before, after)
	}
}

// trainOnce trains a fresh model from seed and returns the parameters.
func trainOnce(t *testing.T, s Spec, d *Dataset, idx []int, cfg SGDConfig, seed uint64) ([]float32, TrainStats) {
	t.Helper()
	m, err := NewModel(s)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]float32, m.NumParams())
	m.Init(p, 7)
	var global []float32
	if cfg.ProxMu > 0 {
		global = slices.Clone(p)
		for i := range global {
			global[i] += 0.01
		}
	}
	st, err := m.Train(p, global, d, idx, cfg, rand.New(rand.NewPCG(seed, 1)))
	if err != nil {
		t.Fatal(err)
	}
	return p, st
}

func TestTrainDeterministic(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, tc := range []struct {
		s   Spec
		n   int
		cfg SGDConfig
	}{
		// Batch 50 of 28x28 makes gonum's Sgemm split work over goroutines.
		{withArch(mnistShape, Arch2NN), 230, SGDConfig{Epochs: 2, BatchSize: 50, LR: 0.05, ProxMu: 0.1}},
		{Spec{Arch: ArchCNN, Height: 8, Width: 8, Channels: 2, Classes: 4}, 45, SGDConfig{Epochs: 2, BatchSize: 20, LR: 0.05}},
	} {
		t.Run(tc.s.Arch, func(t *testing.T) {
			d := randomDataset(tc.s, tc.n, 3)
			idx := allIndices(d.N)[5:]
			runtime.GOMAXPROCS(1)
			a, sta := trainOnce(t, tc.s, d, idx, tc.cfg, 1)
			runtime.GOMAXPROCS(4)
			b, stb := trainOnce(t, tc.s, d, idx, tc.cfg, 1)
			c, _ := trainOnce(t, tc.s, d, idx, tc.cfg, 2)
			if !slices.Equal(a, b) || sta != stb {
				t.Errorf("same seed gave different results (%+v vs %+v)", sta, stb)
			}
			if slices.Equal(a, c) {
				t.Error("different shuffling seeds gave the same parameters")
			}
		})
	}
}

func TestTrainDoesNotModifyIdx(t *testing.T) {
	d := blobsDataset(30, 2, 2, 2, 1)
	m, _ := NewModel(Spec{Arch: ArchLogReg, Height: 2, Width: 2, Channels: 1, Classes: 2})
	p := make([]float32, m.NumParams())
	idx := allIndices(30)
	if _, err := m.Train(p, nil, d, idx, SGDConfig{Epochs: 1, BatchSize: 7, LR: 0.1}, rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(idx, allIndices(30)) {
		t.Error("Train reordered the caller's idx")
	}
}

func TestTrainProxPullsTowardsGlobal(t *testing.T) {
	d := blobsDataset(100, 3, 3, 3, 2)
	s := Spec{Arch: ArchLogReg, Height: 3, Width: 3, Channels: 1, Classes: 3}
	m, _ := NewModel(s)
	global := make([]float32, m.NumParams())
	m.Init(global, 1)
	dist := func(mu float64) float64 {
		p := slices.Clone(global)
		if _, err := m.Train(p, global, d, allIndices(d.N), SGDConfig{Epochs: 5, BatchSize: 10, LR: 0.1, ProxMu: mu}, rand.New(rand.NewPCG(1, 1))); err != nil {
			t.Fatal(err)
		}
		var s float64
		for i := range p {
			s += math.Pow(float64(p[i]-global[i]), 2)
		}
		return math.Sqrt(s)
	}
	d0, d1 := dist(0), dist(1)
	if !(d1 < d0*0.8) {
		t.Errorf("distance to global: mu=0 %.4f, mu=1 %.4f; want the proximal term to shrink it", d0, d1)
	}
}

func TestTrainErrors(t *testing.T) {
	s := Spec{Arch: Arch2NN, Height: 2, Width: 3, Channels: 1, Classes: 3}
	m, _ := NewModel(s)
	d := blobsDataset(20, 2, 3, 3, 1)
	p := make([]float32, m.NumParams())
	m.Init(p, 1)
	ok := SGDConfig{Epochs: 1, BatchSize: 5, LR: 0.1}
	rng := rand.New(rand.NewPCG(1, 1))
	idx := allIndices(20)
	wrongDim := blobsDataset(20, 3, 3, 3, 1)
	wrongClasses := blobsDataset(20, 2, 3, 4, 1)
	broken := blobsDataset(20, 2, 3, 3, 1)
	broken.X = broken.X[:10]
	cnnModel, _ := NewModel(Spec{Arch: ArchCNN, Height: 4, Width: 4, Channels: 1, Classes: 3})
	cnnParams := make([]float32, cnnModel.NumParams())
	transposed := blobsDataset(20, 4, 4, 3, 1)
	transposed.Height, transposed.Width = 2, 8
	withMu := ok
	withMu.ProxMu = 0.5

	for _, tc := range []struct {
		name   string
		m      *Model
		params []float32
		global []float32
		d      *Dataset
		idx    []int
		cfg    SGDConfig
		rng    *rand.Rand
		want   string
	}{
		{"short params", m, p[1:], nil, d, idx, ok, rng, "parameters"},
		{"nil data", m, p, nil, nil, idx, ok, rng, "nil data set"},
		{"broken data", m, p, nil, broken, idx, ok, rng, "feature values"},
		{"wrong dim", m, p, nil, wrongDim, idx, ok, rng, "dimension"},
		{"wrong classes", m, p, nil, wrongClasses, idx, ok, rng, "classes"},
		{"wrong image shape", cnnModel, cnnParams, nil, transposed, idx, ok, rng, "shape"},
		{"empty idx", m, p, nil, d, nil, ok, rng, "no examples"},
		{"index too large", m, p, nil, d, []int{0, 20}, ok, rng, "out of range"},
		{"negative index", m, p, nil, d, []int{-1}, ok, rng, "out of range"},
		{"zero epochs", m, p, nil, d, idx, SGDConfig{Epochs: 0, BatchSize: 5, LR: 0.1}, rng, "epochs"},
		{"zero batch", m, p, nil, d, idx, SGDConfig{Epochs: 1, BatchSize: 0, LR: 0.1}, rng, "batch size"},
		{"zero lr", m, p, nil, d, idx, SGDConfig{Epochs: 1, BatchSize: 5, LR: 0}, rng, "learning rate"},
		{"NaN lr", m, p, nil, d, idx, SGDConfig{Epochs: 1, BatchSize: 5, LR: math.NaN()}, rng, "learning rate"},
		{"Inf lr", m, p, nil, d, idx, SGDConfig{Epochs: 1, BatchSize: 5, LR: math.Inf(1)}, rng, "learning rate"},
		{"negative mu", m, p, nil, d, idx, SGDConfig{Epochs: 1, BatchSize: 5, LR: 0.1, ProxMu: -1}, rng, "mu"},
		{"NaN mu", m, p, nil, d, idx, SGDConfig{Epochs: 1, BatchSize: 5, LR: 0.1, ProxMu: math.NaN()}, rng, "mu"},
		{"mu without global", m, p, nil, d, idx, withMu, rng, "global"},
		{"mu with short global", m, p, p[:5], d, idx, withMu, rng, "global"},
		{"nil rng", m, p, nil, d, idx, ok, nil, "random source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(tc.params)
			_, err := tc.m.Train(tc.params, tc.global, tc.d, tc.idx, tc.cfg, tc.rng)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
			if !slices.Equal(before, tc.params) {
				t.Error("rejected call modified the parameters")
			}
		})
	}
}

func TestTrainDiverges(t *testing.T) {
	s := Spec{Arch: Arch2NN, Height: 2, Width: 3, Channels: 1, Classes: 3}
	m, _ := NewModel(s)
	d := blobsDataset(50, 2, 3, 3, 1)
	p := make([]float32, m.NumParams())
	m.Init(p, 1)
	_, err := m.Train(p, nil, d, allIndices(50), SGDConfig{Epochs: 5, BatchSize: 5, LR: 1e30}, rand.New(rand.NewPCG(1, 1)))
	if err == nil || !strings.Contains(err.Error(), "diverged") || !strings.Contains(err.Error(), "step") {
		t.Errorf("error %v, want divergence reported with its step", err)
	}

	// Non-finite inputs are caught on the first step.
	d.X[3] = float32(math.Inf(1))
	m.Init(p, 1)
	_, err = m.Train(p, nil, d, allIndices(50), SGDConfig{Epochs: 1, BatchSize: 50, LR: 0.1}, rand.New(rand.NewPCG(1, 1)))
	if err == nil || !strings.Contains(err.Error(), "step 1") {
		t.Errorf("error %v, want divergence at step 1", err)
	}
}

func TestTrainNoAllocs(t *testing.T) {
	s := Spec{Arch: Arch2NN, Height: 4, Width: 4, Channels: 1, Classes: 3}
	m, _ := NewModel(s)
	d := randomDataset(s, 200, 1)
	p := make([]float32, m.NumParams())
	m.Init(p, 1)
	idx := allIndices(d.N)
	rng := rand.New(rand.NewPCG(1, 1))
	cfg := SGDConfig{Epochs: 1, BatchSize: 10, LR: 0.01}
	if _, err := m.Train(p, nil, d, idx, cfg, rng); err != nil {
		t.Fatal(err)
	}
	// Per call, not per step: 20 steps must not allocate 20 times.
	allocs := testing.AllocsPerRun(5, func() {
		if _, err := m.Train(p, nil, d, idx, cfg, rng); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 3 {
		t.Errorf("%v allocations per Train call of 20 steps", allocs)
	}
}

func TestTrainLargeBatchChunked(t *testing.T) {
	// A CNN minibatch of 150 runs in chunks of 64; full-batch training
	// (FedSGD) must work and learn.
	d := blobsDataset(150, 4, 4, 3, 6)
	m, _ := NewModel(Spec{Arch: ArchCNN, Height: 4, Width: 4, Channels: 1, Classes: 3})
	p := make([]float32, m.NumParams())
	m.Init(p, 1)
	before, _ := m.Evaluate(p, d)
	st, err := m.Train(p, nil, d, allIndices(d.N), SGDConfig{Epochs: 5, BatchSize: 1000, LR: 0.1}, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	after, _ := m.Evaluate(p, d)
	if st.Steps != 5 || st.Examples != 750 || !(after.Loss < before.Loss) {
		t.Errorf("stats %+v, loss %.4f -> %.4f", st, before.Loss, after.Loss)
	}
	if m.lbatch > cnnChunk {
		t.Errorf("layer scratch sized for %d examples, want at most %d", m.lbatch, cnnChunk)
	}
}
