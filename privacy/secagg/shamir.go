package secagg

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
)

// Shamir t-of-n sharing of 32-byte secrets over GF(p), p = 2^521 - 1 (see
// the package doc for the choice). A secret is the element whose big-endian
// encoding it is; a share is the point (x, f(x)) of a random polynomial f of
// degree t-1 with f(0) = secret. Any t shares give f(0) by Lagrange
// interpolation; t-1 shares are consistent with every secret alike.

// ShareYSize is the size of a share's y-coordinate: an element of GF(p),
// 521 bits, big-endian in 66 bytes.
const ShareYSize = 66

// MaxShares is the largest n: x-coordinates are 2 bytes.
const MaxShares = math.MaxUint16

// Share is one point of a sharing. X is the holder's x-coordinate (a
// Roster's X, never 0); Y is f(X), big-endian, below p.
type Share struct {
	X uint16
	Y [ShareYSize]byte
}

// Errors of Split and Combine. Test for them with errors.Is.
var (
	// ErrThreshold reports t or n out of 2 <= t <= n <= MaxShares. A 1-of-n
	// sharing would hand the secret itself to every holder.
	ErrThreshold = errors.New("secagg: threshold out of range")
	// ErrTooFewShares reports fewer than t shares.
	ErrTooFewShares = errors.New("secagg: fewer shares than the threshold")
	// ErrDuplicateX reports two shares with the same x-coordinate.
	ErrDuplicateX = errors.New("secagg: two shares with the same x")
	// ErrZeroX reports a share at x = 0, which would be the secret itself.
	ErrZeroX = errors.New("secagg: share at x = 0")
	// ErrShareRange reports a y-coordinate that is not below p.
	ErrShareRange = errors.New("secagg: share y not below p")
	// ErrInconsistent reports a share beyond the first t that does not lie
	// on the polynomial the first t define.
	ErrInconsistent = errors.New("secagg: shares are not on one polynomial")
	// ErrNotASecret reports an interpolated value of 2^256 or more, which no
	// 32-byte secret is: almost surely the shares are too few for the real
	// threshold, or one is garbage.
	ErrNotASecret = errors.New("secagg: shares do not rebuild a 32-byte secret")
)

// fieldP is 2^521 - 1.
var fieldP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 521), big.NewInt(1))

// secretLimit is 2^256: every 32-byte secret is below it.
var secretLimit = new(big.Int).Lsh(big.NewInt(1), 256)

// Split shares secret t-of-n (PRIVACY.md phase 1: b_i and the private key
// of s_i, t-of-|U1|). Share k (0-based) has x = k+1, so with a Roster of U1
// share k belongs to the member with that x. The t-1 random coefficients
// are read from rand (66 bytes each, rejection-sampled below p).
func Split(secret [32]byte, t, n int, rand io.Reader) ([]Share, error) {
	if t < 2 || t > n || n > MaxShares {
		return nil, fmt.Errorf("%w: t = %d, n = %d", ErrThreshold, t, n)
	}
	coef := make([]*big.Int, t) // f(x) = coef[0] + coef[1] x + ... + coef[t-1] x^(t-1)
	coef[0] = new(big.Int).SetBytes(secret[:])
	for k := 1; k < t; k++ {
		c, err := randomElement(rand)
		if err != nil {
			return nil, err
		}
		coef[k] = c
	}
	shares := make([]Share, n)
	x, y := new(big.Int), new(big.Int)
	for i := range shares {
		xi := uint16(i + 1)
		x.SetUint64(uint64(xi))
		y.Set(coef[t-1]) // Horner
		for k := t - 2; k >= 0; k-- {
			y.Mul(y, x)
			y.Add(y, coef[k])
			y.Mod(y, fieldP)
		}
		shares[i] = Share{X: xi}
		y.FillBytes(shares[i].Y[:])
	}
	return shares, nil
}

// randomElement draws a uniform element of GF(p): 521 random bits, redrawn
// in the one case (all ones) that equals p.
func randomElement(rand io.Reader) (*big.Int, error) {
	var buf [ShareYSize]byte
	for {
		if _, err := io.ReadFull(rand, buf[:]); err != nil {
			return nil, fmt.Errorf("secagg: reading a coefficient: %w", err)
		}
		buf[0] &= 0x01 // 66*8 - 521 = 7 bits too many
		v := new(big.Int).SetBytes(buf[:])
		if v.Cmp(fieldP) < 0 {
			return v, nil
		}
	}
}

// Combine rebuilds a secret shared t-of-n from at least t shares
// (PRIVACY.md phase 3: b_j of a survivor, s_j of a dropped member). It
// interpolates through the first t shares, so the caller decides which
// ones count (PRIVACY.md: the t lowest-ID revealers named in the Commit),
// and checks that every further share lies on the same polynomial. It fails
// with ErrTooFewShares, ErrZeroX, ErrDuplicateX, ErrShareRange,
// ErrInconsistent or ErrNotASecret; it never returns a value that is not a
// 32-byte secret, but a share forged on purpose can still steer it, so check
// the result against what was committed (RebuildSelfSecret, RebuildMaskKey).
func Combine(shares []Share, t int) ([32]byte, error) {
	var secret [32]byte
	if t < 2 || t > MaxShares {
		return secret, fmt.Errorf("%w: t = %d", ErrThreshold, t)
	}
	if len(shares) < t {
		return secret, fmt.Errorf("%w: %d of %d", ErrTooFewShares, len(shares), t)
	}
	seen := make(map[uint16]bool, len(shares))
	xs := make([]*big.Int, len(shares))
	ys := make([]*big.Int, len(shares))
	for i, s := range shares {
		if s.X == 0 {
			return secret, ErrZeroX
		}
		if seen[s.X] {
			return secret, fmt.Errorf("%w: x = %d", ErrDuplicateX, s.X)
		}
		seen[s.X] = true
		xs[i] = new(big.Int).SetUint64(uint64(s.X))
		ys[i] = new(big.Int).SetBytes(s.Y[:])
		if ys[i].Cmp(fieldP) >= 0 {
			return secret, fmt.Errorf("%w: x = %d", ErrShareRange, s.X)
		}
	}
	for i := t; i < len(shares); i++ {
		if interpolate(xs[:t], ys[:t], xs[i]).Cmp(ys[i]) != 0 {
			return secret, fmt.Errorf("%w: x = %d", ErrInconsistent, shares[i].X)
		}
	}
	v := interpolate(xs[:t], ys[:t], new(big.Int))
	if v.Cmp(secretLimit) >= 0 {
		return secret, ErrNotASecret
	}
	v.FillBytes(secret[:])
	return secret, nil
}

// interpolate evaluates at x0 the polynomial of degree len(xs)-1 through
// the points (xs[j], ys[j]), which have distinct xs:
// sum_j ys[j] * prod_{m != j} (x0 - xs[m]) / (xs[j] - xs[m]) mod p.
func interpolate(xs, ys []*big.Int, x0 *big.Int) *big.Int {
	sum := new(big.Int)
	num, den, d := new(big.Int), new(big.Int), new(big.Int)
	for j := range xs {
		num.SetInt64(1)
		den.SetInt64(1)
		for m := range xs {
			if m == j {
				continue
			}
			num.Mul(num, d.Sub(x0, xs[m]))
			num.Mod(num, fieldP)
			den.Mul(den, d.Sub(xs[j], xs[m]))
			den.Mod(den, fieldP)
		}
		den.ModInverse(den, fieldP)
		num.Mul(num, den)
		num.Mul(num, ys[j])
		sum.Add(sum, num)
		sum.Mod(sum, fieldP)
	}
	return sum
}
