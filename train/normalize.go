package train

import (
	"errors"
	"fmt"
	"math"
)

// Normalisation methods: what Normalization.Method accepts.
const (
	NormNone     = "none"     // features kept as they are in the file
	NormMinMax   = "minmax"   // (v - min) / (max - min)
	NormStandard = "standard" // (v - mean) / std
	NormScale    = "scale"    // v / divisor
)

// NormMethods lists the valid values of Normalization.Method.
var NormMethods = []string{NormNone, NormMinMax, NormStandard, NormScale}

// ErrNormalization reports a normalisation whose parameters do not fit the
// data's features.
var ErrNormalization = errors.New("bad normalisation")

// Normalization maps each feature read from a file to the value the model
// sees. Its parameters are stated (in a node config), never estimated from
// the data, so that every member of a consortium normalises the same way.
// Each parameter list holds one value, used for every feature, or one value
// per feature, in the order of the features.
type Normalization struct {
	// Method is NormNone (or ""), NormMinMax, NormStandard or NormScale.
	Method string
	// Min and Max are NormMinMax's bounds, Max > Min.
	Min, Max []float64
	// Mean and Std are NormStandard's, Std > 0.
	Mean, Std []float64
	// Divisor is NormScale's, non-zero.
	Divisor float64
}

// Check reports whether n can normalise features features. Errors name the
// parameter as a node config does ("normalize.min").
func (n Normalization) Check(features int) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrNormalization, fmt.Sprintf(format, args...)))
	}
	list := func(name string, vs []float64) bool {
		switch {
		case len(vs) == 0:
			bad("normalize.%s: required for method %s", name, n.Method)
		case len(vs) != 1 && len(vs) != features:
			bad("normalize.%s: %d values, want 1 (for every feature) or %d (one per feature)", name, len(vs), features)
		default:
			for i, v := range vs {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					bad("normalize.%s[%d]: %v, want a finite number", name, i, v)
					return false
				}
			}
			return true
		}
		return false
	}
	switch n.Method {
	case "", NormNone:
	case NormMinMax:
		if list("min", n.Min) && list("max", n.Max) {
			for j := range features {
				if lo, hi := at(n.Min, j), at(n.Max, j); !(hi > lo) {
					bad("normalize.max: feature %d: max %v is not above min %v", j+1, hi, lo)
					break
				}
			}
		}
	case NormStandard:
		if list("mean", n.Mean) && list("std", n.Std) {
			for i, s := range n.Std {
				if !(s > 0) {
					bad("normalize.std[%d]: %v, want > 0", i, s)
					break
				}
			}
		}
	case NormScale:
		if d := n.Divisor; d == 0 || math.IsNaN(d) || math.IsInf(d, 0) {
			bad("normalize.divisor: %v, want a finite non-zero number", d)
		}
	default:
		bad("normalize.method: %q unknown, want one of none, minmax, standard, scale", n.Method)
	}
	return errors.Join(errs...)
}

// at is vs[j], or vs[0] for a list of one value.
func at(vs []float64, j int) float64 {
	if len(vs) == 1 {
		return vs[0]
	}
	return vs[j]
}

// apply normalises v, the value of feature j. n must have passed Check.
func (n Normalization) apply(v float64, j int) float64 {
	switch n.Method {
	case NormMinMax:
		lo := at(n.Min, j)
		return (v - lo) / (at(n.Max, j) - lo)
	case NormStandard:
		return (v - at(n.Mean, j)) / at(n.Std, j)
	case NormScale:
		return v / n.Divisor
	}
	return v
}
