package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"slices"
)

// bench is `globalbrain bench`: every figure of the speed table, each next to
// the ceiling measured in the same run (bench_table.go prints them).
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
	r := &benchRun{ctx: ctx, passes: *passes, quick: *quick, scale: 1}
	if *quick {
		r.scale = 100
	}
	var rows []benchRow
	fmt.Fprintf(stderr, "measuring (GOMAXPROCS=%d, median of %d passes)...\n", *procs, *passes)
	for _, measure := range []func() ([]benchRow, error){r.aggregate, r.training, r.protocol, r.secagg, r.transport} {
		more, err := measure()
		if err != nil {
			return err
		}
		rows = append(rows, more...)
	}
	return printBenchTable(stdout, rows)
}

// benchRun is what the measurements of one bench run share.
type benchRun struct {
	ctx    context.Context
	passes int
	quick  bool // small sizes
	scale  int  // sizes are divided by this (100 when quick)
}

// median runs f passes times and returns the median.
func (r *benchRun) median(f func() float64) float64 {
	xs := make([]float64, r.passes)
	for i := range xs {
		xs[i] = f()
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// protoArch is the model whose fixed update the protocol figures move.
func (r *benchRun) protoArch() string {
	if r.quick {
		return "logreg"
	}
	return "2nn"
}
