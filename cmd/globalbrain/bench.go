package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"text/tabwriter"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/sim"
	"github.com/globalbrain/globalbrain/train"
)

// benchRow is one line of the bench table: what was measured in this run,
// the ceiling measured in the same run, and the design's figure.
type benchRow struct {
	name, unit     string
	value, ceiling float64
	ceilingName    string
	design         string
}

func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	passes := fs.Int("passes", 3, "passes per figure; the median is printed")
	procs := fs.Int("procs", 2, "GOMAXPROCS while measuring")
	quick := fs.Bool("quick", false, "small sizes, for a smoke test of the command itself")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *passes < 1 || *procs < 1 {
		return fmt.Errorf("bench: -passes and -procs must be >= 1")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(*procs))
	scale := 1
	if *quick {
		scale = 100
	}
	median := func(f func() float64) float64 {
		xs := make([]float64, *passes)
		for i := range xs {
			xs[i] = f()
		}
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	var rows []benchRow
	fmt.Fprintf(stderr, "measuring (GOMAXPROCS=%d, median of %d passes)...\n", *procs, *passes)

	for _, n := range []int{1 << 20 / scale, 10 << 20 / scale} {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cp := median(func() float64 { return memcopyGBs(n * 10) })
		agg, err := aggregateGBs(n, 10, *passes)
		if err != nil {
			return err
		}
		rows = append(rows, benchRow{
			name: fmt.Sprintf("fedavg aggregate 10 x %s float32", human(n)), unit: "GB/s", value: agg,
			ceiling: cp, ceilingName: "memory copy GB/s", design: "memory-bound",
		})
	}

	gemmN := 1024 / min(scale, 4)
	gemm := median(func() float64 { return gemmGFLOPs(gemmN) })
	trainRuns := []struct {
		arch   string
		batch  int
		n      int
		design string
	}{
		{"2nn", 10, 20000, "10-14k ex/s"},
		{"2nn", 50, 20000, "14-17k ex/s"},
		{"cnn", 50, 600, "250-310 ex/s"},
	}
	for _, tr := range trainRuns {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n := max(tr.n/scale, tr.batch*2)
		var flops float64
		exs := median(func() float64 {
			eps, f, err := trainExamplesPerSec(tr.arch, tr.batch, n)
			if err != nil {
				panic(err) // the spec and config are constants
			}
			flops = f
			return eps
		})
		rows = append(rows, benchRow{
			name: fmt.Sprintf("train %s B=%d", tr.arch, tr.batch), unit: "examples/s", value: exs,
			design: tr.design,
		}, benchRow{
			name: fmt.Sprintf("train %s B=%d", tr.arch, tr.batch), unit: "GFLOP/s", value: exs * flops / 1e9,
			ceiling: gemm, ceilingName: fmt.Sprintf("sgemm %d^3 GFLOP/s", gemmN),
		})
	}
	protoArch, protoRuns := "2nn", []struct {
		members  int
		fraction float64
		rounds   int
	}{{10, 1, 5}, {100, 0.1, 3}}
	if *quick {
		protoArch, protoRuns[0].rounds, protoRuns[1].members, protoRuns[1].fraction, protoRuns[1].rounds = "logreg", 2, 20, 0.5, 2
	}
	for _, pr := range protoRuns {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		pc, err := sim.MeasureProtocol(ctx, protoArch, pr.members, pr.fraction, pr.rounds)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("protocol %d members C=%g (%s, fixed update)", pr.members, pr.fraction, protoArch)
		rows = append(rows, benchRow{
			name: name, unit: "s/round", value: pc.NodeSeconds,
			ceiling: pc.DirectSeconds, ceilingName: "direct loop s/round", design: "",
		}, benchRow{
			name: name, unit: "MB written/round", value: pc.BytesPerRound / 1e6,
			ceiling: float64(pc.UpdateBytes) * pc.ParticipantsAvg / 1e6, ceilingName: "MB of updates/round",
		})
	}
	// The transport: a 100 MB update to 9 peers over the blob protocol next
	// to raw TCP on loopback, then the protocol over libp2p at 10 peers.
	blobSize, blobPeers, lpMembers, lpRounds := int64(100<<20), 9, 10, 4
	if *quick {
		blobSize, blobPeers, lpMembers, lpRounds = 4<<20, 3, 4, 2
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	blob, tcp, err := p2p.MeasureBlobVsTCP(ctx, blobSize, blobPeers)
	if err != nil {
		return err
	}
	rows = append(rows, benchRow{
		name: fmt.Sprintf("blob protocol %d MB to %d peers", blobSize>>20, blobPeers), unit: "MB/s", value: blob,
		ceiling: tcp, ceilingName: "raw TCP MB/s (loopback)",
	})
	lp, err := sim.MeasureProtocolLibp2p(ctx, protoArch, lpMembers, lpRounds)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("libp2p %d peers (%s, fixed update)", lpMembers, protoArch)
	rows = append(rows, benchRow{
		name: name, unit: "non-training s/round", value: lp.NodeSeconds,
		ceiling: lp.DirectSeconds, ceilingName: "direct loop s/round",
	}, benchRow{
		name: name, unit: "gossip MB/round", value: lp.GossipBytesPerRound / 1e6,
		ceiling: lp.BlobBytesPerRound / 1e6, ceilingName: "blob payload MB/round",
	})
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "what\tmeasured\tunit\tcompared with (same run)\tratio\tdesign figure\t")
	for _, r := range rows {
		ceil, ratio := "", ""
		if r.ceiling > 0 {
			ceil = fmt.Sprintf("%.4g %s", r.ceiling, r.ceilingName)
			ratio = fmt.Sprintf("%.2f", r.value/r.ceiling)
		}
		fmt.Fprintf(w, "%s\t%.4g\t%s\t%s\t%s\t%s\t\n", r.name, r.value, r.unit, ceil, ratio, r.design)
	}
	return w.Flush()
}

func human(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprint(n)
}

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
