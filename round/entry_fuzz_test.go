package round

import (
	"bytes"
	"strings"
	"testing"

	"github.com/globalbrain/globalbrain/identity"
)

func entrySeeds() map[string][]byte {
	seeds := map[string][]byte{}
	for name, e := range seedEntries() {
		seeds[name] = e.Encode()
	}
	commit := string(seedEntries()["commit"].Encode())
	seeds["trailing-data"] = []byte(commit + "garbage")
	seeds["empty-included"] = []byte(strings.Replace(string(seedEntries()["abandon"].Encode()), `"result"`, `"included":[],"result"`, 1))
	seeds["null-included"] = []byte(strings.Replace(string(seedEntries()["abandon"].Encode()), `"result"`, `"included":[null,{}],"result"`, 1))
	seeds["unknown-kind"] = []byte(strings.Replace(commit, `"kind":"commit"`, `"kind":"keys"`, 1))
	seeds["unknown-nested-field"] = []byte(strings.Replace(commit, `"kind":"announce"`, `"kind":"announce","x":1`, 1))
	return withMalformed(seeds)
}

// FuzzDecodeEntry: DecodeEntry never panics, and an entry it accepts
// re-encodes into one it accepts again, equal to it; that re-encoding is
// canonical (a fixed point of Encode(DecodeEntry(.))). Equal is measured by
// the encoding, which tells every field apart except an absent from an
// empty list (omitempty omits both).
//
// The log form itself is not canonical, and need not be: members hash and
// apply an entry's bytes as raft committed them (ChainHash over
// ent.Data), never a re-encoding. Distinct accepted inputs may decode to
// the same entry: key case and order, duplicate keys, whitespace, an empty
// or absent "included", and data after the first JSON value (DecodeEntry,
// unlike DecodeMessage, does not refuse trailing data: seed trailing-data).
// The nested messages are decoded by encoding/json only, without
// DecodeMessage's shape checks; validate checks them when the entry is
// applied.
//
// Entries that decode are then validated by a fresh member (validate only
// reads the machine); one it finds valid must be a round-1 outcome on the
// genesis model whose inclusions are signed, sampled announcements in
// peer-ID order, each with Haves of a majority of voters.
func FuzzDecodeEntry(f *testing.F) {
	m := fuzzMachine(f, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEntry(data)
		if err != nil {
			if e != nil {
				t.Fatalf("DecodeEntry error %v with entry %v", err, e)
			}
			return
		}
		if e.Kind != EntryCommit && e.Kind != EntryAbandon {
			t.Fatalf("accepted kind %q", e.Kind)
		}
		enc := e.Encode()
		e2, err := DecodeEntry(enc)
		if err != nil {
			t.Fatalf("accepted %q, refused its re-encoding %q: %v", data, enc, err)
		}
		if enc2 := e2.Encode(); !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the entry, or its encoding is not canonical:\n in  %q\n out %q\n then %q", data, enc, enc2)
		}
		// What a member does with a committed entry next: validate it
		// against the applied state (a fresh member: round 1 next).
		if err := m.validate(e); err == nil {
			checkValidEntry(t, m, e)
		}
	})
}

func checkValidEntry(t *testing.T, m *Machine, e *Entry) {
	t.Helper()
	if e.Round != m.st.Round+1 || e.Base != m.st.Model || e.Prev != m.st.Chain {
		t.Fatalf("valid entry for round %d on another state", e.Round)
	}
	if e.Kind == EntryAbandon {
		if e.Result != e.Base || len(e.Included) > 0 || len(e.Haves) > 0 {
			t.Fatal("valid abandon that changes the model or includes updates")
		}
		return
	}
	if len(e.Included) < m.p.MinParticipants || e.Aggregator != m.p.Aggregator {
		t.Fatalf("valid commit with %d inclusions, aggregator %q", len(e.Included), e.Aggregator)
	}
	for i, a := range e.Included {
		if a == nil || a.Kind != KindAnnounce || a.Verify(fuzzConsortium) != nil || (i > 0 && identity.Compare(e.Included[i-1].Author, a.Author) >= 0) {
			t.Fatalf("valid commit with inclusion %d %v", i, a)
		}
		voters := map[string]bool{}
		for _, h := range e.Haves {
			if h != nil && h.Kind == KindHave && h.Digest == a.Digest && h.Verify(fuzzConsortium) == nil {
				if _, ok := m.voters[RaftID(h.Author)]; ok {
					voters[string(h.Author)] = true
				}
			}
		}
		if len(voters) <= len(m.p.Voters)/2 {
			t.Fatalf("valid commit including %s with Haves of %d voters", a.Author.Short(), len(voters))
		}
	}
}
