package member

import (
	"testing"

	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/round"
)

// The transport's Raft frame cap leaves room for the largest append the
// round machine lets raft build (plus the entries' framing and one
// oversized entry raft may still put in a message).
func TestRaftFrameFitsTheLargestAppend(t *testing.T) {
	if got := p2p.DefaultLimits().MaxRaftFrame; got < 2*round.MaxRaftAppendBytes {
		t.Fatalf("p2p MaxRaftFrame %d < 2 x round.MaxRaftAppendBytes %d", got, round.MaxRaftAppendBytes)
	}
}
