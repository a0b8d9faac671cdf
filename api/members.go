package api

import (
	"fmt"
	"slices"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/round"
)

// Signatures counts the valid signatures an AddMember request carries, the
// way the round machine counts them when the entry commits.
type Signatures struct {
	// Record reports whether the new member signed its own record.
	Record bool
	// Signed are the current members with a valid signature, in peer-ID
	// order.
	Signed []identity.PeerID
	// Members is the size of the membership counted against.
	Members int
}

// Needed is the number of member signatures that make a majority.
func (s Signatures) Needed() int { return s.Members/2 + 1 }

// Err says what the request lacks, or returns nil if it carries the new
// member's record and a majority of members' signatures.
func (s Signatures) Err() error {
	if !s.Record {
		return fmt.Errorf("the new member has not signed its own record (run \"globalbrain member sign\" on the new member)")
	}
	if len(s.Signed) < s.Needed() {
		return fmt.Errorf("%d of %d members signed; a majority (%d) is needed", len(s.Signed), s.Members, s.Needed())
	}
	return nil
}

// CountSignatures counts the signatures on req that are valid for the
// consortium: the new member's own record, and each current member's
// agreement (a member counts once).
func CountSignatures(req *round.AddMember, consortium [32]byte, members []identity.PeerID) Signatures {
	s := Signatures{Members: len(members)}
	want := req.Member.String()
	for _, sig := range req.Sigs {
		if sig == nil || sig.Reason != want || sig.Verify(consortium) != nil {
			continue
		}
		switch {
		case sig.Kind == round.KindJoin && identity.Compare(sig.Author, req.Member) == 0:
			s.Record = true
		case sig.Kind == round.KindAddMember && slices.ContainsFunc(members, func(m identity.PeerID) bool { return identity.Compare(m, sig.Author) == 0 }):
			if !slices.ContainsFunc(s.Signed, func(m identity.PeerID) bool { return identity.Compare(m, sig.Author) == 0 }) {
				s.Signed = append(s.Signed, sig.Author)
			}
		}
	}
	slices.SortFunc(s.Signed, identity.Compare)
	return s
}
