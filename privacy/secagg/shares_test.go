package secagg

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"testing"
)

type boxFixture struct {
	i, j   []byte
	ki, kj Keys
	rec    ShareRecord
	box    []byte
}

func newBox(t *testing.T) boxFixture {
	t.Helper()
	r := seeded(21)
	f := boxFixture{i: []byte("member-i"), j: []byte("member-j")}
	f.ki, _ = GenerateKeys(r)
	f.kj, _ = GenerateKeys(r)
	b, _ := Split(randomSecret(t, r), 2, 3, r)
	s, _ := Split([32]byte(f.ki.Mask.Bytes()), 2, 3, r)
	f.rec = ShareRecord{From: f.i, To: f.j, B: b[1], S: s[1]}
	var err error
	if f.box, err = EncryptShare(testSession, f.ki.Share, f.kj.Share.PublicKey(), f.rec, r); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f boxFixture) open(s Session, box []byte) (ShareRecord, error) {
	return OpenShare(s, f.kj.Share, f.ki.Share.PublicKey(), f.i, f.j, box)
}

func TestShareBoxRoundTrip(t *testing.T) {
	f := newBox(t)
	got, err := f.open(testSession, f.box)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.From, f.i) || !bytes.Equal(got.To, f.j) || got.B != f.rec.B || got.S != f.rec.S {
		t.Fatalf("opened %+v, sealed %+v", got, f.rec)
	}
	if want := NonceSize + 4 + len(f.i) + len(f.j) + 2 + 2*ShareYSize + 16; len(f.box) != want {
		t.Errorf("box is %d bytes, want %d", len(f.box), want)
	}
	// The nonce is from the reader: the same reader seals the same box,
	// another reader a different nonce.
	again, _ := EncryptShare(testSession, f.ki.Share, f.kj.Share.PublicKey(), f.rec, bytes.NewReader(f.box[:NonceSize]))
	if !bytes.Equal(again, f.box) {
		t.Error("the same nonce and key gave another box")
	}
	other, _ := EncryptShare(testSession, f.ki.Share, f.kj.Share.PublicKey(), f.rec, seeded(99))
	if bytes.Equal(other[:NonceSize], f.box[:NonceSize]) {
		t.Error("two readers gave the same nonce")
	}
	if _, err := EncryptShare(testSession, f.ki.Share, f.kj.Share.PublicKey(), f.rec, bytes.NewReader(nil)); err == nil {
		t.Error("sealing without a nonce succeeded")
	}
}

// TestShareBoxTampering: every flipped bit, every truncation and any
// appended byte makes the box refuse to open.
func TestShareBoxTampering(t *testing.T) {
	f := newBox(t)
	for i := range f.box {
		for bit := range 8 {
			bad := bytes.Clone(f.box)
			bad[i] ^= 1 << bit
			if _, err := f.open(testSession, bad); !errors.Is(err, ErrOpen) {
				t.Fatalf("byte %d bit %d flipped: %v, want ErrOpen", i, bit, err)
			}
		}
	}
	for n := range len(f.box) {
		if _, err := f.open(testSession, f.box[:n]); !errors.Is(err, ErrOpen) {
			t.Fatalf("truncated to %d: %v, want ErrOpen", n, err)
		}
	}
	if _, err := f.open(testSession, append(bytes.Clone(f.box), 0)); !errors.Is(err, ErrOpen) {
		t.Fatalf("extended: %v, want ErrOpen", err)
	}
}

// TestShareBoxBinding: a box opens only for the direction, round,
// consortium, members and keys it was sealed for.
func TestShareBoxBinding(t *testing.T) {
	f := newBox(t)
	third, _ := GenerateKeys(seeded(22))
	otherRound, otherCons := testSession, testSession
	otherRound.Round++
	otherCons.Consortium[0] ^= 0x80
	cases := []struct {
		name     string
		s        Session
		c        *ecdh.PrivateKey
		fromPub  *ecdh.PublicKey
		from, to []byte
	}{
		// j -> i: the same DH secret, but k_ji and the AAD differ.
		{"wrong direction, j opening as if j sent it", testSession, f.kj.Share, f.ki.Share.PublicKey(), f.j, f.i},
		{"wrong direction, i opening its own box", testSession, f.ki.Share, f.kj.Share.PublicKey(), f.j, f.i},
		{"wrong round", otherRound, f.kj.Share, f.ki.Share.PublicKey(), f.i, f.j},
		{"wrong consortium", otherCons, f.kj.Share, f.ki.Share.PublicKey(), f.i, f.j},
		{"wrong recipient key", testSession, third.Share, f.ki.Share.PublicKey(), f.i, f.j},
		{"wrong sender key", testSession, f.kj.Share, third.Share.PublicKey(), f.i, f.j},
		{"mask key instead of share key", testSession, f.kj.Mask, f.ki.Share.PublicKey(), f.i, f.j},
		{"wrong sender ID", testSession, f.kj.Share, f.ki.Share.PublicKey(), []byte("member-x"), f.j},
		{"wrong recipient ID", testSession, f.kj.Share, f.ki.Share.PublicKey(), f.i, []byte("member-x")},
		// The IDs are length-framed: moving a byte from one to the other
		// is a different box.
		{"IDs split elsewhere", testSession, f.kj.Share, f.ki.Share.PublicKey(), []byte("member-im"), []byte("ember-j")},
	}
	for _, tc := range cases {
		if _, err := OpenShare(tc.s, tc.c, tc.fromPub, tc.from, tc.to, f.box); !errors.Is(err, ErrOpen) {
			t.Errorf("%s: %v, want ErrOpen", tc.name, err)
		}
	}
	// The two directions use different keys: the same record and nonce
	// sealed j -> i is another box.
	rev := f.rec
	rev.From, rev.To = f.j, f.i
	back, err := EncryptShare(testSession, f.kj.Share, f.ki.Share.PublicKey(), rev, bytes.NewReader(f.box[:NonceSize]))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(back[NonceSize:], f.box[NonceSize:]) {
		t.Error("k_ij = k_ji")
	}
	if _, err := f.open(testSession, back); !errors.Is(err, ErrOpen) {
		t.Errorf("j's box to i opened as i's box to j: %v", err)
	}
}

func TestShareRecordChecks(t *testing.T) {
	f := newBox(t)
	bad := f.rec
	bad.S.X++
	if _, err := EncryptShare(testSession, f.ki.Share, f.kj.Share.PublicKey(), bad, seeded(1)); !errors.Is(err, ErrRecord) {
		t.Errorf("shares at two x: %v, want ErrRecord", err)
	}
	bad = f.rec
	bad.B.X, bad.S.X = 0, 0
	if _, err := EncryptShare(testSession, f.ki.Share, f.kj.Share.PublicKey(), bad, seeded(1)); !errors.Is(err, ErrRecord) {
		t.Errorf("shares at x = 0: %v, want ErrRecord", err)
	}
	bad = f.rec
	bad.To = nil
	if _, err := EncryptShare(testSession, f.ki.Share, f.kj.Share.PublicKey(), bad, seeded(1)); !errors.Is(err, ErrBadID) {
		t.Errorf("no recipient ID: %v, want ErrBadID", err)
	}
}

// TestDealOpenRebuild runs phase 1 and the rebuilding of phase 3 for 6
// members with t = 4: every member opens every box dealt to it, finds its
// own x in it, and any t of the shares rebuild b_i (matching its
// commitment) and s_i (matching its public key); a wrong commitment or key
// is refused.
func TestDealOpenRebuild(t *testing.T) {
	const n, tt = 6, 4
	ms := newMembers(t, n, 0, 31, testEncoding)
	u1 := make([]Recipient, n)
	for i, m := range ms {
		u1[i] = Recipient{ID: m.id, SharePub: m.keys.Share.PublicKey()}
	}
	roster, _ := NewRoster([][]byte{ms[3].id, ms[1].id, ms[0].id, ms[5].id, ms[2].id, ms[4].id})
	r := seeded(32)
	// got[i][j] is what j holds from i.
	got := make([][]ShareRecord, n)
	for i, m := range ms {
		sealed, err := Deal(testSession, m.id, m.keys, m.b, tt, u1, r)
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) != n {
			t.Fatalf("%d boxes for %d members", len(sealed), n)
		}
		got[i] = make([]ShareRecord, n)
		for j, to := range ms {
			if !bytes.Equal(sealed[j].To, to.id) { // ms is in ID order, like the deal
				t.Fatalf("box %d is for %x, want %x", j, sealed[j].To, to.id)
			}
			rec, err := OpenShare(testSession, to.keys.Share, m.keys.Share.PublicKey(), m.id, to.id, sealed[j].Box)
			if err != nil {
				t.Fatal(err)
			}
			if x, _ := roster.X(to.id); rec.B.X != x || rec.S.X != x {
				t.Fatalf("%x's share has x = %d, roster says %d", to.id, rec.B.X, x)
			}
			got[i][j] = rec
		}
	}
	for i, m := range ms {
		subsets(n, tt, func(idx []int) {
			var bs, ss []Share
			for _, j := range idx {
				bs = append(bs, got[i][j].B)
				ss = append(ss, got[i][j].S)
			}
			b, err := RebuildSelfSecret(testSession, bs, tt, CommitSelf(testSession, m.b))
			if err != nil || b != m.b {
				t.Fatalf("b of %d from %v: %v", i, idx, err)
			}
			k, err := RebuildMaskKey(ss, tt, m.keys.Mask.PublicKey())
			if err != nil || !k.Equal(m.keys.Mask) {
				t.Fatalf("s of %d from %v: %v", i, idx, err)
			}
		})
		bs := []Share{got[i][0].B, got[i][1].B, got[i][2].B, got[i][3].B}
		ss := []Share{got[i][0].S, got[i][1].S, got[i][2].S, got[i][3].S}
		if _, err := RebuildSelfSecret(testSession, bs, tt, CommitSelf(testSession, ms[(i+1)%n].b)); !errors.Is(err, ErrCommitMismatch) {
			t.Errorf("another member's commitment: %v, want ErrCommitMismatch", err)
		}
		if _, err := RebuildMaskKey(ss, tt, ms[(i+1)%n].keys.Mask.PublicKey()); !errors.Is(err, ErrKeyMismatch) {
			t.Errorf("another member's key: %v, want ErrKeyMismatch", err)
		}
		if _, err := RebuildMaskKey(bs, tt, m.keys.Mask.PublicKey()); !errors.Is(err, ErrKeyMismatch) {
			t.Errorf("b's shares as the key's: %v, want ErrKeyMismatch", err)
		}
		if _, err := RebuildMaskKey(ss[:tt-1], tt, m.keys.Mask.PublicKey()); !errors.Is(err, ErrTooFewShares) {
			t.Errorf("t-1 shares: %v, want ErrTooFewShares", err)
		}
	}
	if _, err := Deal(testSession, []byte("stranger"), ms[0].keys, ms[0].b, tt, u1, r); !errors.Is(err, ErrBadID) {
		t.Errorf("a dealer outside U1: %v, want ErrBadID", err)
	}
	if _, err := Deal(testSession, ms[0].id, ms[0].keys, ms[0].b, tt, append(u1, u1[2]), r); !errors.Is(err, ErrBadID) {
		t.Errorf("a member twice in U1: %v, want ErrBadID", err)
	}
	if _, err := Deal(testSession, ms[0].id, ms[0].keys, ms[0].b, n+1, u1, r); !errors.Is(err, ErrThreshold) {
		t.Errorf("t > |U1|: %v, want ErrThreshold", err)
	}
}
