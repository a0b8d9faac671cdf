package fedavg

import (
	"fmt"
	"testing"
)

// benchUpdates returns n updates of dim values and a model of that dim.
func benchUpdates(n, dim int) (*Global, []Update) {
	r := newRand(42)
	us := randUpdates(r, n, dim, randValue)
	return NewGlobal(randVector(r, dim)), us
}

// benchAggregate reports the bytes of updates read per second (b.SetBytes).
func benchAggregate(b *testing.B, c Config, n, dim int) {
	g, us := benchUpdates(n, dim)
	s := mustNew(b, c)
	b.SetBytes(int64(4 * n * dim))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		next, err := s.Aggregate(1, g, us)
		if err != nil || next == nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFedAvg_10x1M(b *testing.B)  { benchAggregate(b, DefaultConfig(), 10, 1_000_000) }
func BenchmarkFedAvg_10x10M(b *testing.B) { benchAggregate(b, DefaultConfig(), 10, 10_000_000) }

func BenchmarkStrategies_10x1M(b *testing.B) {
	for _, name := range strategyNames[1:] {
		c := DefaultConfig()
		c.Strategy, c.TrimFraction, c.Byzantine = name, 0.2, 2
		b.Run(name, func(b *testing.B) { benchAggregate(b, c, 10, 1_000_000) })
	}
	c := DefaultConfig()
	c.ClipNorm = 0.01
	b.Run("fedavg+clip", func(b *testing.B) { benchAggregate(b, c, 10, 1_000_000) })
}

func BenchmarkDigest(b *testing.B) {
	for _, dim := range []int{1_000_000, 10_000_000} {
		g := NewGlobal(randVector(newRand(1), dim))
		b.Run(fmt.Sprint(dim), func(b *testing.B) {
			b.SetBytes(int64(4 * dim))
			for b.Loop() {
				g.Digest()
			}
		})
	}
}
