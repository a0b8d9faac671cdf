package secagg

import (
	"bytes"
	"errors"
	"math"
	"math/big"
	"slices"
	"testing"

	"github.com/globalbrain/globalbrain/fedavg"
)

// threshold is PRIVACY.md's t = max(ceil(2n/3), gamma + k_min) with the
// default gamma = floor(n/3) and k_min = 2.
func threshold(n int) int {
	return max((2*n+2)/3, n/3+2)
}

// sim is a round run through this package's functions as the round machine
// would: phase 0 and 1 for all of U1 once, then phases 2 and 3 for any U2 and
// U3.
type sim struct {
	t    *testing.T
	e    Encoding
	ms   []member // U1, in ID order
	tt   int
	held [][]ShareRecord // held[j][i]: the record j opened from i's box
	enc  [][]uint64
}

func newSim(t *testing.T, n, tt, dim int, seed uint64, e Encoding) *sim {
	t.Helper()
	s := &sim{t: t, e: e, ms: newMembers(t, n, dim, seed, e), tt: tt}
	r := seeded(seed + 1)
	u1 := make([]Recipient, n)
	for i, m := range s.ms {
		// Phase 0: the KeyAds carry the public keys as bytes.
		pub, err := ParsePublicKey(m.keys.Share.PublicKey().Bytes())
		if err != nil {
			t.Fatal(err)
		}
		u1[i] = Recipient{ID: m.id, SharePub: pub}
	}
	s.held = make([][]ShareRecord, n)
	for j := range s.held {
		s.held[j] = make([]ShareRecord, n)
	}
	for i, m := range s.ms { // phase 1
		sealed, err := Deal(testSession, m.id, m.keys, m.b, tt, u1, r)
		if err != nil {
			t.Fatal(err)
		}
		for j, box := range sealed {
			to := s.ms[j]
			rec, err := OpenShare(testSession, to.keys.Share, m.keys.Share.PublicKey(), m.id, to.id, box.Box)
			if err != nil {
				t.Fatal(err)
			}
			s.held[j][i] = rec
		}
	}
	s.enc = encodeAll(t, e, s.ms)
	return s
}

// mask is phase 2 for the members of u2 (indices into ms).
func (s *sim) mask(u2 []int) map[int][]uint64 {
	peers := make([]MaskPeer, len(u2))
	for k, i := range u2 {
		peers[k] = MaskPeer{ID: s.ms[i].id, MaskPub: s.ms[i].keys.Mask.PublicKey()}
	}
	ys := make(map[int][]uint64, len(u2))
	for _, i := range u2 {
		m := s.ms[i]
		y, err := Mask(testSession, m.id, m.keys.Mask, m.b, peers, s.enc[i])
		if err != nil {
			s.t.Fatal(err)
		}
		ys[i] = y
	}
	return ys
}

// unmask is phase 3 with survivors u3 of u2: the t lowest-ID survivors
// reveal, for each survivor its share of b, for each dropped member its
// share of s (never both for one member), and the sum is unmasked.
func (s *sim) unmask(u2, u3 []int, ys map[int][]uint64) ([]uint64, error) {
	revealers := u3[:min(s.tt, len(u3))]
	type kind struct {
		revealer, of int
	}
	revealed := map[kind]string{}
	reveal := func(of int, what string) []Share {
		var out []Share
		for _, r := range revealers {
			k := kind{r, of}
			if prev, ok := revealed[k]; ok && prev != what {
				s.t.Fatalf("member %d revealed both shares of %d", r, of)
			}
			revealed[k] = what
			rec := s.held[r][of]
			if what == "b" {
				out = append(out, rec.B)
			} else {
				out = append(out, rec.S)
			}
		}
		return out
	}
	survivors := make([]MaskPeer, len(u3))
	var inputs [][]uint64
	var self []Seed
	for k, i := range u3 {
		m := s.ms[i]
		survivors[k] = MaskPeer{ID: m.id, MaskPub: m.keys.Mask.PublicKey()}
		inputs = append(inputs, ys[i])
		b, err := RebuildSelfSecret(testSession, reveal(i, "b"), s.tt, CommitSelf(testSession, m.b))
		if err != nil {
			return nil, err
		}
		self = append(self, SelfMaskSeed(testSession, b))
	}
	var pairs []DroppedPair
	for _, j := range u2 {
		if slices.Contains(u3, j) {
			continue
		}
		key, err := RebuildMaskKey(reveal(j, "s"), s.tt, s.ms[j].keys.Mask.PublicKey())
		if err != nil {
			return nil, err
		}
		p, err := DroppedPairs(testSession, s.ms[j].id, key, survivors)
		if err != nil {
			return nil, err
		}
		pairs = append(pairs, p...)
	}
	sum, err := Sum(inputs)
	if err != nil {
		return nil, err
	}
	return Unmask(sum, self, pairs)
}

func (s *sim) plainSum(u3 []int) []uint64 {
	var encs [][]uint64
	for _, i := range u3 {
		encs = append(encs, s.enc[i])
	}
	sum, _ := Sum(encs)
	return sum
}

func without(all, drop []int) []int {
	var out []int
	for _, i := range all {
		if !slices.Contains(drop, i) {
			out = append(out, i)
		}
	}
	return out
}

func indices(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// TestEveryDropoutPattern: n = 10, t = 7. Every allowed pattern of dropouts
// after the masked inputs are sent — every D of size 0..n-t, all 176 — gives
// exactly the sum of the survivors' encodings; so does every pattern that
// adds dropouts between the shares and the masked inputs (U2 a subset of
// U1 of at least t, then every D with |U3| >= t: 1161 in all); and every D
// that leaves fewer than t survivors fails to rebuild a secret.
func TestEveryDropoutPattern(t *testing.T) {
	const n = 10
	tt := threshold(n)
	if tt != 7 {
		t.Fatalf("t = %d for n = 10, want 7", tt)
	}
	s := newSim(t, n, tt, 40, 61, testEncoding)
	patterns := 0
	for before := 0; before <= n-tt; before++ {
		subsets(n, before, func(gone []int) {
			u2 := without(indices(n), gone)
			ys := s.mask(u2)
			for d := 0; len(u2)-d >= tt; d++ {
				subsets(len(u2), d, func(dk []int) {
					var dropped []int
					for _, k := range dk {
						dropped = append(dropped, u2[k])
					}
					u3 := without(u2, dropped)
					got, err := s.unmask(u2, u3, ys)
					if err != nil {
						t.Fatalf("U1\\U2 %v, D %v: %v", gone, dropped, err)
					}
					if !slices.Equal(got, s.plainSum(u3)) {
						t.Fatalf("U1\\U2 %v, D %v: the unmasked sum is not the sum of the encodings", gone, dropped)
					}
					patterns++
				})
			}
			if before == 0 {
				if patterns != 176 {
					t.Fatalf("%d patterns after the inputs, want 176", patterns)
				}
				failed := 0
				subsets(n, n-tt+1, func(dropped []int) {
					if _, err := s.unmask(u2, without(u2, dropped), ys); !errors.Is(err, ErrTooFewShares) {
						t.Fatalf("D %v leaves %d < t survivors: %v, want ErrTooFewShares", dropped, tt-1, err)
					}
					failed++
				})
				if failed != binom(n, n-tt+1) {
					t.Fatalf("%d short patterns", failed)
				}
			}
		})
	}
	if patterns != 1161 {
		t.Fatalf("%d patterns in all, want 1161", patterns)
	}
}

// TestSecureSumEqualsPlainFedAvg: 20 members (t = 14) with example counts
// as weights, some above W_max, and updates of 2000 coordinates, some beyond
// ±c; 5 drop after sending their input. The decoded sums are within
// ErrorBound(15) of the exact sums over the clamped inputs (computed here in
// rational arithmetic) and within that plus float64 summation error of the
// plain float64 sums, and the FedAvg mean matches fedavg's FedAvg of the
// same clamped updates within the bound this test derives.
func TestSecureSumEqualsPlainFedAvg(t *testing.T) {
	const n, dim = 20, 2000
	tt := threshold(n)
	e := testEncoding
	s := newSim(t, n, tt, dim, 71, e)
	for i := range s.ms {
		s.ms[i].w = max(1, s.ms[i].w) // fedavg needs an example
	}
	s.enc = encodeAll(t, e, s.ms)
	u2 := indices(n)
	ys := s.mask(u2)
	u3 := without(u2, []int{0, 4, 9, 13, 19})
	got, err := s.unmask(u2, u3, ys)
	if err != nil {
		t.Fatal(err)
	}
	sw, swx, err := e.Decode(got, len(u3))
	if err != nil {
		t.Fatal(err)
	}

	var ws []float64
	var xs [][]float32
	var updates []fedavg.Update
	for _, i := range u3 {
		m := s.ms[i]
		w := min(m.w, e.MaxWeight)
		clamped := make([]float32, dim)
		for k, x := range m.x {
			clamped[k] = float32(max(-e.Clip, min(e.Clip, float64(x))))
		}
		ws, xs = append(ws, m.w), append(xs, m.x)
		updates = append(updates, fedavg.Update{Peer: m.id, Delta: clamped, Examples: int64(w)})
	}
	exactW, exactWX := exactSums(e, ws, xs)
	bound := e.ErrorBound(len(u3))
	if bound > 1e-6 {
		t.Fatalf("the bound %g is too loose to test anything", bound)
	}

	// Plain float64 sums in peer order, and their own rounding error:
	// at most m*u*sum|terms| for m terms (Higham, recursive summation).
	const u = 0x1p-53
	plainW := 0.0
	for _, u := range updates {
		plainW += float64(u.Examples)
	}
	if d := diff(sw, exactW); d > bound {
		t.Errorf("total weight %v off the exact %v by %g > %g", sw, exactW.FloatString(3), d, bound)
	}
	if math.Abs(sw-plainW) > bound {
		t.Errorf("total weight %v, plain %v", sw, plainW)
	}
	worst := 0.0
	for k := range dim {
		plain, abs := 0.0, 0.0
		for _, up := range updates {
			v := float64(float64(up.Examples) * float64(up.Delta[k]))
			plain += v
			abs += math.Abs(v)
		}
		if d := diff(swx[k], exactWX[k]); d > bound {
			t.Fatalf("coordinate %d: %v off the exact sum by %g > %g", k, swx[k], d, bound)
		}
		plainErr := float64(len(updates)+1) * u * abs
		if d := math.Abs(swx[k] - plain); d > bound+plainErr {
			t.Fatalf("coordinate %d: %v off the plain sum %v by %g > %g", k, swx[k], plain, d, bound+plainErr)
		}
		worst = max(worst, math.Abs(swx[k]-plain))
	}
	t.Logf("15 inputs of 2000 coordinates: worst difference from the plain sum %.3g, bound %.3g", worst, bound)

	// FedAvg: mean = sum(w x) / sum(w). fedavg computes it in float64 and
	// rounds to float32 (with G = 0 and the default server rate 1).
	strategy, err := fedavg.New(fedavg.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	next, err := strategy.Aggregate(testSession.Round, fedavg.NewGlobal(make([]float32, dim)), updates)
	if err != nil {
		t.Fatal(err)
	}
	for k := range dim {
		secure := swx[k] / sw
		exact, _ := new(big.Rat).Quo(exactWX[k], exactW).Float64()
		// |a/b - A/B| <= (|a-A| + |A/B| |b-B|) / (B - |b-B|), plus the
		// division's rounding; fedavg: float32 rounding of the mean and its
		// float64 summation.
		W, _ := exactW.Float64()
		secureErr := (bound+math.Abs(exact)*bound)/(W-bound) + u*math.Abs(secure)
		fedErr := 0x1p-24*math.Abs(exact) + float64(2*len(updates)+2)*u*e.Clip
		if d := math.Abs(secure - float64(next.Weights[k])); d > secureErr+fedErr {
			t.Fatalf("coordinate %d: secure FedAvg %v, fedavg %v: %g apart, bound %g", k, secure, next.Weights[k], d, secureErr+fedErr)
		}
	}
}

// TestRoundDeterministic: the same seed replays the whole round to the bit
// (keys, boxes, masked inputs); another seed changes everything but the
// sum.
func TestRoundDeterministic(t *testing.T) {
	run := func(seed uint64) (box []byte, y []uint64, sum []uint64) {
		s := newSim(t, 5, 4, 8, seed, testEncoding)
		u1 := make([]Recipient, 5)
		for i, m := range s.ms {
			u1[i] = Recipient{ID: m.id, SharePub: m.keys.Share.PublicKey()}
		}
		sealed, err := Deal(testSession, s.ms[0].id, s.ms[0].keys, s.ms[0].b, 4, u1, seeded(seed+2))
		if err != nil {
			t.Fatal(err)
		}
		ys := s.mask(indices(5))
		sum, err = s.unmask(indices(5), []int{0, 1, 2, 4}, ys)
		if err != nil {
			t.Fatal(err)
		}
		return sealed[3].Box, ys[2], sum
	}
	b1, y1, s1 := run(81)
	b2, y2, s2 := run(81)
	if !bytes.Equal(b1, b2) || !slices.Equal(y1, y2) || !slices.Equal(s1, s2) {
		t.Fatal("the same seed did not replay the round")
	}
	b3, y3, _ := run(82)
	if bytes.Equal(b1, b3) || slices.Equal(y1, y3) {
		t.Fatal("another seed gave the same boxes or inputs")
	}
}

// TestRevealingBothSharesUnmasksAnInput shows why PRIVACY.md forbids a
// member to reveal both shares of one member: with b_j and s_j rebuilt,
// anyone strips every mask from y_j and reads j's update.
func TestRevealingBothSharesUnmasksAnInput(t *testing.T) {
	s := newSim(t, 4, 3, 6, 91, testEncoding)
	u2 := indices(4)
	ys := s.mask(u2)
	j := 2
	var bs, ss []Share
	for r := range 3 {
		bs = append(bs, s.held[r][j].B)
		ss = append(ss, s.held[r][j].S)
	}
	b, err := RebuildSelfSecret(testSession, bs, 3, CommitSelf(testSession, s.ms[j].b))
	if err != nil {
		t.Fatal(err)
	}
	key, err := RebuildMaskKey(ss, 3, s.ms[j].keys.Mask.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	y := slices.Clone(ys[j])
	addPRG(y, SelfMaskSeed(testSession, b), true)
	for k, o := range s.ms {
		if k == j {
			continue
		}
		seed, err := PairMaskSeed(testSession, s.ms[j].id, key, o.id, o.keys.Mask.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		addPRG(y, seed, bytes.Compare(s.ms[j].id, o.id) < 0) // undo j's sign
	}
	if !slices.Equal(y, s.enc[j]) {
		t.Fatal("both shares did not expose the input")
	}
}
