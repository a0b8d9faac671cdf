package secagg

import (
	"fmt"
	"slices"
	"testing"
)

// params2NN is the size of the 2NN of McMahan et al. (784-200-200-10 with
// biases): an input is 1 + 199,210 words.
const params2NN = 199210

func benchMembers(b *testing.B, n int) ([]member, [][]uint64) {
	b.Helper()
	ms := newMembers(b, n, params2NN, uint64(7000+n), testEncoding)
	return ms, encodeAll(b, testEncoding, ms)
}

// BenchmarkMask is phase 2 for one participant of n: n-1 agreements and n
// PRG expansions of the 2NN's length.
func BenchmarkMask(b *testing.B) {
	for _, n := range []int{10, 50} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			ms, encs := benchMembers(b, n)
			peers := maskPeers(ms)
			b.SetBytes(int64(8 * n * len(encs[0]))) // keystream made per op
			for b.Loop() {
				if _, err := Mask(testSession, ms[0].id, ms[0].keys.Mask, ms[0].b, peers, encs[0]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/op")
			b.ReportMetric(float64(n), "PRGs/op")
		})
	}
}

// BenchmarkUnmask is phase 3's arithmetic for n participants once the
// secrets are rebuilt: the sum of the survivors' inputs, a self seed per
// survivor, the dropped members' agreements with every survivor, and one
// PRG expansion per survivor and per (survivor, dropped) pair. With no
// dropout and with the most (n - t) dropouts allowed.
func BenchmarkUnmask(b *testing.B) {
	for _, n := range []int{10, 50} {
		tt := threshold(n)
		ms, encs := benchMembers(b, n)
		peers := maskPeers(ms)
		ys := make([][]uint64, n)
		for i, m := range ms {
			var err error
			if ys[i], err = Mask(testSession, m.id, m.keys.Mask, m.b, peers, encs[i]); err != nil {
				b.Fatal(err)
			}
		}
		for _, dropped := range []int{0, n - tt} {
			b.Run(fmt.Sprintf("n=%d/dropped=%d", n, dropped), func(b *testing.B) {
				// Drop every third member first, as a spread of IDs.
				var d, u3 []int
				for i := range n {
					if len(d) < dropped && (i%3 == 1 || n-i <= dropped-len(d)) {
						d = append(d, i)
					} else {
						u3 = append(u3, i)
					}
				}
				survivors := make([]MaskPeer, len(u3))
				inputs := make([][]uint64, len(u3))
				for k, i := range u3 {
					survivors[k], inputs[k] = peers[i], ys[i]
				}
				unmask := func() []uint64 {
					sum, err := Sum(inputs)
					if err != nil {
						b.Fatal(err)
					}
					self := make([]Seed, len(u3))
					for k, i := range u3 {
						self[k] = SelfMaskSeed(testSession, ms[i].b) // b_i as rebuilt
					}
					var pairs []DroppedPair
					for _, j := range d {
						p, err := DroppedPairs(testSession, ms[j].id, ms[j].keys.Mask, survivors)
						if err != nil {
							b.Fatal(err)
						}
						pairs = append(pairs, p...)
					}
					out, err := Unmask(sum, self, pairs)
					if err != nil {
						b.Fatal(err)
					}
					return out
				}
				var want [][]uint64
				for _, i := range u3 {
					want = append(want, encs[i])
				}
				if w, _ := Sum(want); !slices.Equal(unmask(), w) {
					b.Fatal("unmasking is wrong")
				}
				prgs := len(u3) * (1 + len(d))
				b.SetBytes(int64(8 * prgs * len(encs[0])))
				for b.Loop() {
					unmask()
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/op")
				b.ReportMetric(float64(prgs), "PRGs/op")
			})
		}
	}
}

// BenchmarkRebuild is phase 3's Shamir work for n participants: one
// Combine of t shares per member (b_j or s_j), with the check against the
// commitment or the advertised key.
func BenchmarkRebuild(b *testing.B) {
	for _, n := range []int{10, 50} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			tt := threshold(n)
			r := seeded(uint64(n))
			b1, _ := NewSelfSecret(r)
			shares, err := Split(b1, tt, n, r)
			if err != nil {
				b.Fatal(err)
			}
			commit := CommitSelf(testSession, b1)
			for b.Loop() {
				for range n {
					if _, err := RebuildSelfSecret(testSession, shares[n-tt:], tt, commit); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/op")
		})
	}
}

// BenchmarkDeal is phase 1 for one participant of n: two t-of-n sharings
// and n sealed records.
func BenchmarkDeal(b *testing.B) {
	for _, n := range []int{10, 50} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			ms := newMembers(b, n, 0, uint64(n), testEncoding)
			u1 := make([]Recipient, n)
			for i, m := range ms {
				u1[i] = Recipient{ID: m.id, SharePub: m.keys.Share.PublicKey()}
			}
			r := seeded(1)
			for b.Loop() {
				if _, err := Deal(testSession, ms[0].id, ms[0].keys, ms[0].b, threshold(n), u1, r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/op")
		})
	}
}

// BenchmarkEncode is the fixed-point encoding of a 2NN update.
func BenchmarkEncode(b *testing.B) {
	ms := newMembers(b, 1, params2NN, 1, testEncoding)
	b.SetBytes(4 * params2NN)
	for b.Loop() {
		if _, err := testEncoding.Encode(ms[0].w, ms[0].x); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPRG is one mask expansion of the 2NN's length added to a vector.
func BenchmarkPRG(b *testing.B) {
	v := make([]uint64, 1+params2NN)
	b.SetBytes(int64(8 * len(v)))
	for b.Loop() {
		addPRG(v, Seed{1}, false)
	}
}
