package fedavg

import (
	"math"
	"slices"
)

// Determinism to the bit.
//
// Every member recomputes G from the same updates and must arrive at the same
// bytes, whatever its CPU. The kernels therefore use only + - * / and
// math.Sqrt (all correctly rounded in IEEE-754), accumulate in float64 in peer
// order, and round to float32 once per stored value.
//
// One trap remains: the Go spec allows x*y + z to be fused into a single
// FMA instruction, which rounds once instead of twice, and the compiler does
// so on arm64 and other architectures, and on amd64 built with GOAMD64=v3.
// The result then depends on the build. An explicit conversion rounds to the
// target type and forbids the fusion, so every product in this package is
// wrapped, as in
//
//	acc += float64(w * float64(x))
//
// even where the conversion looks redundant. A test checks the source for
// unwrapped products (a fusion usually moves a float64 by one ulp, which the
// final rounding to float32 hides from the golden digests of G), and golden
// digests of the kernels' float64 results pin the arithmetic itself.

// blockSize is the number of coordinates processed at a time: the float64
// accumulators of a block (16 KiB) stay in L1 while the updates stream past.
const blockSize = 2048

// weightedMean computes, for every coordinate j, the example-weighted mean
//
//	sum_i(n_i * x_ij) / sum_i n_i
//
// of the updates, summing in the order of us (peer order) in float64, and hands
// it to fn one block of coordinates at a time: fn(lo, mean) receives the means
// of coordinates [lo, lo+len(mean)). mean is reused after fn returns.
func weightedMean(us []Update, dim int, fn func(lo int, mean []float64)) {
	var total float64
	for _, u := range us {
		total += float64(u.Examples)
	}
	acc := make([]float64, min(blockSize, dim))
	for lo := 0; lo < dim; lo += blockSize {
		a := acc[:min(blockSize, dim-lo)]
		clear(a)
		// Several updates per pass save loads and stores of the
		// accumulators; each sum is still ((acc + p_i) + p_{i+1}) + ...,
		// in peer order.
		i := 0
		for ; i+3 < len(us); i += 4 {
			w0, w1 := float64(us[i].Examples), float64(us[i+1].Examples)
			w2, w3 := float64(us[i+2].Examples), float64(us[i+3].Examples)
			x0 := us[i].Delta[lo : lo+len(a)]
			x1 := us[i+1].Delta[lo : lo+len(a)][:len(x0)]
			x2 := us[i+2].Delta[lo : lo+len(a)][:len(x0)]
			x3 := us[i+3].Delta[lo : lo+len(a)][:len(x0)]
			a := a[:len(x0)]
			for j, x := range x0 {
				a[j] = a[j] + float64(w0*float64(x)) + float64(w1*float64(x1[j])) +
					float64(w2*float64(x2[j])) + float64(w3*float64(x3[j]))
			}
		}
		for ; i < len(us); i++ {
			w := float64(us[i].Examples)
			x := us[i].Delta[lo : lo+len(a)]
			for j := range a {
				a[j] += float64(w * float64(x[j]))
			}
		}
		for j := range a {
			a[j] /= total
		}
		fn(lo, a)
	}
}

// naiveWeightedMean is the definition of weightedMean, coordinate by
// coordinate. Tests hold the two equal to the bit.
func naiveWeightedMean(us []Update, dim int) []float64 {
	var total float64
	for _, u := range us {
		total += float64(u.Examples)
	}
	out := make([]float64, dim)
	for j := range out {
		var acc float64
		for _, u := range us {
			acc += float64(float64(u.Examples) * float64(u.Delta[j]))
		}
		out[j] = acc / total
	}
	return out
}

// sortKey maps a float32 to a uint32 whose unsigned order is the IEEE total
// order of the values (-0 before +0). Sorting keys rather than floats makes
// the sorted sequence unique, so it cannot depend on the sorting algorithm.
func sortKey(x float32) uint32 {
	b := math.Float32bits(x)
	if b&0x80000000 != 0 {
		return ^b
	}
	return b | 0x80000000
}

func fromSortKey(k uint32) float32 {
	if k&0x80000000 != 0 {
		return math.Float32frombits(k &^ 0x80000000)
	}
	return math.Float32frombits(^k)
}

// trimmedMean computes, for every coordinate, the unweighted mean of the
// values left after dropping the trim smallest and trim largest: the kept
// values are summed in ascending order in float64, starting from +0, and
// divided by their count. len(us) must exceed 2*trim. The median is the
// trimmed mean with trim = (len(us)-1)/2. Results are handed to fn by block
// as in weightedMean.
func trimmedMean(us []Update, dim, trim int, fn func(lo int, mean []float64)) {
	n := len(us)
	keep := n - 2*trim
	if keep < 1 {
		panic("fedavg: trimmed mean keeps no value")
	}
	count := float64(keep)
	out := make([]float64, min(blockSize, dim))
	keys := make([]uint32, n*min(blockSize, dim)) // keys[c*n+i]: coordinate c of update i
	for lo := 0; lo < dim; lo += blockSize {
		o := out[:min(blockSize, dim-lo)]
		for i, u := range us {
			for c, x := range u.Delta[lo : lo+len(o)] {
				keys[c*n+i] = sortKey(x)
			}
		}
		for c := range o {
			col := keys[c*n : c*n+n]
			sortKeys(col)
			var acc float64
			for _, k := range col[trim : n-trim] {
				acc += float64(fromSortKey(k))
			}
			o[c] = acc / count
		}
		fn(lo, o)
	}
}

// sortKeys sorts a short column in place: insertion sort for the handful of
// updates a round usually has, slices.Sort beyond that.
func sortKeys(ks []uint32) {
	if len(ks) > 16 {
		slices.Sort(ks)
		return
	}
	for i := 1; i < len(ks); i++ {
		k := ks[i]
		j := i
		for ; j > 0 && ks[j-1] > k; j-- {
			ks[j] = ks[j-1]
		}
		ks[j] = k
	}
}

// naiveTrimmedMean is the definition of trimmedMean: gather each coordinate,
// sort it in total order, sum the middle.
func naiveTrimmedMean(us []Update, dim, trim int) []float64 {
	n := len(us)
	out := make([]float64, dim)
	col := make([]float64, n)
	for j := range out {
		for i, u := range us {
			col[i] = float64(u.Delta[j])
		}
		slices.SortFunc(col, func(a, b float64) int {
			switch {
			case a < b:
				return -1
			case a > b:
				return 1
			case math.Signbit(a) && !math.Signbit(b):
				return -1
			case !math.Signbit(a) && math.Signbit(b):
				return 1
			}
			return 0
		})
		var acc float64
		for _, x := range col[trim : n-trim] {
			acc += x
		}
		out[j] = acc / float64(n-trim-trim)
	}
	return out
}

// pairDistances returns the squared Euclidean distances between all pairs of
// updates: d[i*n+j] = sum_k (x_ik - x_jk)^2, summed in coordinate order in
// float64. Each pair is computed once, coordinate block by coordinate block so
// that the updates' blocks are read from cache for every pair.
func pairDistances(us []Update, dim int) []float64 {
	n := len(us)
	d := make([]float64, n*n)
	for lo := 0; lo < dim; lo += blockSize {
		hi := min(lo+blockSize, dim)
		for i := 0; i < n; i++ {
			xi := us[i].Delta[lo:hi]
			for j := i + 1; j < n; j++ {
				xj := us[j].Delta[lo:hi]
				xj = xj[:len(xi)]
				s := d[i*n+j]
				for k, a := range xi {
					diff := float64(a) - float64(xj[k])
					s += float64(diff * diff)
				}
				d[i*n+j] = s
			}
		}
	}
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			d[j*n+i] = d[i*n+j]
		}
	}
	return d
}

// krumScores returns each update's Krum score: the sum of the squared
// distances to its nearest neighbors, nearest first (Blanchard et al. 2017).
func krumScores(us []Update, dim, neighbors int) []float64 {
	n := len(us)
	d := pairDistances(us, dim)
	scores := make([]float64, n)
	row := make([]float64, 0, n-1)
	for i := range scores {
		row = row[:0]
		for j := 0; j < n; j++ {
			if j != i {
				row = append(row, d[i*n+j])
			}
		}
		slices.Sort(row)
		var s float64
		for _, x := range row[:neighbors] {
			s += x
		}
		scores[i] = s
	}
	return scores
}

// naiveKrumScores is the definition of krumScores: every distance computed
// from scratch in both directions.
func naiveKrumScores(us []Update, dim, neighbors int) []float64 {
	scores := make([]float64, len(us))
	for i, ui := range us {
		var row []float64
		for j, uj := range us {
			if j == i {
				continue
			}
			var s float64
			for k := 0; k < dim; k++ {
				diff := float64(ui.Delta[k]) - float64(uj.Delta[k])
				s += float64(diff * diff)
			}
			row = append(row, s)
		}
		slices.Sort(row)
		for _, x := range row[:neighbors] {
			scores[i] += x
		}
	}
	return scores
}

// krumOrder returns the indices of us ordered by Krum score, lowest first,
// ties broken by index (that is, by peer ID).
func krumOrder(scores []float64) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case scores[a] < scores[b]:
			return -1
		case scores[a] > scores[b]:
			return 1
		}
		return 0
	})
	return idx
}

// l2Norm returns the Euclidean norm of xs, summed in index order in float64.
func l2Norm(xs []float32) float64 {
	var s float64
	for _, x := range xs {
		s += float64(float64(x) * float64(x))
	}
	return math.Sqrt(s)
}
