package dp

import (
	"testing"

	"github.com/globalbrain/globalbrain/internal/fmacheck"
)

// TestEveryFloatProductIsConverted guards determinism at the source: every
// floating-point product in the package (tests aside) is wrapped in an
// explicit float32(...) or float64(...) conversion, so it cannot be fused
// into an FMA (see doc.go).
func TestEveryFloatProductIsConverted(t *testing.T) { fmacheck.Products(t, "dp") }
