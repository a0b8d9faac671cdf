package round

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The servable set stays bounded: digests older than the window are
// withdrawn, the pinned genesis model never is (20,000 neighbour-round
// announcements used to grow it without end).
func TestGateServablePruned(t *testing.T) {
	g := NewGate([32]byte{1}, nil)
	g.pin(Digest{1})
	for r := uint64(1); r <= 20000; r++ {
		var d Digest
		d[0], d[1], d[2] = byte(r), byte(r>>8), 7
		g.applied.Store(r - 1)
		g.Serve(d)
		if r > 21 {
			g.prune(r - 21)
		}
	}
	n := 0
	g.servable.Range(func(any, any) bool { n++; return true })
	require.LessOrEqual(t, n, 23)
	require.True(t, g.Servable([32]byte{1}), "genesis stays servable")
}
