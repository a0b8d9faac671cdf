package train

import (
	"math/rand/v2"
	"testing"
)

// mnistNonzero is the fraction of non-zero pixels in MNIST's training set.
const mnistNonzero = 0.19

// benchTrain measures training throughput of arch on random data in MNIST
// shape (28x28x1, 10 classes): uniform pixels in [0,1] with probability
// nonzero, else 0. Each iteration is one epoch over 1000 examples (CNN:
// 200). Besides wall-clock examples/s and GFLOP/s (nominal: from
// FLOPsPerExample, so zero operands the kernels skip still count) it
// reports examples per second of process CPU time, which stays meaningful
// when other processes share the machine.
func benchTrain(b *testing.B, arch string, batch int, nonzero float64) {
	s := Spec{Arch: arch, Height: 28, Width: 28, Channels: 1, Classes: 10}
	m, err := NewModel(s)
	if err != nil {
		b.Fatal(err)
	}
	n := 1000
	if arch == ArchCNN {
		n = 200
	}
	d := randomDataset(s, n, 1)
	if nonzero < 1 {
		rng := rand.New(rand.NewPCG(2, 2))
		for i := range d.X {
			if rng.Float64() >= nonzero {
				d.X[i] = 0
			}
		}
	}
	p := make([]float32, m.NumParams())
	m.Init(p, 1)
	idx := allIndices(n)
	rng := rand.New(rand.NewPCG(1, 2))
	cfg := SGDConfig{Epochs: 1, BatchSize: batch, LR: 0.01}
	if _, err := m.Train(p, nil, d, idx, cfg, rng); err != nil { // warm up, allocate
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPUSeconds()
	for b.Loop() {
		if _, err := m.Train(p, nil, d, idx, cfg, rng); err != nil {
			b.Fatal(err)
		}
	}
	cpu = processCPUSeconds() - cpu
	sec := b.Elapsed().Seconds()
	ex := float64(b.N) * float64(n)
	b.ReportMetric(ex/sec, "examples/s")
	b.ReportMetric(ex*m.FLOPsPerExample()/sec/1e9, "GFLOP/s")
	if cpu > 0 {
		b.ReportMetric(ex/cpu, "examples/cpu-s")
	}
}

// BenchmarkTrain2NN_B10 trains the 2NN with minibatches of 10 on dense
// random pixels.
func BenchmarkTrain2NN_B10(b *testing.B) { benchTrain(b, Arch2NN, 10, 1) }

// BenchmarkTrain2NN_B50 trains the 2NN with minibatches of 50 on dense
// random pixels.
func BenchmarkTrain2NN_B50(b *testing.B) { benchTrain(b, Arch2NN, 50, 1) }

// BenchmarkTrainCNN_B50 trains the CNN with minibatches of 50 on dense
// random pixels.
func BenchmarkTrainCNN_B50(b *testing.B) { benchTrain(b, ArchCNN, 50, 1) }

// BenchmarkTrain2NN_B10_Sparse is BenchmarkTrain2NN_B10 with MNIST's
// fraction of non-zero pixels, whose zeros the kernels skip.
func BenchmarkTrain2NN_B10_Sparse(b *testing.B) { benchTrain(b, Arch2NN, 10, mnistNonzero) }

// BenchmarkTrain2NN_B50_Sparse is BenchmarkTrain2NN_B50 with MNIST's
// fraction of non-zero pixels.
func BenchmarkTrain2NN_B50_Sparse(b *testing.B) { benchTrain(b, Arch2NN, 50, mnistNonzero) }

// BenchmarkTrainCNN_B50_Sparse is BenchmarkTrainCNN_B50 with MNIST's
// fraction of non-zero pixels.
func BenchmarkTrainCNN_B50_Sparse(b *testing.B) { benchTrain(b, ArchCNN, 50, mnistNonzero) }

// BenchmarkEvaluateCNN measures the batched forward pass of Evaluate.
func BenchmarkEvaluateCNN(b *testing.B) {
	s := Spec{Arch: ArchCNN, Height: 28, Width: 28, Channels: 1, Classes: 10}
	m, _ := NewModel(s)
	d := randomDataset(s, 500, 1)
	p := make([]float32, m.NumParams())
	m.Init(p, 1)
	for b.Loop() {
		if _, err := m.Evaluate(p, d); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*float64(d.N)/b.Elapsed().Seconds(), "examples/s")
}
