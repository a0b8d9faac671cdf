package fedavg

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
)

// Errors returned for updates that fail validation at the edge or inside
// Aggregate. They are wrapped with the peer and the offending value; test
// for them with errors.Is.
var (
	ErrDimension       = errors.New("fedavg: dimension mismatch")
	ErrNonFinite       = errors.New("fedavg: non-finite value")
	ErrNoExamples      = errors.New("fedavg: no examples")
	ErrDuplicatePeer   = errors.New("fedavg: duplicate peer")
	ErrTooManyExamples = errors.New("fedavg: too many examples")
)

// Update is one member's contribution to a round: the float32 delta (local
// weights minus global weights) exactly as published, and the number of
// examples it was trained on. Strategies order updates by
// bytes.Compare(Peer), so the order in which they arrived never matters.
type Update struct {
	Peer     []byte // peer ID bytes
	Delta    []float32
	Examples int64
}

// LogValue implements slog.LogValuer. It shows the peer, the dimension, the
// example count and a digest of the delta, never the weights themselves.
// The digest is the SHA-256 of the delta as little-endian float32 (the first
// 8 bytes, in hex); computing it reads the whole delta, which only happens
// when a handler actually emits the record.
func (u Update) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("peer", peerString(u.Peer)),
		slog.Int("dim", len(u.Delta)),
		slog.Int64("examples", u.Examples),
		slog.String("delta", deltaDigest(u.Delta).short()),
	)
}

// ExamplesError reports an update whose example count is above the cap
// (max_examples_per_member). The count is never clamped: an update that
// claims more examples than allowed is rejected.
type ExamplesError struct {
	Peer     []byte
	Got, Max int64
}

func (e *ExamplesError) Error() string {
	return fmt.Sprintf("fedavg: peer %s: %d examples exceed the cap of %d", peerString(e.Peer), e.Got, e.Max)
}

// Is reports whether target is ErrTooManyExamples.
func (e *ExamplesError) Is(target error) bool { return target == ErrTooManyExamples }

// Validate checks an untrusted update at the edge: the delta has dim values,
// all of them finite, and the example count is in [1, maxExamples]
// (maxExamples <= 0 means no cap). A count above the cap is an
// *ExamplesError. Kernels assume validated input.
func Validate(u Update, dim int, maxExamples int64) error {
	if len(u.Delta) != dim {
		return fmt.Errorf("%w: peer %s sent %d values, want %d", ErrDimension, peerString(u.Peer), len(u.Delta), dim)
	}
	if u.Examples < 1 {
		return fmt.Errorf("%w: peer %s claims %d examples", ErrNoExamples, peerString(u.Peer), u.Examples)
	}
	if maxExamples > 0 && u.Examples > maxExamples {
		return &ExamplesError{Peer: u.Peer, Got: u.Examples, Max: maxExamples}
	}
	if i := firstNonFinite(u.Delta); i >= 0 {
		return fmt.Errorf("%w: peer %s: delta[%d] = %v", ErrNonFinite, peerString(u.Peer), i, u.Delta[i])
	}
	return nil
}

// firstNonFinite returns the index of the first NaN or ±Inf in xs, or -1.
func firstNonFinite(xs []float32) int {
	for i, x := range xs {
		if math.Float32bits(x)&0x7f800000 == 0x7f800000 {
			return i
		}
	}
	return -1
}

// peerString renders a peer ID for errors and logs. libp2p peer IDs are
// multihashes whose first bytes are a header shared by every peer of a key
// type, so the distinguishing part is the end: short IDs are shown whole,
// longer ones as ".." and the hex of their last 6 bytes.
func peerString(p []byte) string {
	const tail = 6
	if len(p) <= 2*tail {
		return hex.EncodeToString(p)
	}
	return ".." + hex.EncodeToString(p[len(p)-tail:])
}

// deltaDigest is the SHA-256 of xs as little-endian float32, computed in
// chunks so that no copy of the delta is made.
func deltaDigest(xs []float32) Digest {
	h := sha256.New()
	var buf [8192]byte
	for len(xs) > 0 {
		n := min(len(xs), len(buf)/4)
		for i, x := range xs[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(x))
		}
		h.Write(buf[:4*n])
		xs = xs[n:]
	}
	var d Digest
	h.Sum(d[:0])
	return d
}
