package secagg

import (
	"crypto/aes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

// TestExpandIsAES256CTR: the PRG is the AES-256-CTR keystream with IV 0
// read as little-endian uint64, checked against AES applied block by block
// to the big-endian counter 0, 1, 2, ... across several chunk boundaries,
// and against the AES-256 known answer for the zero key and block
// (FIPS-197 style vector dc95c078a2408989ad48a21492842087).
func TestExpandIsAES256CTR(t *testing.T) {
	zero := Expand(Seed{}, 2)
	if zero[0] != 0x898940a278c095dc || zero[1] != 0x8720849214a248ad {
		t.Fatalf("zero seed: %#x %#x", zero[0], zero[1])
	}
	var seed Seed
	copy(seed[:], "gb/secagg/test/prg/seed/32-bytes")
	n := 3*prgChunk + 5
	got := Expand(seed, n)
	block, _ := aes.NewCipher(seed[:])
	var ctr, out [16]byte
	for k := 0; k < n; k += 2 {
		binary.BigEndian.PutUint64(ctr[8:], uint64(k/2))
		block.Encrypt(out[:], ctr[:])
		if got[k] != binary.LittleEndian.Uint64(out[:8]) || (k+1 < n && got[k+1] != binary.LittleEndian.Uint64(out[8:])) {
			t.Fatalf("word %d is not the CTR keystream", k)
		}
	}
	if !slices.Equal(Expand(seed, 100), got[:100]) {
		t.Error("a shorter expansion is not a prefix")
	}
	v := slices.Clone(got)
	addPRG(v, seed, true)
	for k, w := range v {
		if w != 0 {
			t.Fatalf("adding then subtracting the PRG left %d at %d", w, k)
		}
	}
}

// TestMaskSeeds: both ends derive the same pairwise seed, from the labels
// and layout of PRIVACY.md; the seeds are bound to the round and the
// consortium; the self seed is HKDF(b_i, "gb/secagg/self/1" | r).
func TestMaskSeeds(t *testing.T) {
	a, _ := GenerateKeys(seeded(41))
	b, _ := GenerateKeys(seeded(42))
	ia, ib := []byte("aaa"), []byte("b")
	ab, err := PairMaskSeed(testSession, ia, a.Mask, ib, b.Mask.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	ba, err := PairMaskSeed(testSession, ib, b.Mask, ia, a.Mask.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if ab != ba {
		t.Fatal("s_ab != s_ba")
	}
	z, _ := a.Mask.ECDH(b.Mask.PublicKey())
	info := append([]byte("gb/secagg/mask/1"), 0, 0, 0, 0, 0, 0, 0, 42, 0, 3, 'a', 'a', 'a', 0, 1, 'b')
	want, _ := hkdf.Key(sha256.New, z, testSession.Consortium[:], string(info), 32)
	if ab != Seed(want) {
		t.Error("the pairwise seed is not the HKDF PRIVACY.md specifies")
	}
	other := testSession
	other.Round++
	if s, _ := PairMaskSeed(other, ia, a.Mask, ib, b.Mask.PublicKey()); s == ab {
		t.Error("the pairwise seed does not bind the round")
	}
	other = testSession
	other.Consortium[5] ^= 1
	if s, _ := PairMaskSeed(other, ia, a.Mask, ib, b.Mask.PublicKey()); s == ab {
		t.Error("the pairwise seed does not bind the consortium")
	}
	if _, err := PairMaskSeed(testSession, ia, a.Mask, ia, b.Mask.PublicKey()); !errors.Is(err, ErrBadID) {
		t.Errorf("a mask with oneself: %v, want ErrBadID", err)
	}

	bi := [32]byte{1, 2, 3}
	want, _ = hkdf.Key(sha256.New, bi[:], nil, "gb/secagg/self/1\x00\x00\x00\x00\x00\x00\x00\x2a", 32)
	if SelfMaskSeed(testSession, bi) != Seed(want) {
		t.Error("the self seed is not the HKDF PRIVACY.md specifies")
	}
	// The self seed has no salt, as PRIVACY.md writes it: b_i is fresh for
	// each round and consortium, and its commitment binds both.
	next := testSession
	next.Round++
	if SelfMaskSeed(next, bi) == SelfMaskSeed(testSession, bi) {
		t.Error("the self seed does not bind the round")
	}
}

// TestAddPRGsIsOneAddPRGPerSeed: the one-pass sum of several keystreams,
// with both signs, over lengths that end inside and on a chunk, equals
// the keystreams computed one by one (Expand) and added word by word.
func TestAddPRGsIsOneAddPRGPerSeed(t *testing.T) {
	seeds := []Seed{{1}, {2}, {3}, {4}, {5}}
	neg := []bool{false, true, true, false, true}
	for _, n := range []int{0, 1, prgChunk - 1, prgChunk, 2*prgChunk + 7} {
		start := make([]uint64, n)
		for i := range start {
			start[i] = uint64(i) * 0x9e3779b97f4a7c15
		}
		want := slices.Clone(start)
		for k, s := range seeds {
			for i, w := range Expand(s, n) {
				if neg[k] {
					want[i] -= w
				} else {
					want[i] += w
				}
			}
		}
		got := slices.Clone(start)
		addPRGs(got, seeds, neg)
		if !slices.Equal(got, want) {
			t.Fatalf("n = %d: the one-pass sum differs from the keystreams added one by one", n)
		}
	}
}
