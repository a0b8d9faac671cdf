package round

import (
	"slices"
	"testing"

	"github.com/globalbrain/globalbrain/identity"
)

// The cache answers as Verify does: a message that verified is not
// verified again, but any change to what is signed, to the signature or
// to the author, or another consortium, is a miss and is refused; a
// failure is never remembered.
func TestSigCacheAnswersAsVerify(t *testing.T) {
	var c sigCache
	cid := [32]byte{9}
	a, b := identity.Derive(5, 0), identity.Derive(5, 1)
	h := &Message{Kind: KindHave, Round: 3, Digest: Digest{1}}
	h.Sign(cid, a)
	if err := c.verify(h, cid); err != nil {
		t.Fatal(err)
	}
	if !c.has(sigKey(h, cid)) {
		t.Fatal("a verified message is not remembered")
	}
	same := *h
	same.Sig = slices.Clone(h.Sig)
	if err := c.verify(&same, cid); err != nil {
		t.Fatalf("an identical copy: %v", err)
	}

	forged := []func(m *Message){
		func(m *Message) { m.Digest = Digest{2} },                           // another blob, same signature
		func(m *Message) { m.Round = 4 },                                    // another round
		func(m *Message) { m.Kind = KindAttest },                            // another kind
		func(m *Message) { m.Sig = slices.Clone(m.Sig); m.Sig[0] ^= 1 },     // a damaged signature
		func(m *Message) { m.Author = b.ID },                                // another author
		func(m *Message) { m.Data = []byte{1} },                             // data not signed
		func(m *Message) { m.Sig = append(slices.Clone(m.Sig[:63]), 0, 0) }, // a longer signature
	}
	for i, f := range forged {
		m := *h
		f(&m)
		if err := c.verify(&m, cid); err == nil {
			t.Fatalf("forgery %d accepted", i)
		}
		if c.has(sigKey(&m, cid)) {
			t.Fatalf("forgery %d remembered", i)
		}
	}
	if err := c.verify(h, [32]byte{8}); err == nil {
		t.Fatal("a message of another consortium accepted from the cache")
	}
}

// The generations stay bounded, and a message from the previous
// generation is still a hit.
func TestSigCacheBounded(t *testing.T) {
	var c sigCache
	for i := range 2*sigCacheSize + 10 {
		var k [32]byte
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		c.add(k)
	}
	if len(c.cur) > sigCacheSize || len(c.old) > sigCacheSize {
		t.Fatalf("generations of %d and %d, bound %d", len(c.cur), len(c.old), sigCacheSize)
	}
	var last [32]byte
	i := 2*sigCacheSize + 9 - len(c.cur) // the newest of the old generation
	last[0], last[1], last[2] = byte(i), byte(i>>8), byte(i>>16)
	if !c.has(last) {
		t.Fatal("the previous generation is forgotten")
	}
}
