// Package identity owns a member's Ed25519 identity and the peer ID derived
// from it. The peer ID is computed exactly as libp2p computes it for an
// Ed25519 key (the identity multihash of the protobuf-encoded public key), so
// the key that signs announcements is the key of the member's libp2p host,
// and peer IDs order the same way everywhere (bytes.Compare on ID bytes).
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// PeerID is the binary form of a libp2p peer ID.
type PeerID []byte

// Identity is a member's signing key and the peer ID it implies.
type Identity struct {
	Private ed25519.PrivateKey
	Public  ed25519.PublicKey
	ID      PeerID
}

// ErrBadPeerID reports a peer ID that is not the identity multihash of an
// Ed25519 public key.
var ErrBadPeerID = errors.New("identity: not an Ed25519 peer ID")

// keyPrefix is the identity multihash header (code 0x00, length 36) followed
// by the protobuf PublicKey header (field 1 KeyType=Ed25519, field 2 Data of
// 32 bytes), as libp2p encodes an Ed25519 public key.
var keyPrefix = []byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}

// FromSeed builds an identity from a 32-byte Ed25519 seed.
func FromSeed(seed []byte) Identity {
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	return Identity{Private: priv, Public: pub, ID: PeerIDFromPublicKey(pub)}
}

// Derive returns member i's identity in a simulation seeded with seed. It is
// a pure function of (seed, i), so a simulation can be replayed to the bit.
func Derive(seed uint64, i int) Identity {
	var buf [8 + 8]byte
	binary.BigEndian.PutUint64(buf[:8], seed)
	binary.BigEndian.PutUint64(buf[8:], uint64(i))
	h := sha256.Sum256(append([]byte("globalbrain/sim/identity/1"), buf[:]...))
	return FromSeed(h[:])
}

// PeerIDFromPublicKey returns the libp2p peer ID of an Ed25519 public key.
func PeerIDFromPublicKey(pub ed25519.PublicKey) PeerID {
	id := make(PeerID, 0, len(keyPrefix)+len(pub))
	id = append(id, keyPrefix...)
	return append(id, pub...)
}

// PublicKey extracts the Ed25519 public key a peer ID embeds.
func (p PeerID) PublicKey() (ed25519.PublicKey, error) {
	if len(p) != len(keyPrefix)+ed25519.PublicKeySize || !bytes.HasPrefix(p, keyPrefix) {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadPeerID, len(p))
	}
	return ed25519.PublicKey(bytes.Clone(p[len(keyPrefix):])), nil
}

// String returns the peer ID in libp2p's text form (base58btc).
func (p PeerID) String() string { return base58Encode(p) }

// Short returns the last 6 characters of the text form, for tables and logs.
func (p PeerID) Short() string {
	s := p.String()
	if len(s) <= 6 {
		return s
	}
	return s[len(s)-6:]
}

// Compare orders peer IDs by their bytes; every aggregation uses this order.
func Compare(a, b PeerID) int { return bytes.Compare(a, b) }

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// ParsePeerID parses the text form of a peer ID.
func ParsePeerID(s string) (PeerID, error) {
	b, err := base58Decode(s)
	if err != nil {
		return nil, fmt.Errorf("identity: peer ID %q: %w", s, err)
	}
	id := PeerID(b)
	if _, err := id.PublicKey(); err != nil {
		return nil, fmt.Errorf("identity: peer ID %q: %w", s, err)
	}
	return id, nil
}
