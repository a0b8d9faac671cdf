package fedavg

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"testing"
)

// goldenDigests are the digests of G after the golden scenario, one per
// configuration of allConfigs. They pin the arithmetic to the bit: any
// change of summation order, rounding or a fused multiply-add (a missing
// float64(...) around a product shows up under GOAMD64=v3 and on arm64)
// changes them. Change them only with a change of the aggregation itself,
// which is a protocol change.
var goldenDigests = map[string]string{
	"fedavg":           "e02bfee9ed3755ed581fcce96c7b1bff4d14241c7d22445f21bd77abee19713d",
	"fedavgm":          "8daf11228c73e0e4b64cff8c23107b9f960fe9f511789a96c4923867bb941d8b",
	"fedadam":          "4795bb33732833435fa572cd19f760771214b67a60893f9132518dfc3365faa3",
	"fedyogi":          "ded858795b9e5890634439e79334eb2f1577576329b636c1e2aad8087abe0346",
	"fedadagrad":       "aa5ea0f583092ed1e0db9f6e46e8b850f552ef84cbed57f26ede094dd0a62fb1",
	"median":           "374cf19f133a2c28a8e8e1142982d3e4e58ea426a3b5a13d2792eef73ea3012c",
	"trimmedmean":      "44ec431c802e9a58b77e70820c15b29d3ccbf52278bc1158fec337d3fc942d96",
	"krum":             "c88ff04f42ac7ca9a72950f2b36a7cafe652e5a4ddea592159658c7bdd204385",
	"multikrum":        "1f20ead921712002daf6fa77f765099d3fb979bb21449e8bd7d5d7f6064375f5",
	"fedavg-lr0.7":     "38c9775c845c3f65afd047eb8aaacca2a8b5f0f04ac6427b44150e2b8f47bac7",
	"fedavgm-lr0.3":    "635fe4e0b25b6ddfd3480070d8c3c7d7bcf9ea1f1a7b87a9574bd5bb3e4d36ed",
	"multikrum-m3":     "ee8661c72a261714cb605e6618205b9a12e041d229ba00803d8fb07713706775",
	"fedavg+clip":      "52d94f9790197337c6ab5ec8eb76c2580f900a8b052e4009ad36b38eb397afd4",
	"trimmedmean+clip": "a21767b306ff5d03c0e598fe266628970ca70ed30df1fdbdb9a38410537f8f6f",
	"fedadam+clip":     "4f011b21645c3db42a2a1a712e597ef86abe5d022293a8f31deb8a811050ed40",
}

// goldenValue builds a float32 from random bits: random sign, a full 23-bit
// mantissa and an exponent in [2^-20, 2^-4). Building the bits directly keeps
// the data independent of the CPU; the full mantissas make products and sums
// round, so that a fused multiply-add would show.
func goldenValue(r *rand.Rand) float32 {
	exp := uint32(127-20) + r.Uint32N(16)
	return math.Float32frombits(r.Uint32N(2)<<31 | exp<<23 | r.Uint32N(1<<23))
}

// goldenScenario runs 3 rounds of 7 updates of dimension 1000 from seeded
// PCG data (the last member an outlier scaled by 64; example counts up to
// 2^34, so that their products with the values round), handing each round's
// updates over in a shuffled order.
func goldenScenario(t *testing.T, s Strategy) *Global {
	t.Helper()
	g, _ := goldenRun(t, s)
	return g
}

// goldenRun runs the golden scenario and also returns the last round's
// updates, in peer order.
func goldenRun(t *testing.T, s Strategy) (*Global, []Update) {
	t.Helper()
	r := newRand(2026)
	const dim, members, rounds = 1000, 7, 3
	var last []Update
	vector := func() []float32 {
		xs := make([]float32, dim)
		for i := range xs {
			xs[i] = goldenValue(r)
		}
		return xs
	}
	g := NewGlobal(vector())
	peers := make([][]byte, members)
	for i := range peers {
		peers[i] = randPeer(r)
	}
	for round := uint64(1); round <= rounds; round++ {
		us := make([]Update, members)
		for i := range us {
			d := vector()
			if i == members-1 {
				for j := range d {
					d[j] *= 64
				}
			}
			us[i] = Update{Peer: peers[i], Delta: d, Examples: 1 + r.Int64N(1<<34)}
		}
		next, err := s.Aggregate(round, g, shuffled(r, us))
		if err != nil || next == nil {
			t.Fatalf("round %d: Aggregate = %v, %v", round, next, err)
		}
		g, last = next, us
	}
	sorted, err := sortedUpdates(g, last)
	if err != nil {
		t.Fatal(err)
	}
	return g, sorted
}

func TestGoldenDigests(t *testing.T) {
	for _, nc := range allConfigs() {
		t.Run(nc.name, func(t *testing.T) {
			g := goldenScenario(t, mustNew(t, nc.cfg))
			if g.State.Step != 3 {
				t.Errorf("step %d after 3 rounds", g.State.Step)
			}
			got := g.Digest().String()
			want, ok := goldenDigests[nc.name]
			if !ok {
				t.Fatalf("no golden digest; this run gives %q: %q,", nc.name, got)
			}
			if got != want {
				t.Errorf("digest %s, golden %s", got, want)
			}
		})
	}
}

// goldenKernelDigests pin the float64 results of the kernels on the golden
// scenario's last updates, before any rounding to float32 can hide a
// difference of one ulp.
var goldenKernelDigests = map[string]string{
	"krumScores":   "738a89042309312b6277c4c7a4b638fceaa22b83f191705a1a8937544601581e",
	"median":       "605c229ce26d5c27425064f131db94ded4ce5044191788cc7405c4f9b7bdb41b",
	"trimmedMean":  "9a9ffb24aa529d9925b71937ec4cf73921b31c603cdf8d3e3a63617815868de7",
	"weightedMean": "8743b87f3a457658afa8e02b4e991640cdc49568036f4db713eb283a0f735f08",
}

func float64Digest(xs []float64) string {
	h := sha256.New()
	for _, x := range xs {
		h.Write(binary.LittleEndian.AppendUint64(nil, math.Float64bits(x)))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestGoldenKernelDigests(t *testing.T) {
	_, us := goldenRun(t, mustNew(t, DefaultConfig()))
	dim := len(us[0].Delta)
	for name, xs := range map[string][]float64{
		"weightedMean": collect(dim, func(fn func(int, []float64)) { weightedMean(us, dim, fn) }),
		"trimmedMean":  collect(dim, func(fn func(int, []float64)) { trimmedMean(us, dim, 1, fn) }),
		"median":       collect(dim, func(fn func(int, []float64)) { trimmedMean(us, dim, 3, fn) }),
		"krumScores":   krumScores(us, dim, 4),
	} {
		got := float64Digest(xs)
		want, ok := goldenKernelDigests[name]
		if !ok {
			t.Errorf("no golden digest; this run gives %q: %q,", name, got)
		} else if got != want {
			t.Errorf("%s: digest %s, golden %s", name, got, want)
		}
	}
}
