package roundtest

import (
	"flag"
	"fmt"
	"testing"

	"github.com/cockroachdb/datadriven"
)

const (
	seeds      = 20 // every script runs on seeds 0..seeds-1
	goldenSeed = 0  // the seed the golden blocks are written with (-rewrite)
)

// TestInteraction runs every testdata/*.txt script on 20 seeds. Output that
// depends on the seed (SeedSpecific) is compared only on goldenSeed; with
// -rewrite only goldenSeed runs, and rewrites the golden blocks.
func TestInteraction(t *testing.T) {
	rewrite := flag.Lookup("rewrite").Value.String() == "true"
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		for s := uint64(0); s < seeds; s++ {
			if rewrite && s != goldenSeed {
				continue
			}
			t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
				t.Parallel()
				ie := NewInteractionEnv(s)
				datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
					out := ie.Handle(t, d)
					if s != goldenSeed && SeedSpecific(d.Cmd) {
						return d.Expected
					}
					return out
				})
			})
		}
	})
}
