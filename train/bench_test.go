package train

import (
	"math/rand/v2"
	"testing"
)

// benchTrain measures training throughput of arch on random data in MNIST
// shape (28x28x1, 10 classes, uniform pixels in [0,1]), one epoch of
// 1000 (CNN: 200) examples per iteration. Besides wall-clock examples/s and
// GFLOP/s it reports examples per second of process CPU time, which stays
// meaningful when other processes share the machine.
func benchTrain(b *testing.B, arch string, batch int) {
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

// BenchmarkTrain2NN_B10 trains the 2NN with minibatches of 10.
func BenchmarkTrain2NN_B10(b *testing.B) { benchTrain(b, Arch2NN, 10) }

// BenchmarkTrain2NN_B50 trains the 2NN with minibatches of 50.
func BenchmarkTrain2NN_B50(b *testing.B) { benchTrain(b, Arch2NN, 50) }

// BenchmarkTrainCNN_B50 trains the CNN with minibatches of 50.
func BenchmarkTrainCNN_B50(b *testing.B) { benchTrain(b, ArchCNN, 50) }
