package round

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
)

// Kind names a gossiped message.
type Kind string

// The gossiped messages. All are small and signed by their author.
const (
	KindAnnounce Kind = "announce" // a participant's update is stored and can be fetched
	KindHave     Kind = "have"     // the author holds and has verified a blob
	KindDecline  Kind = "decline"  // a sampled member will not train this round
	KindAttest   Kind = "attest"   // the author applied a round's outcome with this model digest
	KindInvalid  Kind = "invalid"  // the author skipped an invalid entry

	// Secure aggregation (PRIVACY.md section 1, secagg.go).
	KindKeyAd  Kind = "sa-keys"   // phase 0: the author's two X25519 public keys for the round (Data)
	KindShares Kind = "sa-shares" // phase 1: the author's share blob (Digest, Length) and b-commitment (Data)
	KindInput  Kind = "sa-input"  // phase 2: the author's masked input blob (Digest, Length)
	KindEcho   Kind = "sa-echo"   // phase 3: the author applied the Unmask entry with this digest
	KindReveal Kind = "sa-reveal" // phase 3: the author's reveal blob (Digest, Length)
)

// MaxMessageBytes bounds an encoded gossip message; anything larger is malformed.
const MaxMessageBytes = 64 << 10

// Digest is a SHA-256 digest of a blob or a model.
type Digest = fedavg.Digest

// Message is a signed gossip message. Which fields are meaningful depends on
// Kind; the signature covers all of them and the consortium ID, so a message
// of one consortium, kind or round is never valid as another.
type Message struct {
	Kind     Kind            `json:"kind"`
	Round    uint64          `json:"round"`
	Base     Digest          `json:"base,omitzero"`      // announce: the model trained from
	Digest   Digest          `json:"digest,omitzero"`    // announce, have: the update; attest: the model
	Length   int64           `json:"length,omitempty"`   // announce: update bytes
	Examples int64           `json:"examples,omitempty"` // announce: example count
	Index    uint64          `json:"index,omitempty"`    // attest, invalid: log index
	Reason   string          `json:"reason,omitempty"`   // invalid, decline
	Data     []byte          `json:"data,omitempty"`     // sa-keys: c.pub | s.pub; sa-shares: the b-commitment
	Author   identity.PeerID `json:"author"`
	Sig      []byte          `json:"sig"`

	verified bool // the Gate checked the signature
}

// Errors of message and entry validation.
var (
	ErrMalformed    = errors.New("round: malformed message")
	ErrBadSignature = errors.New("round: bad signature")
)

// signedBytes is the canonical byte string a message's signature covers.
func (m *Message) signedBytes(consortium [32]byte) []byte {
	var b bytes.Buffer
	b.WriteString("globalbrain/")
	b.WriteString(string(m.Kind))
	b.WriteString("/1\x00")
	b.Write(consortium[:])
	var u [8]byte
	for _, v := range []uint64{m.Round, uint64(m.Length), uint64(m.Examples), m.Index} {
		binary.BigEndian.PutUint64(u[:], v)
		b.Write(u[:])
	}
	b.Write(m.Base[:])
	b.Write(m.Digest[:])
	binary.BigEndian.PutUint64(u[:], uint64(len(m.Reason)))
	b.Write(u[:])
	b.WriteString(m.Reason)
	if len(m.Data) > 0 { // absent from the messages that carry none: their signatures are unchanged
		binary.BigEndian.PutUint64(u[:], uint64(len(m.Data)))
		b.Write(u[:])
		b.Write(m.Data)
	}
	b.Write(m.Author)
	return b.Bytes()
}

// Sign sets the author and signature.
func (m *Message) Sign(consortium [32]byte, id identity.Identity) {
	m.Author = id.ID
	m.Sig = ed25519.Sign(id.Private, m.signedBytes(consortium))
}

// Verify checks the signature against the public key the author's peer ID embeds.
func (m *Message) Verify(consortium [32]byte) error {
	pub, err := m.Author.PublicKey()
	if err != nil {
		return fmt.Errorf("%w: author: %v", ErrMalformed, err)
	}
	if len(m.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, m.signedBytes(consortium), m.Sig) {
		return fmt.Errorf("%w: %s from %s", ErrBadSignature, m.Kind, m.Author.Short())
	}
	return nil
}

// Encode returns the message's wire form.
func (m *Message) Encode() []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // plain struct of encodable fields
	}
	return b
}

// DecodeMessage parses and checks a message's wire form (shape only; Verify
// checks the signature).
func DecodeMessage(b []byte) (*Message, error) {
	if len(b) > MaxMessageBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(b), MaxMessageBytes)
	}
	var m Message
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	switch m.Kind {
	case KindAnnounce:
		if m.Length <= 0 || m.Examples <= 0 {
			return nil, fmt.Errorf("%w: announce with length %d, examples %d", ErrMalformed, m.Length, m.Examples)
		}
	case KindHave, KindDecline, KindAttest, KindInvalid, KindEcho:
	case KindKeyAd:
		if len(m.Data) != 2*keyLen {
			return nil, fmt.Errorf("%w: sa-keys with %d bytes of keys, want %d", ErrMalformed, len(m.Data), 2*keyLen)
		}
	case KindShares:
		if len(m.Data) != 32 || m.Length <= 0 {
			return nil, fmt.Errorf("%w: sa-shares with a %d-byte commitment, length %d", ErrMalformed, len(m.Data), m.Length)
		}
	case KindInput, KindReveal:
		if m.Length <= 0 {
			return nil, fmt.Errorf("%w: %s with length %d", ErrMalformed, m.Kind, m.Length)
		}
	default:
		return nil, fmt.Errorf("%w: kind %q", ErrMalformed, m.Kind)
	}
	if len(m.Data) > 0 && m.Kind != KindKeyAd && m.Kind != KindShares {
		return nil, fmt.Errorf("%w: %s carries data", ErrMalformed, m.Kind)
	}
	if m.Round == 0 {
		return nil, fmt.Errorf("%w: round 0", ErrMalformed)
	}
	if _, err := m.Author.PublicKey(); err != nil {
		return nil, fmt.Errorf("%w: author: %v", ErrMalformed, err)
	}
	return &m, nil
}

// LogValue shows a message in logs without its signature.
func (m *Message) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("kind", string(m.Kind)),
		slog.Uint64("round", m.Round),
		slog.String("author", m.Author.Short()),
		slog.String("digest", m.Digest.String()[:12]),
		slog.Int64("examples", m.Examples),
	)
}

// sameAnnouncement reports whether two announcements say the same thing
// (an identical re-announcement is accepted; a different one is equivocation).
func sameAnnouncement(a, b *Message) bool {
	return a.Round == b.Round && a.Base == b.Base && a.Digest == b.Digest && a.Length == b.Length &&
		a.Examples == b.Examples && bytes.Equal(a.Author, b.Author)
}
