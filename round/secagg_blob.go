package round

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/privacy/dp"
	"github.com/globalbrain/globalbrain/privacy/secagg"
)

// The blobs of a secure-aggregation round. Every length is bounded before
// anything is allocated; a blob that does not parse exactly is refused.
//
//	share blob   "gb/sa-shares/1" | r (8) | count (2) | count x (id len (2) | id | box len (2) | box)
//	input blob   (dim+1) little-endian uint64: y_i = [w, w*x] + masks, mod 2^64;
//	             in mode distributed PaddedDim(dim) words: the DDG encoding + masks
//	reveal blob  "gb/sa-reveal/1" | r (8) | count (2) | count x (what (1) | id len (2) | id | x (2) | y (66))
//
// In a reveal, what is 'b' (a share of a survivor's self-mask secret) or
// 's' (a share of a dropped member's mask key), never both for one id.

const (
	shareMagic  = "gb/sa-shares/1"
	revealMagic = "gb/sa-reveal/1"
	maxIDBytes  = 64
	// shareEntryMax and revealEntryMax bound one entry of each blob.
	shareEntryMax  = 2 + maxIDBytes + 2 + 256
	revealEntryMax = 1 + 2 + maxIDBytes + 2 + secagg.ShareYSize
)

// EncodeShareBlob is participant's phase-1 blob: its sealed records, one
// per member of U1 in roster order.
func EncodeShareBlob(r uint64, sealed []secagg.Sealed) []byte {
	var b bytes.Buffer
	b.WriteString(shareMagic)
	binary.Write(&b, binary.BigEndian, r)
	binary.Write(&b, binary.BigEndian, uint16(len(sealed)))
	for _, s := range sealed {
		binary.Write(&b, binary.BigEndian, uint16(len(s.To)))
		b.Write(s.To)
		binary.Write(&b, binary.BigEndian, uint16(len(s.Box)))
		b.Write(s.Box)
	}
	return b.Bytes()
}

// reader reads a blob's fields; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errors.New("truncated")
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u16() int {
	b := r.take(2)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}

func (r *reader) u64() uint64 {
	b := r.take(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// DecodeShareBlob parses a share blob of round r into sealed records by
// recipient.
func DecodeShareBlob(r uint64, b []byte) (map[string][]byte, error) {
	rd := &reader{b: b}
	if string(rd.take(len(shareMagic))) != shareMagic || rd.u64() != r {
		return nil, fmt.Errorf("round: share blob: not a share blob of round %d", r)
	}
	n := rd.u16()
	out := make(map[string][]byte, n)
	for i := 0; i < n && rd.err == nil; i++ {
		id := rd.take(rd.u16())
		box := rd.take(rd.u16())
		if len(id) > maxIDBytes {
			return nil, errors.New("round: share blob: overlong id")
		}
		if _, dup := out[string(id)]; dup {
			return nil, errors.New("round: share blob: two records for one member")
		}
		out[string(id)] = box
	}
	if rd.err != nil || len(rd.b) != 0 {
		return nil, errors.New("round: share blob: truncated or trailing bytes")
	}
	return out, nil
}

// RevealShare is one share a revealer publishes: of b_j (survivor) or of
// s_j (dropped).
type RevealShare struct {
	Of    identity.PeerID
	Mask  bool // a share of s_j; false: of b_j
	Share secagg.Share
}

// EncodeRevealBlob is a participant's phase-3 blob.
func EncodeRevealBlob(r uint64, shares []RevealShare) []byte {
	var b bytes.Buffer
	b.WriteString(revealMagic)
	binary.Write(&b, binary.BigEndian, r)
	binary.Write(&b, binary.BigEndian, uint16(len(shares)))
	for _, s := range shares {
		what := byte('b')
		if s.Mask {
			what = 's'
		}
		b.WriteByte(what)
		binary.Write(&b, binary.BigEndian, uint16(len(s.Of)))
		b.Write(s.Of)
		binary.Write(&b, binary.BigEndian, s.Share.X)
		b.Write(s.Share.Y[:])
	}
	return b.Bytes()
}

// DecodeRevealBlob parses a reveal blob of round r.
func DecodeRevealBlob(r uint64, b []byte) ([]RevealShare, error) {
	rd := &reader{b: b}
	if string(rd.take(len(revealMagic))) != revealMagic || rd.u64() != r {
		return nil, fmt.Errorf("round: reveal blob: not a reveal blob of round %d", r)
	}
	n := rd.u16()
	out := make([]RevealShare, 0, min(n, 1024))
	seen := map[string]bool{}
	for i := 0; i < n && rd.err == nil; i++ {
		what := rd.take(1)
		id := rd.take(rd.u16())
		x := rd.u16()
		y := rd.take(secagg.ShareYSize)
		if rd.err != nil {
			break
		}
		if len(id) > maxIDBytes || (what[0] != 'b' && what[0] != 's') {
			return nil, errors.New("round: reveal blob: bad entry")
		}
		if seen[string(id)] {
			return nil, fmt.Errorf("round: reveal blob: two shares of %s (never both of one member)", identity.PeerID(id).Short())
		}
		seen[string(id)] = true
		s := RevealShare{Of: identity.PeerID(bytes.Clone(id)), Mask: what[0] == 's', Share: secagg.Share{X: uint16(x)}}
		copy(s.Share.Y[:], y)
		out = append(out, s)
	}
	if rd.err != nil || len(rd.b) != 0 {
		return nil, errors.New("round: reveal blob: truncated or trailing bytes")
	}
	return out, nil
}

// CheckBlob is the edge check of a blob an announcement of kind named for
// round r, before it is stored or vouched for: an update decodes to the
// model's finite floats (CheckUpdate), a share or reveal blob parses
// exactly, a masked input has InputWords words.
func (p *Params) CheckBlob(kind Kind, r uint64, b []byte) error {
	dim := int(p.UpdateBytes / 4)
	var err error
	switch kind {
	case KindAnnounce:
		err = CheckUpdate(b, dim)
	case KindShares:
		_, err = DecodeShareBlob(r, b)
	case KindReveal:
		_, err = DecodeRevealBlob(r, b)
	case KindInput:
		words := dim + 1
		if p.SecAgg != nil {
			words = p.SecAgg.InputWords(dim)
		}
		if len(b) != 8*words {
			err = fmt.Errorf("round: input blob of %d bytes, want %d", len(b), 8*words)
		}
	}
	return err
}

// RotationSeed is the public seed of the distributed mode's rotation in
// round r from base: every participant encodes, and every member decodes,
// with NewRotation(RotationSeed(...)).
func RotationSeed(consortium [32]byte, r uint64, base Digest) [32]byte {
	h := sha256.New()
	h.Write([]byte("gb/dp/rotation/1\x00"))
	h.Write(consortium[:])
	h.Write(binary.BigEndian.AppendUint64(nil, r))
	h.Write(base[:])
	return [32]byte(h.Sum(nil))
}

// EncodeInput and DecodeInput convert a masked input to and from its blob.
func EncodeInput(y []uint64) []byte {
	b := make([]byte, 8*len(y))
	for i, v := range y {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	return b
}

// DecodeInput reads a masked input of words words (dim+1).
func DecodeInput(b []byte, words int) ([]uint64, error) {
	if len(b) != 8*words {
		return nil, fmt.Errorf("round: input blob of %d bytes, want %d", len(b), 8*words)
	}
	y := make([]uint64, words)
	for i := range y {
		y[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return y, nil
}

// KeyAdKeys returns the two public keys a KeyAd advertises: c (shares) and
// s (masks).
func KeyAdKeys(a *Message) (c, s *ecdh.PublicKey, err error) {
	if len(a.Data) != 2*keyLen {
		return nil, nil, fmt.Errorf("round: KeyAd of %s: %d bytes", a.Author.Short(), len(a.Data))
	}
	if c, err = secagg.ParsePublicKey(a.Data[:keyLen]); err != nil {
		return nil, nil, err
	}
	s, err = secagg.ParsePublicKey(a.Data[keyLen:])
	return c, s, err
}

// SecAggOutcome computes G(r) of a secure-aggregation Commit: the sum of
// U3's masked inputs, unmasked with the secrets the t reveals rebuild
// (every rebuilt b_j checked against its commitment, every s_j against its
// KeyAd), decoded within the encoding's bounds, and the mean update handed
// to the strategy as one. A missing blob is a *MissingBlobError; any other
// error names what failed, and the round is abandoned.
func SecAggOutcome(s fedavg.Strategy, base *fedavg.Global, consortium [32]byte, p *SecAggParams, v *SecAggView, blobs BlobSource) (*fedavg.Global, error) {
	sess := v.Session(consortium)
	dim := len(base.Weights)
	words := p.InputWords(dim)
	var missing []Digest
	get := func(d Digest) []byte {
		b, ok := blobs(d)
		if !ok {
			missing = append(missing, d)
			return nil
		}
		return b
	}
	// The inputs are added mod 2^64 as they are read (blobs verifies
	// them): one sum in memory, not |U3| decoded inputs.
	sum := make([]uint64, words)
	for _, in := range v.Inputs {
		if b := get(in.Digest); b != nil {
			if len(b) != 8*words {
				return nil, fmt.Errorf("round: input blob of %s: %d bytes, want %d", in.Author.Short(), len(b), 8*words)
			}
			for i := range sum {
				sum[i] += binary.LittleEndian.Uint64(b[8*i:])
			}
		}
	}
	reveals := make([][]RevealShare, len(v.Reveals))
	for i, r := range v.Reveals {
		if b := get(r.Digest); b != nil {
			rs, err := DecodeRevealBlob(v.Round, b)
			if err != nil {
				return nil, fmt.Errorf("reveal of %s: %w", r.Author.Short(), err)
			}
			reveals[i] = rs
		}
	}
	if len(missing) > 0 {
		return nil, &MissingBlobError{Digests: missing}
	}
	u1 := make([][]byte, len(v.KeyAds))
	keys := map[string][2]*ecdh.PublicKey{}
	for i, a := range v.KeyAds {
		u1[i] = a.Author
		c, sk, err := KeyAdKeys(a)
		if err != nil {
			return nil, err
		}
		keys[string(a.Author)] = [2]*ecdh.PublicKey{c, sk}
	}
	roster, err := secagg.NewRoster(u1)
	if err != nil {
		return nil, err
	}
	// The shares each revealer holds: its x in U1's roster.
	collect := func(of identity.PeerID, mask bool) ([]secagg.Share, error) {
		out := make([]secagg.Share, 0, len(v.Reveals))
		for i, r := range v.Reveals {
			x, _ := roster.X(r.Author)
			found := false
			for _, rs := range reveals[i] {
				if bytes.Equal(rs.Of, of) {
					if rs.Mask != mask {
						return nil, fmt.Errorf("%s revealed the wrong secret of %s", r.Author.Short(), of.Short())
					}
					if rs.Share.X != x {
						return nil, fmt.Errorf("%s revealed a share at x %d, its own is %d", r.Author.Short(), rs.Share.X, x)
					}
					out = append(out, rs.Share)
					found = true
				}
			}
			if !found {
				return nil, fmt.Errorf("%s revealed no share of %s", r.Author.Short(), of.Short())
			}
		}
		return out, nil
	}
	survivors := make([]secagg.MaskPeer, len(v.Inputs))
	var seeds []secagg.Seed
	commitments := map[string][32]byte{}
	for _, sh := range v.Shares {
		commitments[string(sh.Author)] = [32]byte(sh.Data)
	}
	for i, in := range v.Inputs {
		survivors[i] = secagg.MaskPeer{ID: in.Author, MaskPub: keys[string(in.Author)][1]}
		shares, err := collect(in.Author, false)
		if err != nil {
			return nil, err
		}
		b, err := secagg.RebuildSelfSecret(sess, shares, v.T, commitments[string(in.Author)])
		if err != nil {
			return nil, fmt.Errorf("self secret of %s: %w", in.Author.Short(), err)
		}
		seeds = append(seeds, secagg.SelfMaskSeed(sess, b))
	}
	var pairs []secagg.DroppedPair
	for _, d := range v.Dropped() {
		shares, err := collect(d.Author, true)
		if err != nil {
			return nil, err
		}
		key, err := secagg.RebuildMaskKey(shares, v.T, keys[string(d.Author)][1])
		if err != nil {
			return nil, fmt.Errorf("mask key of %s: %w", d.Author.Short(), err)
		}
		ps, err := secagg.DroppedPairs(sess, d.Author, key, survivors)
		if err != nil {
			return nil, err
		}
		pairs = append(pairs, ps...)
	}
	plain, err := secagg.Unmask(sum, seeds, pairs)
	if err != nil {
		return nil, err
	}
	var mean []float32
	var examples int64
	if v.Noise != nil {
		mean, examples = decodeDistributed(v, consortium, plain, dim)
	} else {
		w, wx, err := p.Encoding.Decode(plain, len(v.Inputs))
		if err != nil {
			return nil, err
		}
		if !(w > 0) {
			return nil, errors.New("round: secure aggregation: total weight 0")
		}
		mean = make([]float32, dim)
		for i := range mean {
			mean[i] = float32(wx[i] / w)
		}
		examples = int64(math.Round(w))
	}
	next, err := s.Aggregate(v.Round, base, []fedavg.Update{{Peer: identity.PeerID("secagg-sum"), Delta: mean, Examples: examples}})
	if err != nil {
		return nil, err
	}
	if next == nil {
		return base, nil
	}
	return next, nil
}

// decodeDistributed is the distributed mode's result: the unweighted mean
// of U3's DDG encodings, its sum bounded (dp.DistributedNoise.SumBound: a
// sum past what |U3| inputs within the clip and their noise reach, which
// only a participant that did not encode honestly can cause, is scaled
// down onto the bound, so such a participant moves the model at most that
// far and cannot stall the round). Its weight for the strategy is |U3|.
func decodeDistributed(v *SecAggView, consortium [32]byte, plain []uint64, dim int) ([]float32, int64) {
	n := len(v.Inputs)
	rot := dp.NewRotation(RotationSeed(consortium, v.Round, v.Base), dim)
	x := v.Noise.DecodeSum(plain, rot)
	bound := v.Noise.SumBound(dim, n)
	var sq float64
	for _, f := range x {
		sq += float64(f * f)
	}
	scale := float64(1)
	if norm := math.Sqrt(sq); norm > bound {
		scale = bound / norm
	}
	mean := make([]float32, dim)
	for j, f := range x {
		mean[j] = float32(float64(f*scale) / float64(n))
	}
	return mean, int64(n)
}
