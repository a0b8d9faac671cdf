package secagg

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Phase 1 of PRIVACY.md: each participant i seals, for every j in U1, the
// record (i, j, j's share of b_i, j's share of s_i) under a key only i and j
// can derive, bound to the consortium, the round and the direction i -> j.

// ShareRecord is what participant From deals participant To in phase 1:
// To's share of From's self-mask secret b_i (B) and of the private key of
// From's mask key pair s_i (S). Both shares have To's x-coordinate.
type ShareRecord struct {
	From, To []byte // id_i, id_j
	B, S     Share
}

// NonceSize is the size of the random AES-GCM nonce that starts a sealed
// record.
const NonceSize = 12

// Errors of the share boxes. Test for them with errors.Is.
var (
	// ErrOpen reports a sealed record that does not open: tampered,
	// truncated, sealed for another direction, round or consortium, or under
	// other keys.
	ErrOpen = errors.New("secagg: share record does not open")
	// ErrRecord reports a record that opened but does not say what the
	// caller expected (sender, recipient, x-coordinate).
	ErrRecord = errors.New("secagg: share record is not the expected one")
	// ErrCommitMismatch reports a rebuilt b_j that does not match its
	// phase-1 commitment.
	ErrCommitMismatch = errors.New("secagg: rebuilt b does not match its commitment")
	// ErrKeyMismatch reports a rebuilt s_j whose public key is not the one
	// its KeyAd advertised.
	ErrKeyMismatch = errors.New("secagg: rebuilt mask key does not match its KeyAd")
)

// shareAEAD derives k_ij from X25519(c_i, c_j.pub) and returns the AES-256-GCM
// AEAD under it with the record's AAD. Either side can call it: own is the
// caller's c, peer the other side's c.pub; from and to fix the direction.
func shareAEAD(s Session, own *ecdh.PrivateKey, peer *ecdh.PublicKey, from, to []byte) (cipher.AEAD, []byte, error) {
	if err := checkID(from); err != nil {
		return nil, nil, err
	}
	if err := checkID(to); err != nil {
		return nil, nil, err
	}
	z, err := agree(own, peer)
	if err != nil {
		return nil, nil, err
	}
	info := make([]byte, 0, 17+8+4+len(from)+len(to))
	info = append(info, "gb/secagg/share/1"...)
	info = s.appendRound(info)
	info = appendID(info, from)
	info = appendID(info, to)
	key := mustHKDF(z, s.Consortium[:], info)
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 32-byte key
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err) // the standard nonce and tag sizes
	}
	aad := make([]byte, 0, 32+8+4+len(from)+len(to))
	aad = s.append(aad)
	aad = appendID(aad, from)
	aad = appendID(aad, to)
	return aead, aad, nil
}

// EncryptShare seals rec from rec.From to rec.To (phase 1): c is the
// sender's Keys.Share, toPub the recipient's advertised c_j.pub. The result
// is the 12-byte nonce, drawn from rand, followed by the AES-256-GCM
// ciphertext and tag. It fails with ErrLowOrder for a low-order toPub.
func EncryptShare(s Session, c *ecdh.PrivateKey, toPub *ecdh.PublicKey, rec ShareRecord, rand io.Reader) ([]byte, error) {
	if rec.B.X != rec.S.X || rec.B.X == 0 {
		return nil, fmt.Errorf("%w: shares at x = %d and %d", ErrRecord, rec.B.X, rec.S.X)
	}
	aead, aad, err := shareAEAD(s, c, toPub, rec.From, rec.To)
	if err != nil {
		return nil, err
	}
	plain := make([]byte, 0, 4+len(rec.From)+len(rec.To)+2+2*ShareYSize)
	plain = appendID(plain, rec.From)
	plain = appendID(plain, rec.To)
	plain = binary.BigEndian.AppendUint16(plain, rec.B.X)
	plain = append(plain, rec.B.Y[:]...)
	plain = append(plain, rec.S.Y[:]...)
	out := make([]byte, NonceSize, NonceSize+len(plain)+aead.Overhead())
	if _, err := io.ReadFull(rand, out); err != nil {
		return nil, fmt.Errorf("secagg: reading a nonce: %w", err)
	}
	return aead.Seal(out, out, plain, aad), nil
}

// OpenShare opens the record from sent to to (phase 1, on receipt, or
// phase 3 when revealing): c is the recipient's Keys.Share, fromPub the
// sender's advertised c_i.pub. It fails with ErrOpen for anything that was
// not sealed by from for to in this session, and with ErrRecord when the
// record inside names other members.
func OpenShare(s Session, c *ecdh.PrivateKey, fromPub *ecdh.PublicKey, from, to []byte, box []byte) (ShareRecord, error) {
	aead, aad, err := shareAEAD(s, c, fromPub, from, to)
	if err != nil {
		return ShareRecord{}, err
	}
	if len(box) < NonceSize+aead.Overhead() {
		return ShareRecord{}, fmt.Errorf("%w: %d bytes", ErrOpen, len(box))
	}
	plain, err := aead.Open(nil, box[:NonceSize], box[NonceSize:], aad)
	if err != nil {
		return ShareRecord{}, ErrOpen
	}
	rec, ok := parseRecord(plain)
	if !ok || !bytes.Equal(rec.From, from) || !bytes.Equal(rec.To, to) {
		return ShareRecord{}, ErrRecord
	}
	return rec, nil
}

func parseRecord(p []byte) (ShareRecord, bool) {
	var rec ShareRecord
	var ok bool
	if rec.From, p, ok = readID(p); !ok {
		return rec, false
	}
	if rec.To, p, ok = readID(p); !ok {
		return rec, false
	}
	if len(p) != 2+2*ShareYSize {
		return rec, false
	}
	rec.B.X = binary.BigEndian.Uint16(p)
	rec.S.X = rec.B.X
	copy(rec.B.Y[:], p[2:])
	copy(rec.S.Y[:], p[2+ShareYSize:])
	return rec, rec.B.X != 0
}

func readID(p []byte) (id, rest []byte, ok bool) {
	if len(p) < 2 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(p))
	if n == 0 || len(p) < 2+n {
		return nil, nil, false
	}
	return bytes.Clone(p[2 : 2+n]), p[2+n:], true
}

// Recipient is a member of U1 as phase 1 needs it: its ID and the public
// key of its c_j from its KeyAd.
type Recipient struct {
	ID       []byte
	SharePub *ecdh.PublicKey
}

// Sealed is one sealed record of a Deal, for member To.
type Sealed struct {
	To  []byte
	Box []byte
}

// Deal is phase 1 for participant self: it splits b and the private key of
// keys.Mask t-of-|U1| with the x-coordinates of the Roster of u1, and seals
// each member's pair of shares, its own included (Bonawitz et al. deal to
// every j in U1). The result is in roster order, so Sealed k is for the
// member with x = k+1; the blob that carries it is the caller's. self must
// be in u1.
func Deal(s Session, self []byte, keys Keys, b [32]byte, t int, u1 []Recipient, rand io.Reader) ([]Sealed, error) {
	ids := make([][]byte, len(u1))
	pubs := make(map[string]*ecdh.PublicKey, len(u1))
	for i, r := range u1 {
		ids[i] = r.ID
		pubs[string(r.ID)] = r.SharePub
	}
	roster, err := NewRoster(ids)
	if err != nil {
		return nil, err
	}
	if _, ok := roster.X(self); !ok {
		return nil, fmt.Errorf("%w: the dealer %x is not in U1", ErrBadID, self)
	}
	if keys.Mask == nil || keys.Mask.Curve() != ecdh.X25519() {
		return nil, ErrBadKey
	}
	bShares, err := Split(b, t, roster.Len(), rand)
	if err != nil {
		return nil, err
	}
	sShares, err := Split([32]byte(keys.Mask.Bytes()), t, roster.Len(), rand)
	if err != nil {
		return nil, err
	}
	out := make([]Sealed, roster.Len())
	for k, to := range roster.ids {
		rec := ShareRecord{From: self, To: to, B: bShares[k], S: sShares[k]}
		box, err := EncryptShare(s, keys.Share, pubs[string(to)], rec, rand)
		if err != nil {
			return nil, fmt.Errorf("secagg: sealing for %x: %w", to, err)
		}
		out[k] = Sealed{To: bytes.Clone(to), Box: box}
	}
	return out, nil
}

// RebuildSelfSecret rebuilds a survivor's b_j from revealed shares
// (phase 3; Combine says which shares count) and checks it against the
// commitment the Shares entry holds for it: ErrCommitMismatch otherwise.
func RebuildSelfSecret(s Session, shares []Share, t int, commitment [32]byte) ([32]byte, error) {
	b, err := Combine(shares, t)
	if err != nil {
		return b, err
	}
	if CommitSelf(s, b) != commitment {
		return [32]byte{}, ErrCommitMismatch
	}
	return b, nil
}

// RebuildMaskKey rebuilds a dropped member's mask private key s_j from
// revealed shares (phase 3) and checks that its public key is the one the
// member advertised: ErrKeyMismatch otherwise.
func RebuildMaskKey(shares []Share, t int, pub *ecdh.PublicKey) (*ecdh.PrivateKey, error) {
	if pub == nil || pub.Curve() != ecdh.X25519() {
		return nil, ErrBadKey
	}
	k, err := Combine(shares, t)
	if err != nil {
		return nil, err
	}
	priv, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil {
		return nil, err
	}
	if !priv.PublicKey().Equal(pub) {
		return nil, ErrKeyMismatch
	}
	return priv, nil
}

// mustHKDF is HKDF-SHA256 to 32 bytes, which cannot fail.
func mustHKDF(secret, salt, info []byte) [32]byte {
	k, err := hkdf.Key(sha256.New, secret, salt, string(info), 32)
	if err != nil {
		panic(err)
	}
	return [32]byte(k)
}
