package secagg

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"encoding/binary"
	"fmt"
)

// Seed keys one mask: AES-256-CTR under it is the PRG of PRIVACY.md
// phase 2.
type Seed [32]byte

// SelfMaskSeed is the seed of participant i's self mask (phase 2):
// HKDF-SHA256(b_i, no salt, info = "gb/secagg/self/1" | r). In phase 3 it is
// derived again from the rebuilt b_i of every survivor.
func SelfMaskSeed(s Session, b [32]byte) Seed {
	info := make([]byte, 0, 16+8)
	info = append(info, "gb/secagg/self/1"...)
	info = s.appendRound(info)
	return Seed(mustHKDF(b[:], nil, info))
}

// PairMaskSeed is s_ij, the seed i and j share (phase 2):
// HKDF-SHA256(X25519(s_i, s_j.pub), salt = consortium ID,
// info = "gb/secagg/mask/1" | r | lower id | higher id). Both sides get the
// same seed; key is the caller's mask private key and peerPub the other
// member's advertised s_j.pub. It fails with ErrLowOrder for a low-order
// peerPub and ErrBadID when the two IDs are equal.
func PairMaskSeed(s Session, self []byte, key *ecdh.PrivateKey, peer []byte, peerPub *ecdh.PublicKey) (Seed, error) {
	if err := checkID(self); err != nil {
		return Seed{}, err
	}
	if err := checkID(peer); err != nil {
		return Seed{}, err
	}
	lo, hi := self, peer
	switch bytes.Compare(self, peer) {
	case 0:
		return Seed{}, fmt.Errorf("%w: a pairwise mask with oneself", ErrBadID)
	case 1:
		lo, hi = peer, self
	}
	z, err := agree(key, peerPub)
	if err != nil {
		return Seed{}, err
	}
	info := make([]byte, 0, 16+8+4+len(lo)+len(hi))
	info = append(info, "gb/secagg/mask/1"...)
	info = s.appendRound(info)
	info = appendID(info, lo)
	info = appendID(info, hi)
	return Seed(mustHKDF(z, s.Consortium[:], info)), nil
}

// Expand returns the first n words of the PRG under seed: the AES-256-CTR
// keystream with IV 0, read as little-endian uint64.
func Expand(seed Seed, n int) []uint64 {
	v := make([]uint64, n)
	addPRG(v, seed, false)
	return v
}

// prgChunk is how many words of keystream addPRG makes at a time.
const prgChunk = 512

// addPRG adds (or, when neg, subtracts) PRG(seed) to v, mod 2^64, word by
// word, without materializing the whole keystream.
func addPRG(v []uint64, seed Seed, neg bool) {
	addPRGs(v, []Seed{seed}, []bool{neg})
}

// addPRGs is addPRG of every seeds[k] (subtracted where neg[k]) in one
// pass over v: each chunk of v takes every keystream's next words while it
// is in cache, rather than v being swept once per seed. Each keystream is
// read in order, and addition mod 2^64 is exact in any order, so the
// result is bit for bit that of one addPRG per seed.
func addPRGs(v []uint64, seeds []Seed, neg []bool) {
	if len(seeds) != len(neg) {
		panic("secagg: addPRGs: seeds and signs differ in length")
	}
	var iv [aes.BlockSize]byte
	ctrs := make([]cipher.Stream, len(seeds))
	for k, seed := range seeds {
		block, err := aes.NewCipher(seed[:])
		if err != nil {
			panic(err) // a 32-byte key
		}
		ctrs[k] = cipher.NewCTR(block, iv[:])
	}
	var zero, ks [8 * prgChunk]byte
	for len(v) > 0 {
		m := min(len(v), prgChunk)
		w, buf := v[:m], ks[:8*m]
		for k, ctr := range ctrs {
			ctr.XORKeyStream(buf, zero[:8*m])
			if neg[k] {
				for i := range w {
					w[i] -= binary.LittleEndian.Uint64(buf[8*i:])
				}
			} else {
				for i := range w {
					w[i] += binary.LittleEndian.Uint64(buf[8*i:])
				}
			}
		}
		v = v[m:]
	}
}
