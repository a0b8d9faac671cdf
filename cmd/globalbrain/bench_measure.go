package main

import (
	"math/rand/v2"
	"slices"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/train"
)

// memcopyGBs measures copy() of n float32: bytes copied per second.
func memcopyGBs(n int) float64 {
	src, dst := make([]float32, n), make([]float32, n)
	for i := range src {
		src[i] = float32(i)
	}
	copy(dst, src) // fault the pages in
	const reps = 5
	t := time.Now()
	for range reps {
		copy(dst, src)
	}
	return float64(reps*n*4) / time.Since(t).Seconds() / 1e9
}

// aggregateGBs measures FedAvg over k updates of n parameters: update bytes
// read per second, median of passes.
func aggregateGBs(n, k, passes int) (float64, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	g := fedavg.NewGlobal(make([]float32, n))
	ups := make([]fedavg.Update, k)
	for i := range ups {
		d := make([]float32, n)
		for j := range d {
			d[j] = float32(rng.NormFloat64())
		}
		ups[i] = fedavg.Update{Peer: identity.Derive(1, i).ID, Delta: d, Examples: int64(100 + i)}
	}
	s, err := fedavg.New(fedavg.Config{Strategy: "fedavg", Train: fedavg.TrainConfig{Epochs: 1, BatchSize: 1, LR: 0.1}, ServerLR: 1})
	if err != nil {
		return 0, err
	}
	xs := make([]float64, passes)
	for p := range xs {
		t := time.Now()
		if _, err := s.Aggregate(1, g, ups); err != nil {
			return 0, err
		}
		xs[p] = float64(n*k*4) / time.Since(t).Seconds() / 1e9
	}
	slices.Sort(xs)
	return xs[len(xs)/2], nil
}

// gemmGFLOPs measures an n x n x n float32 matrix product through blas32.
func gemmGFLOPs(n int) float64 {
	mk := func() blas32.General {
		m := blas32.General{Rows: n, Cols: n, Stride: n, Data: make([]float32, n*n)}
		for i := range m.Data {
			m.Data[i] = float32(i%7) * 0.25
		}
		return m
	}
	a, b, c := mk(), mk(), mk()
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, a, b, 0, c) // warm up
	t := time.Now()
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, a, b, 0, c)
	return 2 * float64(n) * float64(n) * float64(n) / time.Since(t).Seconds() / 1e9
}

// trainExamplesPerSec trains one epoch of arch over n random MNIST-shaped
// examples and returns examples/s and the model's FLOPs per example.
func trainExamplesPerSec(arch string, batch, n int) (float64, float64, error) {
	spec := train.Spec{Arch: arch, Height: 28, Width: 28, Channels: 1, Classes: 10}
	m, err := train.NewModel(spec)
	if err != nil {
		return 0, 0, err
	}
	rng := rand.New(rand.NewPCG(3, 4))
	d := &train.Dataset{Name: "bench", N: n, Dim: 784, Height: 28, Width: 28, Channels: 1, Classes: 10,
		X: make([]float32, n*784), Y: make([]uint8, n)}
	for i := range d.X {
		d.X[i] = rng.Float32()
	}
	for i := range d.Y {
		d.Y[i] = uint8(rng.IntN(10))
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	params := make([]float32, m.NumParams())
	m.Init(params, 1)
	cfg := train.SGDConfig{Epochs: 1, BatchSize: batch, LR: 0.01}
	// warm up the scratch buffers on a few batches
	if _, err := m.Train(params, nil, d, idx[:batch*2], cfg, rng); err != nil {
		return 0, 0, err
	}
	t := time.Now()
	if _, err := m.Train(params, nil, d, idx, cfg, rng); err != nil {
		return 0, 0, err
	}
	return float64(n) / time.Since(t).Seconds(), m.FLOPsPerExample(), nil
}
