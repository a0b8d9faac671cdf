package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// seedHoldout is the second word of Holdout's PCG seed.
const seedHoldout = 0x676c6f62686f6c64 // "globhold"

// Holdout splits the indices 0..n-1 into a training part and a held-out
// validation part of round(fraction*n) examples (at least one, and at least
// one left to train on), shuffled with seed: the same arguments give the
// same split. Both parts are in ascending order.
func Holdout(n int, fraction float64, seed uint64) (trainIdx, valIdx []int, err error) {
	if !(fraction > 0 && fraction < 1) {
		return nil, nil, fmt.Errorf("train: validation fraction %v, want 0 < fraction < 1", fraction)
	}
	if n < 2 {
		return nil, nil, fmt.Errorf("train: %d examples cannot be split into a training and a validation part", n)
	}
	k := min(max(int(math.Round(fraction*float64(n))), 1), n-1)
	perm := rand.New(rand.NewPCG(seed, seedHoldout)).Perm(n)
	valIdx = slices.Sorted(slices.Values(perm[:k]))
	trainIdx = slices.Sorted(slices.Values(perm[k:]))
	return trainIdx, valIdx, nil
}

// Subset is a new data set named name holding the examples idx of d, in
// that order (their features copied).
func (d *Dataset) Subset(name string, idx []int) *Dataset {
	s := *d
	s.Name, s.N = name, len(idx)
	s.X = make([]float32, 0, len(idx)*d.Dim)
	s.Y = make([]uint8, 0, len(idx))
	for _, i := range idx {
		s.X = append(s.X, d.Row(i)...)
		s.Y = append(s.Y, d.Y[i])
	}
	return &s
}
