package main

import "fmt"

// aggregate measures FedAvg over 10 updates of 1M and 10M parameters next to
// a memory copy of the same bytes.
func (r *benchRun) aggregate() ([]benchRow, error) {
	var rows []benchRow
	for _, n := range []int{1 << 20 / r.scale, 10 << 20 / r.scale} {
		if r.ctx.Err() != nil {
			return nil, r.ctx.Err()
		}
		cp := r.median(func() float64 { return memcopyGBs(n * 10) })
		agg, err := aggregateGBs(n, 10, r.passes)
		if err != nil {
			return nil, err
		}
		rows = append(rows, benchRow{
			name: fmt.Sprintf("fedavg aggregate 10 x %s float32", human(n)), unit: "GB/s", value: agg,
			ceiling: cp, ceilingName: "memory copy GB/s", design: "memory-bound",
		})
	}
	return rows, nil
}

// training measures local training of the 2NN and the CNN, in examples/s
// and in GFLOP/s next to a float32 matrix product.
func (r *benchRun) training() ([]benchRow, error) {
	var rows []benchRow
	gemmN := 1024 / min(r.scale, 4)
	gemm := r.median(func() float64 { return gemmGFLOPs(gemmN) })
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
		if r.ctx.Err() != nil {
			return nil, r.ctx.Err()
		}
		n := max(tr.n/r.scale, tr.batch*2)
		var flops float64
		exs := r.median(func() float64 {
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
	return rows, nil
}
