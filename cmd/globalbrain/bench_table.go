package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// benchRow is one line of the bench table: what was measured in this run,
// the ceiling measured in the same run, and the design's figure.
type benchRow struct {
	name, unit     string
	value, ceiling float64
	ceilingName    string
	design         string
}

// printBenchTable writes rows as an aligned table, each with its ratio to
// its ceiling.
func printBenchTable(stdout io.Writer, rows []benchRow) error {
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

// human writes a size as 1M, 10M, 4K when it is a whole number of them.
func human(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprint(n)
}
