package round

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/wire"
)

// Gate is the one admission rule for gossip, shared by the transport's
// validator (which runs on the transport's goroutines) and the Machine
// (which re-checks the window when it steps a message): the author must be
// a member, the gossip author the message's signer, the round inside the
// window [applied-1, applied+2] and the signature valid. It also holds the
// digests the member may serve. The Machine keeps the gate's applied round
// and membership current; every method is safe for concurrent use.
type Gate struct {
	consortium [32]byte
	members    atomic.Pointer[[]identity.PeerID] // sorted
	applied    atomic.Uint64
	servable   sync.Map // Digest -> uint64: the round it became servable in; pinnedRound for ever
	view       atomic.Pointer[roundView]

	sigs sigCache // signatures that verified, for the gate and the Machine

	mu       sync.Mutex
	first    map[string]*Message // the current round's first announcement by author
	evidence []*Evidence         // equivocations seen, for the Machine to take
}

// roundView is what the gate knows of the round in progress, set by the
// Machine: who is sampled, the base everyone trains from, the update size
// and the example cap.
type roundView struct {
	round       uint64
	base        Digest
	sampled     map[string]bool
	updateBytes int64
	maxExamples int64
	secagg      bool // plain announcements are refused; the phases' messages come from sampled members
}

// setRound hands the gate the round in progress.
func (g *Gate) setRound(v *roundView) {
	if old := g.view.Load(); old != nil && old.round == v.round && old.base == v.base {
		return
	}
	g.view.Store(v)
	g.mu.Lock()
	g.first = map[string]*Message{}
	g.mu.Unlock()
}

// TakeEvidence returns and forgets the equivocations the gate saw.
func (g *Gate) takeEvidence() []*Evidence {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.evidence
	g.evidence = nil
	return out
}

// checkRound rejects what cannot be valid in the round in progress, so
// peer scoring sees it: an announcement from a member not sampled, from
// another base, of the wrong size or example count, or a second, different
// announcement from the same member (kept as evidence); a Decline from a
// member not sampled.
func (g *Gate) checkRound(msg *Message) (wire.Verdict, string) {
	v := g.view.Load()
	if v == nil || msg.Round != v.round {
		return wire.Accept, ""
	}
	author := string(msg.Author)
	switch msg.Kind {
	case KindDecline:
		if !v.sampled[author] {
			return wire.Reject, wire.ReasonNotSampled
		}
	case KindKeyAd, KindShares, KindInput, KindReveal, KindEcho:
		switch {
		case !v.secagg:
			return wire.Reject, wire.ReasonBadUpdate
		case !v.sampled[author]:
			return wire.Reject, wire.ReasonNotSampled
		case msg.Kind != KindEcho && msg.Base != v.base:
			return wire.Reject, wire.ReasonWrongBase
		}
	case KindAnnounce:
		switch {
		case v.secagg:
			return wire.Reject, wire.ReasonBadUpdate // an update in the clear: never under secure aggregation
		case !v.sampled[author]:
			return wire.Reject, wire.ReasonNotSampled
		case msg.Base != v.base:
			return wire.Reject, wire.ReasonWrongBase
		case msg.Length != v.updateBytes || (v.maxExamples > 0 && msg.Examples > v.maxExamples):
			return wire.Reject, wire.ReasonBadUpdate
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		prev, ok := g.first[author]
		if !ok {
			if g.first == nil {
				g.first = map[string]*Message{}
			}
			g.first[author] = msg
			return wire.Accept, ""
		}
		if sameAnnouncement(prev, msg) {
			return wire.Accept, ""
		}
		if len(g.evidence) < maxPendingEvidence {
			g.evidence = append(g.evidence, &Evidence{Round: msg.Round, Author: msg.Author, First: prev, Second: msg})
		}
		return wire.Reject, wire.ReasonEquivocation
	}
	return wire.Accept, ""
}

// NewGate returns a gate for a consortium whose membership is members.
func NewGate(consortium [32]byte, members []identity.PeerID) *Gate {
	g := &Gate{consortium: consortium}
	g.setMembers(members)
	return g
}

func (g *Gate) setMembers(ms []identity.PeerID) {
	ms = slices.Clone(ms)
	slices.SortFunc(ms, identity.Compare)
	g.members.Store(&ms)
}

// Members returns the applied membership, sorted.
func (g *Gate) Members() []identity.PeerID { return *g.members.Load() }

// IsMember reports whether id is a member.
func (g *Gate) IsMember(id identity.PeerID) bool {
	_, ok := slices.BinarySearchFunc(g.Members(), id, identity.Compare)
	return ok
}

// Applied returns the last decided round as the gate knows it.
func (g *Gate) Applied() uint64 { return g.applied.Load() }

// inWindow reports whether round r is inside the window around applied.
func inWindow(r, applied uint64) bool { return r+1 >= applied && r <= applied+2 }

// Validate judges a gossip message whose authenticated gossip author is
// author. An accepted message comes back decoded and verified, to be handed
// to Machine.Step as it is (the signature is not checked again).
func (g *Gate) Validate(author identity.PeerID, b []byte) (wire.Verdict, string, any) {
	msg, v, reason := g.Check(author, b)
	if v != wire.Accept {
		return v, reason, nil
	}
	return v, "", msg
}

// ValidateSigned judges a message no transport author vouches for (one a
// member relayed on request, as a new leader's sync pull): its author is
// the signer it names, and it must pass the same checks as gossip.
func (g *Gate) ValidateSigned(b []byte) (identity.PeerID, wire.Verdict, string, any) {
	msg, err := DecodeMessage(b)
	if err != nil {
		return nil, wire.Reject, wire.ReasonMalformed, nil
	}
	_, v, reason := g.check(msg, msg.Author)
	if v != wire.Accept {
		return msg.Author, v, reason, nil
	}
	return msg.Author, v, "", msg
}

// Check is Validate with a typed result: the decoded message comes back
// whenever it decodes, refused or not (the caller may count by kind).
func (g *Gate) Check(author identity.PeerID, b []byte) (*Message, wire.Verdict, string) {
	msg, err := DecodeMessage(b)
	if err != nil {
		return nil, wire.Reject, wire.ReasonMalformed
	}
	return g.check(msg, author)
}

func (g *Gate) check(msg *Message, author identity.PeerID) (*Message, wire.Verdict, string) {
	if identity.Compare(msg.Author, author) != 0 {
		return msg, wire.Reject, wire.ReasonAuthorMismatch
	}
	if !g.IsMember(author) {
		return msg, wire.Reject, wire.ReasonNotMember
	}
	if !inWindow(msg.Round, g.Applied()) {
		return msg, wire.Ignore, wire.ReasonStale
	}
	if err := g.verify(msg, g.consortium); err != nil {
		return msg, wire.Reject, wire.ReasonBadSignature
	}
	if v, reason := g.checkRound(msg); v != wire.Accept {
		return msg, v, reason
	}
	msg.verified = true
	return msg, wire.Accept, ""
}

// verify checks msg's signature as msg.Verify(consortium) does, once per
// distinct signed message: the gate and the Machine of a member share
// what they verified (see sigCache).
func (g *Gate) verify(msg *Message, consortium [32]byte) error {
	return g.sigs.verify(msg, consortium)
}

// pinnedRound marks a digest that is never pruned (the genesis model).
const pinnedRound = ^uint64(0)

// Serve records that blob d may be served to members (it is named in a
// valid announcement or entry, or is this member's own), from the next
// round on.
func (g *Gate) Serve(d Digest) { g.serveAt(d, g.Applied()+1) }

// serveAt records d as servable since round r (kept at its latest round).
func (g *Gate) serveAt(d Digest, r uint64) {
	if old, ok := g.servable.Load(d); ok && old.(uint64) >= r {
		return
	}
	g.servable.Store(d, r)
}

// pin makes d servable for ever.
func (g *Gate) pin(d Digest) { g.servable.Store(d, pinnedRound) }

// prune withdraws the digests that became servable before round r: the set
// stays bounded by the rounds members may still fetch from.
func (g *Gate) prune(r uint64) {
	g.servable.Range(func(k, v any) bool {
		if v.(uint64) < r {
			g.servable.Delete(k)
		}
		return true
	})
}

// Unserve withdraws d (the blob was deleted).
func (g *Gate) Unserve(d Digest) { g.servable.Delete(d) }

// Servable reports whether blob d may be served.
func (g *Gate) Servable(d [32]byte) bool {
	_, ok := g.servable.Load(Digest(d))
	return ok
}

// Applied is an applied outcome as a member persists it: the Raft index
// applied, the round and model it decided, the hash chain up to it, and
// the encoded entry.
type Applied struct {
	// Index is the raft log index applied.
	Index uint64
	// Round is the round of the latest applied outcome.
	Round uint64
	// Model is the digest of the model blob G(Round).
	Model Digest
	// ChainHash is the hash of this outcome record chained to the previous one.
	ChainHash Digest
	// Record is the encoded outcome entry; nil once the store pruned it.
	Record []byte
}
