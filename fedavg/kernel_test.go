package fedavg

import (
	"math"
	"slices"
	"testing"
)

// kernelDims covers empty models, partial blocks and several blocks.
var kernelDims = []int{0, 1, 7, blockSize - 1, blockSize, blockSize + 1, 2*blockSize + 13}

func collect(dim int, kernel func(fn func(lo int, d []float64))) []float64 {
	out := make([]float64, dim)
	next := 0
	kernel(func(lo int, d []float64) {
		if lo != next {
			panic("blocks out of order")
		}
		copy(out[lo:], d)
		next = lo + len(d)
	})
	if next != dim {
		panic("blocks do not cover the dimension")
	}
	return out
}

func TestWeightedMeanMatchesNaive(t *testing.T) {
	r := newRand(1)
	for trial := range 150 {
		dim := kernelDims[trial%len(kernelDims)]
		n := 1 + r.IntN(12)
		value := randValue
		if trial%2 == 1 {
			value = nastyValue
		}
		us := randUpdates(r, n, dim, value)
		if trial%3 == 0 {
			for i := range us {
				us[i].Examples = 1 + r.Int64N(1<<40)
			}
		}
		got := collect(dim, func(fn func(int, []float64)) { weightedMean(us, dim, fn) })
		want := naiveWeightedMean(us, dim)
		if i, ok := bitsEqual64(got, want); !ok {
			t.Fatalf("trial %d (n %d, dim %d): coordinate %d: optimized %v, naive %v", trial, n, dim, i, got[i], want[i])
		}
	}
}

func TestTrimmedMeanMatchesNaive(t *testing.T) {
	r := newRand(2)
	for trial := range 200 {
		dim := kernelDims[trial%len(kernelDims)]
		n := 1 + r.IntN(24) // beyond 16 takes the slices.Sort path
		trim := r.IntN((n-1)/2 + 1)
		value := nastyValue
		if trial%4 == 0 {
			value = randValue
		}
		us := randUpdates(r, n, dim, value)
		got := collect(dim, func(fn func(int, []float64)) { trimmedMean(us, dim, trim, fn) })
		want := naiveTrimmedMean(us, dim, trim)
		if i, ok := bitsEqual64(got, want); !ok {
			t.Fatalf("trial %d (n %d, trim %d, dim %d): coordinate %d: optimized %v, naive %v", trial, n, trim, dim, i, got[i], want[i])
		}
	}
}

func TestMedianIsTheMiddle(t *testing.T) {
	r := newRand(3)
	for n := 1; n <= 20; n++ {
		us := randUpdates(r, n, 50, randValue)
		got := collect(50, func(fn func(int, []float64)) { trimmedMean(us, 50, (n-1)/2, fn) })
		for j := range 50 {
			col := make([]float64, n)
			for i, u := range us {
				col[i] = float64(u.Delta[j])
			}
			slices.Sort(col)
			want := col[n/2]
			if n%2 == 0 {
				want = (col[n/2-1] + col[n/2]) / 2
			}
			if got[j] != want {
				t.Fatalf("n %d coordinate %d: median %v, want %v", n, j, got[j], want)
			}
		}
	}
}

func TestKrumMatchesNaive(t *testing.T) {
	r := newRand(4)
	for trial := range 100 {
		dim := kernelDims[trial%len(kernelDims)]
		n := 3 + r.IntN(10)
		neighbors := 1 + r.IntN(n-2)
		value := randValue
		if trial%2 == 1 {
			value = nastyValue
		}
		us := randUpdates(r, n, dim, value)
		if trial%5 == 0 && n > 3 { // exact duplicates make ties
			us[1].Delta = us[0].Delta
			us[3].Delta = us[2].Delta
		}
		got := krumScores(us, dim, neighbors)
		want := naiveKrumScores(us, dim, neighbors)
		if i, ok := bitsEqual64(got, want); !ok {
			t.Fatalf("trial %d (n %d, neighbors %d, dim %d): update %d: optimized score %v, naive %v", trial, n, neighbors, dim, i, got[i], want[i])
		}
		order := krumOrder(got)
		best := 0
		for i := range want {
			if want[i] < want[best] {
				best = i
			}
		}
		if order[0] != best {
			t.Fatalf("trial %d: Krum picks %d, naive argmin is %d", trial, order[0], best)
		}
	}
}

func TestSortKeyIsTotalOrder(t *testing.T) {
	inf := float32(math.Inf(1))
	ordered := []float32{-inf, -math.MaxFloat32, -1, -math.SmallestNonzeroFloat32, float32(math.Copysign(0, -1)), 0,
		math.SmallestNonzeroFloat32, 1, math.MaxFloat32, inf}
	for i := range ordered {
		k := sortKey(ordered[i])
		if math.Float32bits(fromSortKey(k)) != math.Float32bits(ordered[i]) {
			t.Errorf("fromSortKey(sortKey(%v)) does not round-trip", ordered[i])
		}
		if i > 0 && sortKey(ordered[i-1]) >= k {
			t.Errorf("sortKey(%v) >= sortKey(%v)", ordered[i-1], ordered[i])
		}
	}
	r := newRand(5)
	for range 10000 {
		a, b := math.Float32frombits(r.Uint32()), math.Float32frombits(r.Uint32())
		if a != a || b != b {
			continue
		}
		if a < b && sortKey(a) >= sortKey(b) {
			t.Fatalf("sortKey(%v) >= sortKey(%v)", a, b)
		}
	}
}

func TestSortKeys(t *testing.T) {
	r := newRand(6)
	for n := range 40 {
		ks := make([]uint32, n)
		for i := range ks {
			ks[i] = r.Uint32N(8) // many ties
		}
		want := slices.Clone(ks)
		slices.Sort(want)
		sortKeys(ks)
		if !slices.Equal(ks, want) {
			t.Fatalf("sortKeys(%d) = %v, want %v", n, ks, want)
		}
	}
}

func TestL2Norm(t *testing.T) {
	if got := l2Norm([]float32{3, 4}); got != 5 {
		t.Errorf("l2Norm(3, 4) = %v", got)
	}
	if got := l2Norm(nil); got != 0 {
		t.Errorf("l2Norm(nil) = %v", got)
	}
}
