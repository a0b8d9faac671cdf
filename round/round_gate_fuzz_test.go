package round

import (
	"slices"
	"testing"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/wire"
)

// gateAuthor picks the gossip author Validate is given: a member (0..2), a
// non-member (3: fuzzIDs[4]), or (4..) whoever the message names, so that
// mutated signed messages can still be accepted.
func gateAuthor(sel byte, data []byte) identity.PeerID {
	switch sel % 5 {
	case 0, 1, 2:
		return fuzzIDs[sel%5].ID
	case 3:
		return fuzzIDs[4].ID
	}
	if m, err := DecodeMessage(data); err == nil {
		return m.Author
	}
	return nil
}

func gateSeeds() map[string][]any {
	out := map[string][]any{}
	for name, m := range seedMessages() {
		author := byte(4) // the message's own signer
		out[name] = []any{author, byte(0), m.Encode()}
		out[name+"-applied-2"] = []any{author, byte(2), m.Encode()}
		out[name+"-other-author"] = []any{byte(2), byte(0), m.Encode()}
	}
	forged := seedMessages()["announce"]
	forged.Examples++ // the signature no longer covers it
	out["forged-examples"] = []any{byte(4), byte(0), forged.Encode()}
	stale := seedMessages()["have"]
	out["stale"] = []any{byte(4), byte(9), stale.Encode()}
	for name, b := range malformedJSON {
		out["malformed-"+name] = []any{byte(0), byte(0), b}
	}
	return out
}

var gateReasons = []string{wire.ReasonMalformed, wire.ReasonAuthorMismatch, wire.ReasonNotMember, wire.ReasonStale, wire.ReasonBadSignature}

// FuzzGateValidate: the gossip envelope as p2p's validator sees it, judged
// by a Gate over three members (fuzzIDs[0..2]) at applied round `applied`:
// Validate(author, bytes) for gossip and ValidateSigned(bytes) for relayed
// messages. Properties: no panic; the verdict is Accept, Ignore or Reject;
// Accept comes with a non-nil, verified *Message whose author is a member,
// is the gossip author, and signed it for a round inside the window; any
// other verdict carries no value and a known reason; ValidateSigned agrees
// with Validate given the signer the message names.
func FuzzGateValidate(f *testing.F) {
	members := []identity.PeerID{fuzzIDs[0].ID, fuzzIDs[1].ID, fuzzIDs[2].ID}
	g := NewGate(fuzzConsortium, members)
	f.Fuzz(func(t *testing.T, authorSel, applied byte, data []byte) {
		g.applied.Store(uint64(applied))
		author := gateAuthor(authorSel, data)

		v, reason, val := g.Validate(author, data)
		checkVerdict(t, g, author, v, reason, val)

		signer, v2, reason2, val2 := g.ValidateSigned(data)
		checkVerdict(t, g, signer, v2, reason2, val2)
		if _, err := DecodeMessage(data); err != nil {
			if signer != nil || v2 != wire.Reject || reason2 != wire.ReasonMalformed || v != wire.Reject || reason != wire.ReasonMalformed {
				t.Fatalf("undecodable: Validate %v %q, ValidateSigned %v %v %q", v, reason, signer, v2, reason2)
			}
			return
		}
		if v3, reason3, _ := g.Validate(signer, data); v3 != v2 || reason3 != reason2 {
			t.Fatalf("ValidateSigned %v %q, Validate with its signer %v %q", v2, reason2, v3, reason3)
		}
	})
}

func checkVerdict(t *testing.T, g *Gate, author identity.PeerID, v wire.Verdict, reason string, val any) {
	t.Helper()
	switch v {
	case wire.Accept:
		msg, ok := val.(*Message)
		if !ok || msg == nil {
			t.Fatalf("Accept with value %#v", val)
		}
		if reason != "" || !msg.verified || identity.Compare(msg.Author, author) != 0 || !g.IsMember(author) ||
			!inWindow(msg.Round, g.Applied()) || msg.Verify(fuzzConsortium) != nil {
			t.Fatalf("accepted %v from %s at applied %d (reason %q, verified %v)", msg.Kind, author.Short(), g.Applied(), reason, msg.verified)
		}
	case wire.Ignore, wire.Reject:
		if val != nil || !slices.Contains(gateReasons, reason) {
			t.Fatalf("verdict %v, reason %q, value %#v", v, reason, val)
		}
		if v == wire.Ignore && reason != wire.ReasonStale {
			t.Fatalf("ignored for %q", reason)
		}
	default:
		t.Fatalf("verdict %d", int(v))
	}
}
