package secagg

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
)

// seeded is the deterministic reader every test draws from: ChaCha8 keyed by
// the test's seed, so every key, share, nonce and mask replays to the bit.
func seeded(seed uint64) io.Reader {
	var k [32]byte
	binary.LittleEndian.PutUint64(k[:], seed)
	copy(k[8:], "gb/secagg/test")
	return rand.NewChaCha8(k)
}

// member is one participant of a simulated round: its ID and round secrets,
// and the update it contributes.
type member struct {
	id   []byte
	keys Keys
	b    [32]byte
	w    float64
	x    []float32
}

var testSession = Session{Consortium: [32]byte{0xc0, 0x45, 0x01}, Round: 42}

// newMembers makes n members with IDs of random length (1 to 40 bytes, so
// byte order is not index order and prefixes occur), fresh round keys, b_i,
// and an update of dim coordinates in [-1.25 clip, 1.25 clip] (a fifth of
// them clamped) with a weight in [0, 1.25 maxW] (some clamped). The result is
// in byte order of the IDs.
func newMembers(t testing.TB, n, dim int, seed uint64, enc Encoding) []member {
	t.Helper()
	rnd := seeded(seed)
	prng := rand.New(rand.NewPCG(seed, 7))
	ms := make([]member, n)
	seen := map[string]bool{}
	for i := range ms {
		for {
			id := make([]byte, 1+prng.IntN(40))
			if _, err := io.ReadFull(rnd, id); err != nil {
				t.Fatal(err)
			}
			if i%7 == 3 && i > 0 { // an ID that extends another one
				id = append(bytes.Clone(ms[i-1].id), id[0])
			}
			if !seen[string(id)] {
				seen[string(id)] = true
				ms[i].id = id
				break
			}
		}
		var err error
		if ms[i].keys, err = GenerateKeys(rnd); err != nil {
			t.Fatal(err)
		}
		if ms[i].b, err = NewSelfSecret(rnd); err != nil {
			t.Fatal(err)
		}
		ms[i].w = float64(prng.IntN(int(1.25*enc.MaxWeight) + 1))
		ms[i].x = make([]float32, dim)
		for k := range ms[i].x {
			ms[i].x[k] = float32((prng.Float64()*2.5 - 1.25) * enc.Clip)
		}
	}
	slices.SortFunc(ms, func(a, b member) int { return bytes.Compare(a.id, b.id) })
	return ms
}

func maskPeers(ms []member) []MaskPeer {
	out := make([]MaskPeer, len(ms))
	for i, m := range ms {
		out[i] = MaskPeer{ID: m.id, MaskPub: m.keys.Mask.PublicKey()}
	}
	return out
}

// subsets calls fn with every subset of {0..n-1} of size k, as sorted
// indices.
func subsets(n, k int, fn func([]int)) {
	idx := make([]int, k)
	var rec func(start, depth int)
	rec = func(start, depth int) {
		if depth == k {
			fn(slices.Clone(idx))
			return
		}
		for i := start; i <= n-(k-depth); i++ {
			idx[depth] = i
			rec(i+1, depth+1)
		}
	}
	rec(0, 0)
}

func binom(n, k int) int {
	r := 1
	for i := 1; i <= k; i++ {
		r = r * (n - k + i) / i
	}
	return r
}

// testEncoding is a realistic encoding: updates clamped to ±1, weights
// (example counts) to 5000, a grid of 2^-24.
var testEncoding = Encoding{Clip: 1, Scale: 1 << 24, MaxWeight: 5000}
