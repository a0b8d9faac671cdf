package secagg

import (
	"errors"
	"slices"
	"testing"
)

func encodeAll(t testing.TB, e Encoding, ms []member) [][]uint64 {
	t.Helper()
	out := make([][]uint64, len(ms))
	for i, m := range ms {
		var err error
		if out[i], err = e.Encode(m.w, m.x); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestMasksCancel: for n = 2..50 with everyone surviving, the pairwise masks
// cancel to the bit and removing the self masks leaves exactly the sum of
// the encodings, while every masked input differs from its encoding in
// every word.
func TestMasksCancel(t *testing.T) {
	for n := 2; n <= 50; n++ {
		ms := newMembers(t, n, 23, uint64(1000+n), testEncoding)
		encs := encodeAll(t, testEncoding, ms)
		peers := maskPeers(ms)
		ys := make([][]uint64, n)
		self := make([]Seed, n)
		for i, m := range ms {
			y, err := Mask(testSession, m.id, m.keys.Mask, m.b, peers, encs[i])
			if err != nil {
				t.Fatal(err)
			}
			for k := range y {
				if y[k] == encs[i][k] {
					t.Fatalf("n=%d: member %d word %d is unmasked", n, i, k)
				}
			}
			ys[i] = y
			self[i] = SelfMaskSeed(testSession, m.b)
		}
		sum, err := Sum(ys)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := Sum(encs)
		got, err := Unmask(sum, self, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("n=%d: masks do not cancel", n)
		}
		if partial, _ := Unmask(sum, self[1:], nil); slices.Equal(partial, want) {
			t.Fatalf("n=%d: a self mask was not needed", n)
		}
	}
}

// TestMaskFormula: y_i is exactly enc + PRG(self) + the pairwise PRGs with
// + toward higher IDs and - toward lower ones (PRIVACY.md phase 2).
func TestMaskFormula(t *testing.T) {
	ms := newMembers(t, 3, 9, 51, testEncoding) // in ID order
	encs := encodeAll(t, testEncoding, ms)
	const dim = 10
	for i, m := range ms {
		want := slices.Clone(encs[i])
		add := func(s Seed, sign uint64) {
			for k, v := range Expand(s, dim) {
				want[k] += sign * v
			}
		}
		add(SelfMaskSeed(testSession, m.b), 1)
		for j, o := range ms {
			if j == i {
				continue
			}
			s, err := PairMaskSeed(testSession, m.id, m.keys.Mask, o.id, o.keys.Mask.PublicKey())
			if err != nil {
				t.Fatal(err)
			}
			if i < j {
				add(s, 1)
			} else {
				add(s, ^uint64(0)) // -1 mod 2^64
			}
		}
		got, err := Mask(testSession, m.id, m.keys.Mask, m.b, maskPeers(ms), encs[i])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("member %d: y is not the formula", i)
		}
		// U2 without self gives the same y.
		others := slices.Delete(maskPeers(ms), i, i+1)
		if again, _ := Mask(testSession, m.id, m.keys.Mask, m.b, others, encs[i]); !slices.Equal(again, got) {
			t.Fatalf("member %d: listing itself in U2 changed y", i)
		}
	}
}

func TestMaskErrors(t *testing.T) {
	ms := newMembers(t, 3, 2, 52, testEncoding)
	peers := maskPeers(ms)
	if _, err := Mask(testSession, ms[0].id, ms[0].keys.Mask, ms[0].b, append(peers, peers[1]), make([]uint64, 3)); !errors.Is(err, ErrBadID) {
		t.Errorf("a member twice in U2: %v, want ErrBadID", err)
	}
	peers[2].MaskPub = nil
	if _, err := Mask(testSession, ms[0].id, ms[0].keys.Mask, ms[0].b, peers, make([]uint64, 3)); !errors.Is(err, ErrBadKey) {
		t.Errorf("a peer without a key: %v, want ErrBadKey", err)
	}
	if _, err := Sum([][]uint64{{1, 2}, {3}}); err == nil {
		t.Error("Sum of two lengths succeeded")
	}
	if s, err := Sum(nil); s != nil || err != nil {
		t.Error("Sum of nothing")
	}
	if _, err := Unmask([]uint64{1}, nil, []DroppedPair{{Survivor: []byte("a"), Dropped: []byte("a")}}); !errors.Is(err, ErrBadID) {
		t.Errorf("a member both survived and dropped: %v, want ErrBadID", err)
	}
}
