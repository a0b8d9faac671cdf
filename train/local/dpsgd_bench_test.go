package local

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/privacy/dp"
	"github.com/globalbrain/globalbrain/train"
)

// benchDPSGD times, in each iteration, one epoch of plain SGD (Update,
// minibatches of 64) and one of DP-SGD (UpdateDPSGD, expected batch 64)
// over the same n random MNIST-shaped examples, and reports both per
// epoch and their ratio: the cost of per-example gradients, clipping and
// noise.
func benchDPSGD(b *testing.B, arch string, n int) {
	spec := train.Spec{Arch: arch, Height: 28, Width: 28, Channels: 1, Classes: 10}
	rng := rand.New(rand.NewPCG(1, 1))
	d := &train.Dataset{Name: "random", N: n, Dim: 784, Height: 28, Width: 28, Channels: 1, Classes: 10,
		X: make([]float32, n*784), Y: make([]uint8, n)}
	for i := range d.X {
		if rng.Float64() < 0.19 { // MNIST's fraction of non-zero pixels
			d.X[i] = rng.Float32()
		}
	}
	for i := range d.Y {
		d.Y[i] = uint8(rng.IntN(10))
	}
	g, err := Genesis(spec, 1)
	if err != nil {
		b.Fatal(err)
	}
	model, err := train.NewModel(spec)
	if err != nil {
		b.Fatal(err)
	}
	id := identity.Derive(1, 0).ID
	part := allIndices(n)
	tc := fedavg.TrainConfig{Epochs: 1, BatchSize: 64, LR: 0.01}
	p := dp.DPSGD{ExampleClip: 1, Z: 1, BatchSize: 64}
	var plain, private time.Duration
	for r := uint64(0); b.Loop(); r++ {
		start := time.Now()
		if _, _, err := Update(model, g, d, part, id, tc, 1, r, 0); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, _, err := UpdateDPSGD(model, g, d, part, id, tc, p, DPRand(nil, 1, id, r), r, 0); err != nil {
			b.Fatal(err)
		}
		plain += mid.Sub(start)
		private += time.Since(mid)
	}
	b.ReportMetric(plain.Seconds()*1e3/float64(b.N), "sgd-ms/epoch")
	b.ReportMetric(private.Seconds()*1e3/float64(b.N), "dpsgd-ms/epoch")
	b.ReportMetric(private.Seconds()/plain.Seconds(), "slowdown")
}

// BenchmarkDPSGDLogReg: logistic regression, 1,000 examples.
func BenchmarkDPSGDLogReg(b *testing.B) { benchDPSGD(b, train.ArchLogReg, 1000) }

// BenchmarkDPSGD2NN: the 2NN, 1,000 examples.
func BenchmarkDPSGD2NN(b *testing.B) { benchDPSGD(b, train.Arch2NN, 1000) }

// BenchmarkDPSGDCNN: the CNN, 128 examples.
func BenchmarkDPSGDCNN(b *testing.B) { benchDPSGD(b, train.ArchCNN, 128) }
