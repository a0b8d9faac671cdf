package roundtest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

const seeds = 20

func forSeeds(t *testing.T, f func(t *testing.T, seed uint64)) {
	for s := uint64(0); s < seeds; s++ {
		t.Run("", func(t *testing.T) { f(t, s) })
	}
}

func TestHappyPath(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e, err := New(Options{Members: 10, Voters: 5, Seed: seed})
		require.NoError(t, err)
		require.NoError(t, e.Run(2000, func() bool { return e.AllApplied(3) }))
		for r := uint64(1); r <= 3; r++ {
			require.Equal(t, "commit", string(e.Decided[r].Kind), "round %d", r)
		}
	})
}
