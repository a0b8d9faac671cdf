package secagg

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

// lowOrder lists X25519 public keys whose agreement with any private key is
// all zero: the points of order 1, 2, 4 and 8, in canonical and
// non-canonical encodings, and with the ignored top bit set (libsodium's
// blocklist, RFC 7748 section 5).
var lowOrder = []string{
	"0000000000000000000000000000000000000000000000000000000000000000", // 0
	"0100000000000000000000000000000000000000000000000000000000000000", // 1
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", // order 8
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p - 1
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p + 1
	"0000000000000000000000000000000000000000000000000000000000000080", // 0, top bit set
	"0100000000000000000000000000000000000000000000000000000000000080", // 1, top bit set
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
}

// TestAllZeroAgreementRefused: every way a low-order public key could enter
// (a KeyAd, a share box, a pairwise mask, a dropped member's seeds) is
// refused with ErrLowOrder, never turned into a key everyone knows.
func TestAllZeroAgreementRefused(t *testing.T) {
	keys, err := GenerateKeys(seeded(1))
	if err != nil {
		t.Fatal(err)
	}
	good := keys.Share.PublicKey()
	for _, h := range lowOrder {
		raw, _ := hex.DecodeString(h)
		pub, err := ecdh.X25519().NewPublicKey(raw) // crypto/ecdh checks the length only
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParsePublicKey(raw); !errors.Is(err, ErrLowOrder) {
			t.Errorf("%s: ParsePublicKey: %v, want ErrLowOrder", h, err)
		}
		if _, err := agree(keys.Share, pub); !errors.Is(err, ErrLowOrder) {
			t.Errorf("%s: agree: %v, want ErrLowOrder", h, err)
		}
		rec := ShareRecord{From: []byte("i"), To: []byte("j"), B: Share{X: 1}, S: Share{X: 1}}
		if _, err := EncryptShare(testSession, keys.Share, pub, rec, seeded(2)); !errors.Is(err, ErrLowOrder) {
			t.Errorf("%s: EncryptShare: %v, want ErrLowOrder", h, err)
		}
		if _, err := OpenShare(testSession, keys.Share, pub, []byte("i"), []byte("j"), make([]byte, 200)); !errors.Is(err, ErrLowOrder) {
			t.Errorf("%s: OpenShare: %v, want ErrLowOrder", h, err)
		}
		if _, err := Deal(testSession, []byte("i"), keys, [32]byte{}, 2, []Recipient{{[]byte("i"), good}, {[]byte("j"), pub}}, seeded(3)); !errors.Is(err, ErrLowOrder) {
			t.Errorf("%s: Deal: %v, want ErrLowOrder", h, err)
		}
		if _, err := PairMaskSeed(testSession, []byte("i"), keys.Mask, []byte("j"), pub); !errors.Is(err, ErrLowOrder) {
			t.Errorf("%s: PairMaskSeed: %v, want ErrLowOrder", h, err)
		}
		peers := []MaskPeer{{[]byte("i"), keys.Mask.PublicKey()}, {[]byte("j"), pub}}
		if _, err := Mask(testSession, []byte("i"), keys.Mask, [32]byte{}, peers, make([]uint64, 4)); !errors.Is(err, ErrLowOrder) {
			t.Errorf("%s: Mask: %v, want ErrLowOrder", h, err)
		}
		if _, err := DroppedPairs(testSession, []byte("i"), keys.Mask, peers[1:]); !errors.Is(err, ErrLowOrder) {
			t.Errorf("%s: DroppedPairs: %v, want ErrLowOrder", h, err)
		}
	}
	if _, err := ParsePublicKey(good.Bytes()); err != nil {
		t.Errorf("ParsePublicKey of a real key: %v", err)
	}
	if _, err := ParsePublicKey(good.Bytes()[:31]); !errors.Is(err, ErrBadKey) {
		t.Errorf("ParsePublicKey of 31 bytes: %v, want ErrBadKey", err)
	}
}

func TestAgree(t *testing.T) {
	a, _ := GenerateKeys(seeded(1))
	b, _ := GenerateKeys(seeded(2))
	ab, err := agree(a.Share, b.Share.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	ba, err := agree(b.Share, a.Share.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ab, ba) {
		t.Fatal("X25519 is not symmetric")
	}
	p256, err := ecdh.P256().NewPrivateKey(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		priv *ecdh.PrivateKey
		pub  *ecdh.PublicKey
	}{{nil, b.Share.PublicKey()}, {a.Share, nil}, {p256, b.Share.PublicKey()}, {a.Share, p256.PublicKey()}} {
		if _, err := agree(tc.priv, tc.pub); !errors.Is(err, ErrBadKey) {
			t.Errorf("agree(%v, %v): %v, want ErrBadKey", tc.priv, tc.pub, err)
		}
	}
}

// TestGenerateKeysFromReader: the injected reader, not a hidden source,
// decides the keys (crypto/ecdh's GenerateKey ignores its reader since Go
// 1.26), and the two key pairs of a round differ.
func TestGenerateKeysFromReader(t *testing.T) {
	k1, _ := GenerateKeys(seeded(5))
	k2, _ := GenerateKeys(seeded(5))
	k3, _ := GenerateKeys(seeded(6))
	if !k1.Share.Equal(k2.Share) || !k1.Mask.Equal(k2.Mask) {
		t.Error("the same seed gave different keys")
	}
	if k1.Share.Equal(k3.Share) || k1.Share.Equal(k1.Mask) {
		t.Error("keys repeat across seeds or between c and s")
	}
	if _, err := GenerateKeys(bytes.NewReader(make([]byte, 63))); err == nil {
		t.Error("GenerateKeys from a short reader succeeded")
	}
	if _, err := NewSelfSecret(bytes.NewReader(make([]byte, 31))); err == nil {
		t.Error("NewSelfSecret from a short reader succeeded")
	}
}

// TestCommitSelf: the commitment binds b, the round and the consortium, and
// is the hash PRIVACY.md names.
func TestCommitSelf(t *testing.T) {
	b, _ := NewSelfSecret(seeded(1))
	c := CommitSelf(testSession, b)
	other := testSession
	other.Round++
	if CommitSelf(other, b) == c {
		t.Error("commitment does not bind the round")
	}
	other = testSession
	other.Consortium[31] ^= 1
	if CommitSelf(other, b) == c {
		t.Error("commitment does not bind the consortium")
	}
	b2 := b
	b2[0] ^= 1
	if CommitSelf(testSession, b2) == c {
		t.Error("commitment does not bind b")
	}
	msg := append([]byte("gb/b"), testSession.Consortium[:]...)
	msg = append(msg, 0, 0, 0, 0, 0, 0, 0, 42) // r = 42, big-endian
	if want := sha256.Sum256(append(msg, b[:]...)); c != want {
		t.Errorf("commitment %x, want %x", c, want)
	}
}
