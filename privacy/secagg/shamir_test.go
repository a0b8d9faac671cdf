package secagg

import (
	"bytes"
	"errors"
	"io"
	"math/big"
	"testing"
)

func randomSecret(t testing.TB, r io.Reader) [32]byte {
	t.Helper()
	var s [32]byte
	if _, err := io.ReadFull(r, s[:]); err != nil {
		t.Fatal(err)
	}
	return s
}

func pick(shares []Share, idx []int) []Share {
	out := make([]Share, len(idx))
	for k, i := range idx {
		out[k] = shares[i]
	}
	return out
}

func TestFieldIsMersenne521(t *testing.T) {
	if fieldP.BitLen() != 521 || !fieldP.ProbablyPrime(32) {
		t.Fatal("p is not the 521-bit Mersenne prime")
	}
	if (fieldP.BitLen()+7)/8 != ShareYSize {
		t.Fatal("ShareYSize does not hold p")
	}
}

// TestEverySubsetCombines: every set of at least t of the n shares, in any
// order, rebuilds the secret.
func TestEverySubsetCombines(t *testing.T) {
	r := seeded(11)
	const n, tt = 7, 4
	for trial := range 3 {
		secret := randomSecret(t, r)
		if trial == 1 {
			secret = [32]byte{} // the extremes of the 32-byte range
		}
		if trial == 2 {
			secret = [32]byte(bytes.Repeat([]byte{0xff}, 32))
		}
		shares, err := Split(secret, tt, n, r)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range shares {
			if s.X != uint16(i+1) {
				t.Fatalf("share %d has x = %d, want %d", i, s.X, i+1)
			}
		}
		count := 0
		for k := tt; k <= n; k++ {
			subsets(n, k, func(idx []int) {
				count++
				sub := pick(shares, idx)
				// reversed order too: the first t are the base.
				rev := make([]Share, len(sub))
				for i := range sub {
					rev[len(sub)-1-i] = sub[i]
				}
				for _, set := range [][]Share{sub, rev} {
					got, err := Combine(set, tt)
					if err != nil || got != secret {
						t.Fatalf("subset %v: %x, %v; want %x", idx, got, err, secret)
					}
				}
			})
		}
		if want := binom(7, 4) + binom(7, 5) + binom(7, 6) + 1; count != want {
			t.Fatalf("%d subsets tried, want %d", count, want)
		}
	}
}

// TestSplitAgainstTheAlgebra checks Split and Combine against identities of
// polynomials that neither uses. For f of degree t-1 sampled at x = 1..n:
// the t-th finite difference of consecutive shares vanishes,
// sum_k (-1)^k C(t,k) f(x+k) = 0, and Newton's forward formula at 0 gives
// the secret, f(0) = sum_{k=1..t} (-1)^(k+1) C(t,k) f(k). Sharing is linear:
// the share-wise sum of two sharings and a multiple of one are sharings of
// the sum and the multiple.
func TestSplitAgainstTheAlgebra(t *testing.T) {
	r := seeded(12)
	y := func(s Share) *big.Int { return new(big.Int).SetBytes(s.Y[:]) }
	for _, tc := range []struct{ t, n int }{{2, 2}, {2, 5}, {3, 3}, {3, 9}, {7, 10}, {17, 25}, {34, 50}} {
		secret := randomSecret(t, r)
		shares, err := Split(secret, tc.t, tc.n, r)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range shares {
			if y(s).Cmp(fieldP) >= 0 {
				t.Fatalf("t=%d n=%d: share above p", tc.t, tc.n)
			}
		}
		f0 := new(big.Int)
		for k := 1; k <= tc.t; k++ {
			term := new(big.Int).Mul(new(big.Int).Binomial(int64(tc.t), int64(k)), y(shares[k-1]))
			if k%2 == 0 {
				term.Neg(term)
			}
			f0.Add(f0, term)
		}
		f0.Mod(f0, fieldP)
		if f0.Cmp(new(big.Int).SetBytes(secret[:])) != 0 {
			t.Errorf("t=%d n=%d: Newton's formula at 0 does not give the secret", tc.t, tc.n)
		}
		for x := 0; x+tc.t < tc.n; x++ {
			d := new(big.Int)
			for k := 0; k <= tc.t; k++ {
				term := new(big.Int).Mul(new(big.Int).Binomial(int64(tc.t), int64(k)), y(shares[x+k]))
				if k%2 == 1 {
					term.Neg(term)
				}
				d.Add(d, term)
			}
			if d.Mod(d, fieldP).Sign() != 0 {
				t.Errorf("t=%d n=%d: the %d-th difference from x=%d is not 0: degree above t-1", tc.t, tc.n, tc.t, x+1)
			}
		}
		// A (t-1)-th difference that vanishes everywhere would mean degree
		// t-2: the polynomial is not (with overwhelming probability).
		if tc.n > tc.t {
			d := new(big.Int)
			for k := 0; k < tc.t; k++ {
				term := new(big.Int).Mul(new(big.Int).Binomial(int64(tc.t-1), int64(k)), y(shares[k]))
				if k%2 == 1 {
					term.Neg(term)
				}
				d.Add(d, term)
			}
			if d.Mod(d, fieldP).Sign() == 0 {
				t.Errorf("t=%d n=%d: degree below t-1", tc.t, tc.n)
			}
		}
	}

	// Linearity: (s1 + s2) and 3*s1, with top bits clear so both stay
	// 32-byte secrets.
	s1, s2 := randomSecret(t, r), randomSecret(t, r)
	s1[0], s2[0] = 0x1f, 0x3a
	a, _ := Split(s1, 5, 8, r)
	b, _ := Split(s2, 5, 8, r)
	sum, triple := make([]Share, 8), make([]Share, 8)
	for i := range a {
		v := new(big.Int).Add(y(a[i]), y(b[i]))
		sum[i] = Share{X: a[i].X}
		v.Mod(v, fieldP).FillBytes(sum[i].Y[:])
		v = new(big.Int).Mul(y(a[i]), big.NewInt(3))
		triple[i] = Share{X: a[i].X}
		v.Mod(v, fieldP).FillBytes(triple[i].Y[:])
	}
	want := new(big.Int).Add(new(big.Int).SetBytes(s1[:]), new(big.Int).SetBytes(s2[:]))
	got, err := Combine(sum[2:7], 5)
	if err != nil || new(big.Int).SetBytes(got[:]).Cmp(want) != 0 {
		t.Errorf("sum of sharings: %x, %v; want %x", got, err, want)
	}
	want = new(big.Int).Mul(new(big.Int).SetBytes(s1[:]), big.NewInt(3))
	got, err = Combine(triple, 5)
	if err != nil || new(big.Int).SetBytes(got[:]).Cmp(want) != 0 {
		t.Errorf("multiple of a sharing: %x, %v; want %x", got, err, want)
	}
}

// TestFewerThanTSharesRevealNothing: t-1 shares cannot rebuild the secret.
// Combine refuses them; claiming a lower threshold rebuilds something else
// (almost always not even a 32-byte value); and the t-1 shares are
// consistent with every secret alike: for any candidate s', one more point
// completes them to a valid sharing of s'. That last property is the
// perfect secrecy of Shamir's scheme, shown constructively.
func TestFewerThanTSharesRevealNothing(t *testing.T) {
	r := seeded(13)
	for _, tc := range []struct{ t, n int }{{2, 3}, {3, 5}, {7, 10}, {34, 50}} {
		for trial := range 50 {
			secret := randomSecret(t, r)
			shares, err := Split(secret, tc.t, tc.n, r)
			if err != nil {
				t.Fatal(err)
			}
			few := shares[tc.n-tc.t+1:] // t-1 shares, the highest x
			if _, err := Combine(few, tc.t); !errors.Is(err, ErrTooFewShares) {
				t.Fatalf("t=%d: Combine of t-1 shares: %v, want ErrTooFewShares", tc.t, err)
			}
			if tc.t > 2 {
				got, err := Combine(few, tc.t-1)
				if err == nil && got == secret {
					t.Fatalf("t=%d: t-1 shares rebuilt the secret", tc.t)
				}
				if err != nil && !errors.Is(err, ErrNotASecret) {
					t.Fatalf("t=%d: %v", tc.t, err)
				}
			}
			if trial >= 5 {
				continue
			}
			// Any secret is possible: complete the t-1 points with a t-th at
			// an x not among them so that f(0) = candidate.
			candidate := randomSecret(t, r)
			xs := []*big.Int{new(big.Int)}
			ys := []*big.Int{new(big.Int).SetBytes(candidate[:])}
			for _, s := range few {
				xs = append(xs, new(big.Int).SetUint64(uint64(s.X)))
				ys = append(ys, new(big.Int).SetBytes(s.Y[:]))
			}
			forged := Share{X: 1}
			interpolate(xs, ys, big.NewInt(1)).FillBytes(forged.Y[:])
			got, err := Combine(append([]Share{forged}, few...), tc.t)
			if err != nil || got != candidate {
				t.Fatalf("t=%d: the t-1 shares do not admit secret %x: %x, %v", tc.t, candidate, got, err)
			}
		}
	}
}

func TestSplitCombineErrors(t *testing.T) {
	r := seeded(14)
	secret := randomSecret(t, r)
	for _, tc := range []struct{ t, n int }{{1, 3}, {0, 3}, {4, 3}, {2, MaxShares + 1}, {-1, -1}} {
		if _, err := Split(secret, tc.t, tc.n, r); !errors.Is(err, ErrThreshold) {
			t.Errorf("Split(t=%d, n=%d): %v, want ErrThreshold", tc.t, tc.n, err)
		}
	}
	if _, err := Split(secret, 3, 5, bytes.NewReader(make([]byte, 100))); err == nil {
		t.Error("Split with a short reader succeeded")
	}
	shares, err := Split(secret, 3, 5, r)
	if err != nil {
		t.Fatal(err)
	}
	dup := []Share{shares[0], shares[1], shares[0]}
	if _, err := Combine(dup, 3); !errors.Is(err, ErrDuplicateX) {
		t.Errorf("duplicate x: %v, want ErrDuplicateX", err)
	}
	sameXOtherY := []Share{shares[0], shares[1], {X: shares[1].X, Y: shares[2].Y}}
	if _, err := Combine(sameXOtherY, 3); !errors.Is(err, ErrDuplicateX) {
		t.Errorf("duplicate x, different y: %v, want ErrDuplicateX", err)
	}
	zero := []Share{shares[0], {X: 0, Y: shares[1].Y}, shares[2]}
	if _, err := Combine(zero, 3); !errors.Is(err, ErrZeroX) {
		t.Errorf("x = 0: %v, want ErrZeroX", err)
	}
	if _, err := Combine(shares[:2], 3); !errors.Is(err, ErrTooFewShares) {
		t.Errorf("2 of 3: %v, want ErrTooFewShares", err)
	}
	if _, err := Combine(nil, 3); !errors.Is(err, ErrTooFewShares) {
		t.Errorf("none: %v, want ErrTooFewShares", err)
	}
	for _, tt := range []int{0, 1, MaxShares + 1} {
		if _, err := Combine(shares, tt); !errors.Is(err, ErrThreshold) {
			t.Errorf("t = %d: %v, want ErrThreshold", tt, err)
		}
	}
	big := shares[0]
	fieldP.FillBytes(big.Y[:]) // y = p
	if _, err := Combine([]Share{big, shares[1], shares[2]}, 3); !errors.Is(err, ErrShareRange) {
		t.Errorf("y = p: %v, want ErrShareRange", err)
	}
	bad := append([]Share(nil), shares...)
	bad[4].Y[65] ^= 1
	if _, err := Combine(bad, 3); !errors.Is(err, ErrInconsistent) {
		t.Errorf("a damaged share beyond the first t: %v, want ErrInconsistent", err)
	}
	// A flipped bit among the first t moves the result by a small multiple
	// of a Lagrange coefficient: a wrong value (or none), never the secret.
	if got, err := Combine(bad[2:5], 3); err == nil && got == secret {
		t.Error("a damaged share among the first t rebuilt the secret")
	}
	// A garbage share among the first t rebuilds no 32-byte value (2^-265).
	garbage, _ := randomElement(r)
	bad[4] = Share{X: 5}
	garbage.FillBytes(bad[4].Y[:])
	if got, err := Combine(bad[2:5], 3); !errors.Is(err, ErrNotASecret) {
		t.Errorf("a garbage share among the first t: %x, %v; want ErrNotASecret", got, err)
	}
}

func TestSplitDeterministic(t *testing.T) {
	secret := randomSecret(t, seeded(1))
	a, _ := Split(secret, 4, 9, seeded(15))
	b, _ := Split(secret, 4, 9, seeded(15))
	c, _ := Split(secret, 4, 9, seeded(16))
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("the same reader gave different shares")
		}
		if a[i] == c[i] {
			t.Fatal("different readers gave the same share")
		}
	}
}

func TestRoster(t *testing.T) {
	in := [][]byte{[]byte("b"), {0x00}, []byte("ab"), []byte("a"), {0xff, 0x00}}
	r, err := NewRoster(in)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{{0x00}, []byte("a"), []byte("ab"), []byte("b"), {0xff, 0x00}}
	for i, id := range want {
		x, ok := r.X(id)
		if !ok || x != uint16(i+1) || !bytes.Equal(r.ID(x), id) {
			t.Errorf("%q: x = %d, %v; want %d", id, x, ok, i+1)
		}
	}
	in[0][0] = 'z' // the roster holds copies
	if x, ok := r.X([]byte("b")); !ok || x != 4 {
		t.Error("the roster shares its input")
	}
	if _, ok := r.X([]byte("c")); ok {
		t.Error("a non-member has an x")
	}
	if r.ID(0) != nil || r.ID(6) != nil || r.Len() != 5 || len(r.IDs()) != 5 {
		t.Error("ID, Len or IDs is wrong")
	}
	for _, bad := range [][][]byte{{[]byte("a"), []byte("a")}, {[]byte("a"), {}}, {nil}, {make([]byte, MaxIDLen+1)}} {
		if _, err := NewRoster(bad); !errors.Is(err, ErrBadID) {
			t.Errorf("NewRoster(%d ids): %v, want ErrBadID", len(bad), err)
		}
	}
}
