// Package wire owns what a member's transport and its node hand each other,
// so that neither imports the other: the verdict a gossip validator returns
// and the reasons it counts (one type for p2p, the node and the metrics),
// and Inbound, one thing that arrived for the node. It depends on nothing
// but identity.
package wire

import (
	"fmt"

	"github.com/globalbrain/globalbrain/identity"
)

// Verdict is what the gossip gate decides about a message.
type Verdict int

// Verdicts map onto gossipsub's validation results.
const (
	// Accept delivers the message and forwards it to other members.
	Accept Verdict = iota
	// Ignore drops the message without penalising the peer that forwarded
	// it: stale rounds, duplicates.
	Ignore
	// Reject drops the message and counts against the forwarding peer's
	// score: malformed, forged, not from a member.
	Reject
)

// String returns "accept", "ignore" or "reject".
func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Ignore:
		return "ignore"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Reasons the gate gives for a verdict other than Accept; the metrics count
// by them.
const (
	ReasonMalformed      = "malformed"       // does not decode as a round message
	ReasonAuthorMismatch = "author_mismatch" // the gossip author did not sign the round message
	ReasonNotMember      = "not_member"      // the author is not a member
	ReasonStale          = "stale"           // a round outside the window
	ReasonBadSignature   = "bad_signature"   // the round message's signature does not verify
	ReasonStarting       = "starting"        // the node is not ready to judge yet
	ReasonNotSampled     = "not_sampled"     // an announcement or decline from a member not sampled this round
	ReasonWrongBase      = "wrong_base"      // an announcement trained from another model than the applied one
	ReasonBadUpdate      = "bad_update"      // an announcement of the wrong size or above the example cap
	ReasonEquivocation   = "equivocation"    // a second, different announcement for one round (kept as evidence)
)

// Kind says what an Inbound carries.
type Kind int

// Inbound kinds.
const (
	// Gossip is a gossip message the gate accepted: Msg is the gate's
	// decoded value, Data the raw bytes.
	Gossip Kind = iota + 1
	// Raft is an encoded Raft message from member From.
	Raft
	// SyncRequest is member From asking for the round messages of Round;
	// the node answers on Reply (buffered) or not at all.
	SyncRequest
)

// Inbound is one thing that arrived for the node from the network.
type Inbound struct {
	Kind  Kind
	From  identity.PeerID
	Data  []byte
	Msg   any
	Round uint64
	Reply chan<- [][]byte
}
