package fedavg

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"slices"
)

// Global is G, the global model members agree on: the weights plus the
// strategy's state (FedAvgM momentum, FedAdam moments). All of it is part of
// the canonical encoding and therefore of the digest, so a member that
// installs G from a snapshot continues exactly where the others are.
type Global struct {
	Weights []float32
	State   State
}

// State is the server-side strategy state carried in G.
//
// Strategy names the strategy that produced G and Step counts the models it
// has produced in a row (it restarts at 1 when the strategy changes). Vectors
// holds the strategy's per-coordinate state, each of len(Weights), in an order
// the strategy defines: none for fedavg, median, trimmedmean, krum and
// multikrum; [momentum] for fedavgm; [m, v] (first and second moment) for
// fedadam, fedyogi and fedadagrad.
type State struct {
	Strategy string
	Step     uint64
	Vectors  [][]float32
}

// NewGlobal returns G with the given weights (not copied) and an empty state.
func NewGlobal(weights []float32) *Global {
	return &Global{Weights: weights}
}

// Clone returns a deep copy of g.
func (g *Global) Clone() *Global {
	c := &Global{
		Weights: slices.Clone(g.Weights),
		State:   State{Strategy: g.State.Strategy, Step: g.State.Step},
	}
	if g.State.Vectors != nil {
		c.State.Vectors = make([][]float32, len(g.State.Vectors))
		for i, v := range g.State.Vectors {
			c.State.Vectors[i] = slices.Clone(v)
		}
	}
	return c
}

// The canonical encoding of G, all integers little-endian:
//
//	magic     [4]byte  "GBG1"
//	version   uint16   1
//	namelen   uint16   len(State.Strategy), at most maxNameLen
//	name      [namelen]byte
//	step      uint64
//	dim       uint64   len(Weights)
//	nvec      uint32   len(State.Vectors), at most maxVectors
//	weights   [dim]float32
//	vectors   nvec x [dim]float32
//
// Float32 values are written as their IEEE-754 bits. The encoding has no
// optional parts and no maps, so one G has exactly one encoding.
const (
	magic         = "GBG1"
	version       = 1
	headerLen     = 4 + 2 + 2 // magic, version, namelen
	fixedTailLen  = 8 + 8 + 4 // step, dim, nvec
	maxNameLen    = 64
	maxVectors    = 16
	encodeChunk   = 1 << 13 // floats per chunk when streaming into a hash
	maxDecodedDim = 1 << 40 // far beyond any model; guards the size arithmetic
)

// Errors returned by Decode, wrapped with detail.
var (
	ErrEncoding = errors.New("fedavg: bad encoding of global model")
	// ErrState reports strategy state in G that the strategy cannot use
	// (wrong number or length of vectors).
	ErrState = errors.New("fedavg: bad strategy state")
)

// encodedLen returns the length of g's canonical encoding.
func (g *Global) encodedLen() int {
	return headerLen + len(g.State.Strategy) + fixedTailLen + 4*len(g.Weights)*(1+len(g.State.Vectors))
}

// checkEncodable panics on a G that has no canonical encoding: such a G can
// only be built by a programming mistake (Decode and the strategies never
// produce one).
func (g *Global) checkEncodable() {
	if len(g.State.Strategy) > maxNameLen {
		panic(fmt.Sprintf("fedavg: strategy name %q longer than %d bytes", g.State.Strategy, maxNameLen))
	}
	if len(g.State.Vectors) > maxVectors {
		panic(fmt.Sprintf("fedavg: %d state vectors, at most %d", len(g.State.Vectors), maxVectors))
	}
	for i, v := range g.State.Vectors {
		if len(v) != len(g.Weights) {
			panic(fmt.Sprintf("fedavg: state vector %d has %d values, weights have %d", i, len(v), len(g.Weights)))
		}
	}
}

func (g *Global) appendHeader(b []byte) []byte {
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint16(b, version)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(g.State.Strategy)))
	b = append(b, g.State.Strategy...)
	b = binary.LittleEndian.AppendUint64(b, g.State.Step)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(g.Weights)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(g.State.Vectors)))
	return b
}

// Encode returns the canonical encoding of g (see the layout above). It
// panics if g has no encoding: a strategy name longer than 64 bytes, more
// than 16 state vectors, or a state vector whose length differs from the
// weights'.
func (g *Global) Encode() []byte {
	g.checkEncodable()
	b := make([]byte, 0, g.encodedLen())
	b = g.appendHeader(b)
	b = appendFloats(b, g.Weights)
	for _, v := range g.State.Vectors {
		b = appendFloats(b, v)
	}
	return b
}

func appendFloats(b []byte, xs []float32) []byte {
	n := len(b)
	b = b[:n+4*len(xs)]
	out := b[n:]
	for i, x := range xs {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(x))
	}
	return b
}

// writeTo streams the canonical encoding into h without materializing it.
func (g *Global) writeTo(h hash.Hash) {
	g.checkEncodable()
	buf := make([]byte, 0, 4*encodeChunk)
	h.Write(g.appendHeader(buf))
	write := func(xs []float32) {
		for len(xs) > 0 {
			n := min(len(xs), encodeChunk)
			h.Write(appendFloats(buf[:0], xs[:n]))
			xs = xs[n:]
		}
	}
	write(g.Weights)
	for _, v := range g.State.Vectors {
		write(v)
	}
}

// Decode parses a canonical encoding strictly: wrong magic or version,
// truncation, trailing bytes, sizes that disagree with the length, an
// over-long strategy name, too many vectors and non-finite values are all
// errors (wrapping ErrEncoding, or ErrNonFinite for values). Sizes are
// checked against len(b) before anything is allocated, and Decode never
// panics. The result does not alias b, and Encode of it returns b.
func Decode(b []byte) (*Global, error) {
	if len(b) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the header", ErrEncoding, len(b))
	}
	if string(b[:4]) != magic {
		return nil, fmt.Errorf("%w: magic %q, want %q", ErrEncoding, b[:4], magic)
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v != version {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrEncoding, v, version)
	}
	nameLen := int(binary.LittleEndian.Uint16(b[6:]))
	if nameLen > maxNameLen {
		return nil, fmt.Errorf("%w: strategy name of %d bytes, at most %d", ErrEncoding, nameLen, maxNameLen)
	}
	rest := b[headerLen:]
	if len(rest) < nameLen+fixedTailLen {
		return nil, fmt.Errorf("%w: truncated header", ErrEncoding)
	}
	name := string(rest[:nameLen])
	rest = rest[nameLen:]
	step := binary.LittleEndian.Uint64(rest)
	dim := binary.LittleEndian.Uint64(rest[8:])
	nvec := binary.LittleEndian.Uint32(rest[16:])
	rest = rest[fixedTailLen:]
	if nvec > maxVectors {
		return nil, fmt.Errorf("%w: %d state vectors, at most %d", ErrEncoding, nvec, maxVectors)
	}
	if dim > maxDecodedDim {
		return nil, fmt.Errorf("%w: dimension %d too large", ErrEncoding, dim)
	}
	// dim <= 2^40 and nvec <= 16, so the product cannot overflow a uint64.
	if want := 4 * dim * (1 + uint64(nvec)); uint64(len(rest)) != want {
		return nil, fmt.Errorf("%w: dimension %d with %d state vectors needs %d bytes of values, have %d",
			ErrEncoding, dim, nvec, want, len(rest))
	}
	n := int(dim)
	g := &Global{State: State{Strategy: name, Step: step}}
	var err error
	if g.Weights, err = decodeFloats(rest[:4*n], "weights"); err != nil {
		return nil, err
	}
	rest = rest[4*n:]
	if nvec > 0 {
		g.State.Vectors = make([][]float32, nvec)
		for i := range g.State.Vectors {
			if g.State.Vectors[i], err = decodeFloats(rest[:4*n], fmt.Sprintf("state vector %d", i)); err != nil {
				return nil, err
			}
			rest = rest[4*n:]
		}
	}
	return g, nil
}

func decodeFloats(b []byte, what string) ([]float32, error) {
	xs := make([]float32, len(b)/4)
	for i := range xs {
		xs[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	if i := firstNonFinite(xs); i >= 0 {
		return nil, fmt.Errorf("%w: %s[%d] = %v", ErrNonFinite, what, i, xs[i])
	}
	return xs, nil
}

// Digest is the SHA-256 of a canonical encoding.
type Digest [32]byte

// String returns d in hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

func (d Digest) short() string { return hex.EncodeToString(d[:8]) }

// Digest returns the SHA-256 of g's canonical encoding, equal to
// DigestBytes(g.Encode()) but computed without building the encoding.
func (g *Global) Digest() Digest {
	h := sha256.New()
	g.writeTo(h)
	var d Digest
	h.Sum(d[:0])
	return d
}

// DigestBytes returns the SHA-256 of b.
func DigestBytes(b []byte) Digest { return sha256.Sum256(b) }
