package secagg

import (
	"crypto/ecdh"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Session names one round of one consortium. Every key, seed, record and
// commitment of this package is bound to it, so nothing made for one round
// or consortium opens or cancels in another.
type Session struct {
	Consortium [32]byte // the consortium ID (manifest.ConsortiumID); the HKDF salt
	Round      uint64   // r
}

// Errors about keys and peer IDs. Test for them with errors.Is.
var (
	// ErrLowOrder reports an X25519 agreement whose output is all zero: the
	// other side's public key is a low-order point, which would make the
	// "shared" secret known to everyone. PRIVACY.md phase 1 rejects it.
	ErrLowOrder = errors.New("secagg: X25519 agreement is all zero (low-order public key)")
	// ErrBadKey reports a missing key or a key of another curve than X25519.
	ErrBadKey = errors.New("secagg: not an X25519 key")
	// ErrBadID reports an empty peer ID, one longer than MaxIDLen, or two
	// members with the same ID where two different ones are needed.
	ErrBadID = errors.New("secagg: bad peer ID")
)

// MaxIDLen is the longest peer ID this package frames (its length is
// written in 2 bytes). libp2p Ed25519 peer IDs are 38 bytes.
const MaxIDLen = math.MaxUint16

// Keys is a participant's two fresh X25519 key pairs for one round, made in
// PRIVACY.md phase 0 and advertised in its KeyAd: Share is c_i, under whose
// public key the others seal the shares they send it, and Mask is s_i, from
// which the pairwise mask seeds are agreed. Mask's private key is the one
// secret besides b_i that the participant splits in phase 1.
type Keys struct {
	Share *ecdh.PrivateKey // c_i
	Mask  *ecdh.PrivateKey // s_i
}

// GenerateKeys makes the round's two key pairs (phase 0) from 64 bytes of
// rand. It reads the private keys from rand itself rather than calling
// ecdh's GenerateKey, which since Go 1.26 ignores its reader: that way the
// injected reader decides the keys, and a seeded one replays them.
func GenerateKeys(rand io.Reader) (Keys, error) {
	c, err := newPrivateKey(rand)
	if err != nil {
		return Keys{}, err
	}
	s, err := newPrivateKey(rand)
	if err != nil {
		return Keys{}, err
	}
	return Keys{Share: c, Mask: s}, nil
}

func newPrivateKey(rand io.Reader) (*ecdh.PrivateKey, error) {
	var k [32]byte
	if _, err := io.ReadFull(rand, k[:]); err != nil {
		return nil, fmt.Errorf("secagg: reading a private key: %w", err)
	}
	return ecdh.X25519().NewPrivateKey(k[:])
}

// probe is a fixed X25519 scalar ParsePublicKey agrees with to detect
// low-order points: a clamped scalar is a multiple of the cofactor 8, so
// the agreement with a point of order 1, 2, 4 or 8 is all zero whatever the
// scalar, and with any other point it is not.
var probe = func() *ecdh.PrivateKey {
	h := sha256.Sum256([]byte("gb/secagg/probe/1"))
	k, err := ecdh.X25519().NewPrivateKey(h[:])
	if err != nil {
		panic(err)
	}
	return k
}()

// ParsePublicKey reads a 32-byte X25519 public key from a KeyAd (phase 0)
// and refuses one whose agreement with any key is all zero (ErrLowOrder),
// so a bad key is caught when advertised rather than when first used. The
// functions that agree keys check again; they need not be handed parsed keys.
func ParsePublicKey(b []byte) (*ecdh.PublicKey, error) {
	pub, err := ecdh.X25519().NewPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	if _, err := agree(probe, pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// agree is the X25519 agreement of PRIVACY.md phases 1 and 2, with an
// all-zero output rejected. crypto/ecdh already refuses it; the explicit
// constant-time check keeps the rule here whatever the library does.
func agree(priv *ecdh.PrivateKey, pub *ecdh.PublicKey) ([]byte, error) {
	if priv == nil || pub == nil || priv.Curve() != ecdh.X25519() || pub.Curve() != ecdh.X25519() {
		return nil, ErrBadKey
	}
	z, err := priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLowOrder, err)
	}
	var zero [32]byte
	if len(z) != len(zero) || subtle.ConstantTimeCompare(z, zero[:]) == 1 {
		return nil, ErrLowOrder
	}
	return z, nil
}

// NewSelfSecret draws b_i, the 32-byte self-mask secret of phase 1, from
// rand.
func NewSelfSecret(rand io.Reader) ([32]byte, error) {
	var b [32]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return b, fmt.Errorf("secagg: reading b_i: %w", err)
	}
	return b, nil
}

// CommitSelf is the phase-1 commitment to b_i that a participant gossips
// and the leader puts in Shares: SHA-256("gb/b" | consortium ID | r | b_i).
// A b_j rebuilt in phase 3 must match it (RebuildSelfSecret).
func CommitSelf(s Session, b [32]byte) [32]byte {
	buf := make([]byte, 0, 4+32+8+32)
	buf = append(buf, "gb/b"...)
	buf = s.append(buf)
	buf = append(buf, b[:]...)
	return sha256.Sum256(buf)
}

// append appends consortium ID | r.
func (s Session) append(dst []byte) []byte {
	dst = append(dst, s.Consortium[:]...)
	return binary.BigEndian.AppendUint64(dst, s.Round)
}

// appendRound appends r alone.
func (s Session) appendRound(dst []byte) []byte {
	return binary.BigEndian.AppendUint64(dst, s.Round)
}

// appendID appends a peer ID as a 2-byte big-endian length and its bytes.
func appendID(dst, id []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(id)))
	return append(dst, id...)
}

func checkID(id []byte) error {
	if len(id) == 0 || len(id) > MaxIDLen {
		return fmt.Errorf("%w: length %d", ErrBadID, len(id))
	}
	return nil
}
