package secagg

import (
	"bytes"
	"crypto/ecdh"
	"fmt"
)

// MaskPeer is a member of U2 as the masks need it: its ID and the public
// key of its s_j from its KeyAd.
type MaskPeer struct {
	ID      []byte
	MaskPub *ecdh.PublicKey
}

// Mask is participant self's masked input y_i of PRIVACY.md phase 2:
//
//	y_i = enc + PRG(SelfMaskSeed(b)) + sum over j in U2, j != i of
//	      (+PRG(s_ij) if id_i < id_j else -PRG(s_ij))   mod 2^64
//
// with s_ij = PairMaskSeed(self, key, j). key is self's Keys.Mask and u2 the
// members of U2 (self may be among them and is skipped). enc is not
// modified. Over all of U2 the pairwise masks cancel; what a dropped member
// leaves behind, Unmask removes with DroppedPairs. It fails on a repeated
// ID and on any failed agreement (ErrLowOrder, ErrBadKey).
func Mask(s Session, self []byte, key *ecdh.PrivateKey, b [32]byte, u2 []MaskPeer, enc []uint64) ([]uint64, error) {
	if err := distinct(u2, func(p MaskPeer) []byte { return p.ID }); err != nil {
		return nil, err
	}
	seeds := append(make([]Seed, 0, len(u2)+1), SelfMaskSeed(s, b))
	neg := append(make([]bool, 0, len(u2)+1), false)
	for _, p := range u2 {
		if bytes.Equal(p.ID, self) {
			continue
		}
		seed, err := PairMaskSeed(s, self, key, p.ID, p.MaskPub)
		if err != nil {
			return nil, fmt.Errorf("secagg: mask with %x: %w", p.ID, err)
		}
		seeds = append(seeds, seed)
		neg = append(neg, bytes.Compare(self, p.ID) > 0)
	}
	y := append([]uint64(nil), enc...)
	addPRGs(y, seeds, neg) // the self mask and every pairwise one, in one pass
	return y, nil
}

// Sum adds masked inputs mod 2^64 (phase 3: the y_i of U3, in any order,
// since the sum is exact).
func Sum(ys [][]uint64) ([]uint64, error) {
	if len(ys) == 0 {
		return nil, nil
	}
	sum := make([]uint64, len(ys[0]))
	for i, y := range ys {
		if len(y) != len(sum) {
			return nil, fmt.Errorf("secagg: input %d has %d words, input 0 has %d", i, len(y), len(sum))
		}
		for k, v := range y {
			sum[k] += v
		}
	}
	return sum, nil
}

// DroppedPair is a pairwise mask a dropped member left in a survivor's
// input: Survivor's y holds +PRG(Seed) if Survivor < Dropped (as bytes),
// -PRG(Seed) otherwise.
type DroppedPair struct {
	Survivor, Dropped []byte
	Seed              Seed
}

// DroppedPairs derives, in phase 3, the pairwise seeds between a dropped
// member of D = U2 \ U3 and every survivor in U3, from the dropped member's
// mask private key rebuilt with RebuildMaskKey and the survivors' advertised
// mask public keys.
func DroppedPairs(s Session, dropped []byte, key *ecdh.PrivateKey, survivors []MaskPeer) ([]DroppedPair, error) {
	out := make([]DroppedPair, len(survivors))
	for k, p := range survivors {
		seed, err := PairMaskSeed(s, dropped, key, p.ID, p.MaskPub)
		if err != nil {
			return nil, fmt.Errorf("secagg: mask of dropped %x with %x: %w", dropped, p.ID, err)
		}
		out[k] = DroppedPair{Survivor: bytes.Clone(p.ID), Dropped: bytes.Clone(dropped), Seed: seed}
	}
	return out, nil
}

// Unmask removes every mask from sum, the Sum of the inputs of U3
// (phase 3), and returns the exact sum of their encodings: it subtracts
// PRG(seed) for each survivor's self seed (SelfMaskSeed of its rebuilt b)
// and undoes each pairwise mask a dropped member left in a survivor's input
// (DroppedPairs of every member of D). The pairwise masks between survivors
// cancel by themselves. sum is not modified.
//
// Unmask cannot tell a missing or wrong seed: the result is then noise,
// which Encoding.Decode's bounds catch with overwhelming probability. It
// fails only on a pair whose two IDs are equal.
func Unmask(sum []uint64, self []Seed, dropped []DroppedPair) ([]uint64, error) {
	for _, d := range dropped {
		if bytes.Equal(d.Survivor, d.Dropped) {
			return nil, fmt.Errorf("%w: member %x both survived and dropped", ErrBadID, d.Survivor)
		}
	}
	seeds := append(make([]Seed, 0, len(self)+len(dropped)), self...)
	neg := make([]bool, len(self), len(self)+len(dropped))
	for i := range neg {
		neg[i] = true
	}
	for _, d := range dropped {
		// The survivor added the mask when it was the lower ID; undo that.
		seeds = append(seeds, d.Seed)
		neg = append(neg, bytes.Compare(d.Survivor, d.Dropped) < 0)
	}
	out := append([]uint64(nil), sum...)
	addPRGs(out, seeds, neg)
	return out, nil
}

func distinct[T any](xs []T, id func(T) []byte) error {
	seen := make(map[string]bool, len(xs))
	for _, x := range xs {
		k := string(id(x))
		if seen[k] {
			return fmt.Errorf("%w: %x appears twice", ErrBadID, k)
		}
		seen[k] = true
	}
	return nil
}
