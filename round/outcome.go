package round

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/globalbrain/globalbrain/fedavg"
)

// EncodeUpdate is an update's blob: the float32 delta, little-endian.
func EncodeUpdate(delta []float32) []byte {
	b := make([]byte, 4*len(delta))
	for i, v := range delta {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// DecodeUpdate parses an update blob of dim parameters.
func DecodeUpdate(b []byte, dim int) ([]float32, error) {
	if len(b) != 4*dim {
		return nil, fmt.Errorf("%w: update of %d bytes, want %d", fedavg.ErrDimension, len(b), 4*dim)
	}
	d := make([]float32, dim)
	for i := range d {
		d[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return d, nil
}

// CheckUpdate checks an update blob at the edge, before any member holds
// it as a Have: dim float32 values, every one finite. An update that fails
// costs its author its inclusion (Machine.BadBlob), never the round.
func CheckUpdate(b []byte, dim int) error {
	d, err := DecodeUpdate(b, dim)
	if err != nil {
		return err
	}
	return fedavg.Validate(fedavg.Update{Delta: d, Examples: 1}, dim, 0)
}

// BlobSource returns a verified blob by digest; ok is false when it is not held.
type BlobSource func(Digest) (b []byte, ok bool)

// MissingBlobError names the blobs an outcome needs that are not held yet.
type MissingBlobError struct{ Digests []Digest }

func (e *MissingBlobError) Error() string {
	return fmt.Sprintf("round: %d blobs missing", len(e.Digests))
}

// Outcome computes G(r) for a Commit from G(r-1) and the update blobs its
// inclusions name, validating every update at the edge. An Abandon keeps base.
// It is the one function both the leader (before proposing) and every member
// (before applying) run, so they agree to the bit.
func Outcome(s fedavg.Strategy, base *fedavg.Global, r uint64, included []*Message, maxExamples int64, blobs BlobSource) (*fedavg.Global, error) {
	if len(included) == 0 {
		return base, nil
	}
	var missing []Digest
	ups := make([]fedavg.Update, 0, len(included))
	for _, a := range included {
		b, ok := blobs(a.Digest)
		if !ok {
			missing = append(missing, a.Digest)
			continue
		}
		if fedavg.DigestBytes(b) != a.Digest {
			return nil, fmt.Errorf("round: blob %s does not match its digest", a.Digest.String()[:12])
		}
		d, err := DecodeUpdate(b, len(base.Weights))
		if err != nil {
			return nil, err
		}
		u := fedavg.Update{Peer: a.Author, Delta: d, Examples: a.Examples}
		if err := fedavg.Validate(u, len(base.Weights), maxExamples); err != nil {
			return nil, fmt.Errorf("round %d: update of %s: %w", r, a.Author.Short(), err)
		}
		ups = append(ups, u)
	}
	if len(missing) > 0 {
		return nil, &MissingBlobError{Digests: missing}
	}
	next, err := s.Aggregate(r, base, ups)
	if err != nil {
		return nil, err
	}
	if next == nil {
		return base, nil // the strategy made no new model: G(r) = G(r-1)
	}
	return next, nil
}
