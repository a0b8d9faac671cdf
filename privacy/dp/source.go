package dp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/bits"
)

// ErrSource reports that the random source failed: no sample is drawn from
// a partial read.
var ErrSource = errors.New("dp: random source failed")

// Source turns an io.Reader of uniformly random bytes into the exact
// uniform draws the samplers need: bits, integers uniform in [0, n) by
// rejection (never by reduction modulo n), and Bernoulli trials with a
// rational success probability. In production the reader is crypto/rand's;
// tests pass a seeded math/rand/v2 ChaCha8, whose output, and therefore
// every sample, is fixed by the seed.
//
// Source reads ahead in blocks of 512 bytes, so what it consumes from the
// reader is a whole number of blocks. It is not safe for concurrent use.
// After the reader fails once, every draw fails with ErrSource.
type Source struct {
	r    io.Reader
	buf  [512]byte
	pos  int
	end  int
	word uint64 // unread bits, lowest first
	nbit uint
	err  error
	// scratch for the big-integer paths
	bigBuf                []byte
	u, dk, kk, whole, rem big.Int
}

// NewSource returns a Source reading from r.
func NewSource(r io.Reader) *Source { return &Source{r: r} }

// Err returns the reader's error, if it failed.
func (s *Source) Err() error { return s.err }

func (s *Source) fill() error {
	if s.err != nil {
		return s.err
	}
	if _, err := io.ReadFull(s.r, s.buf[:]); err != nil {
		s.err = fmt.Errorf("%w: %v", ErrSource, err)
		return s.err
	}
	s.pos, s.end = 0, len(s.buf)
	return nil
}

// Uint64 returns 64 uniformly random bits.
func (s *Source) Uint64() (uint64, error) {
	if s.end-s.pos < 8 {
		if err := s.fill(); err != nil {
			return 0, err
		}
	}
	v := binary.LittleEndian.Uint64(s.buf[s.pos:])
	s.pos += 8
	return v, nil
}

// Bit returns one uniformly random bit.
func (s *Source) Bit() (uint, error) {
	if s.nbit == 0 {
		w, err := s.Uint64()
		if err != nil {
			return 0, err
		}
		s.word, s.nbit = w, 64
	}
	b := uint(s.word & 1)
	s.word >>= 1
	s.nbit--
	return b, nil
}

// Uniform returns an integer uniform in [0, n), n > 0, exactly: Lemire's
// multiply-and-reject ("Fast Random Integer Generation in an Interval",
// 2019), which rejects the draws that would make some values likelier.
func (s *Source) Uniform(n uint64) (uint64, error) {
	if n == 0 {
		panic("dp: Uniform(0)")
	}
	x, err := s.Uint64()
	if err != nil {
		return 0, err
	}
	hi, lo := bits.Mul64(x, n)
	if lo < n {
		thresh := -n % n // 2^64 mod n
		for lo < thresh {
			if x, err = s.Uint64(); err != nil {
				return 0, err
			}
			hi, lo = bits.Mul64(x, n)
		}
	}
	return hi, nil
}

// UniformBig sets z to an integer uniform in [0, n), n > 0, by drawing
// n.BitLen() random bits until the value is below n (fewer than two draws
// on average), and returns z.
func (s *Source) UniformBig(z, n *big.Int) (*big.Int, error) {
	if n.Sign() <= 0 {
		panic("dp: UniformBig: n <= 0")
	}
	if n.IsUint64() {
		v, err := s.Uniform(n.Uint64())
		if err != nil {
			return z, err
		}
		return z.SetUint64(v), nil
	}
	nbits := n.BitLen()
	nbytes := (nbits + 7) / 8
	if cap(s.bigBuf) < nbytes+8 {
		s.bigBuf = make([]byte, nbytes+8)
	}
	b := s.bigBuf[:nbytes+8] // whole words; the last partial one is cut below
	top := byte(0xff) >> (8*nbytes - nbits)
	for {
		for i := 0; i < nbytes; i += 8 {
			w, err := s.Uint64()
			if err != nil {
				return z, err
			}
			binary.BigEndian.PutUint64(b[i:], w)
		}
		b[0] &= top
		z.SetBytes(b[:nbytes])
		if z.Cmp(n) < 0 {
			return z, nil
		}
	}
}

// Bernoulli returns true with probability num/den exactly, 0 <= num <= den,
// den > 0.
func (s *Source) Bernoulli(num, den uint64) (bool, error) {
	u, err := s.Uniform(den)
	return u < num, err
}
