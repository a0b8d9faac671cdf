package round

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/identity"
)

func TestSample(t *testing.T) {
	ids := make([]identity.PeerID, 50)
	for i := range ids {
		ids[i] = identity.Derive(9, i).ID
	}
	cid := []byte("consortium")
	s1 := Sample(cid, 1, ids, 5)
	require.Len(t, s1, 5)
	require.Equal(t, s1, Sample(cid, 1, ids, 5))
	require.NotEqual(t, s1, Sample(cid, 2, ids, 5))
	require.NotEqual(t, s1, Sample([]byte("other"), 1, ids, 5))
	for i := 1; i < len(s1); i++ {
		require.Negative(t, identity.Compare(s1[i-1], s1[i]), "sample in peer-ID order")
	}
	// Over many rounds every member is sampled about equally often.
	counts := map[string]int{}
	for r := uint64(0); r < 2000; r++ {
		for _, id := range Sample(cid, r, ids, 5) {
			counts[string(id)]++
		}
	}
	require.Len(t, counts, len(ids))
	for _, n := range counts {
		require.InDelta(t, 200, n, 60)
	}
	require.Len(t, Sample(cid, 1, ids, 80), 50)
}
