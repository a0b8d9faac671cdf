package roundtest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A leader whose own entry fails recomputation steps down at once (it used
// to compare the entry's term with a term that was never set, and stayed
// until the stall rule replaced it after 2 deadlines).
func TestByzantineLeaderStepsDown(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 5, Seed: seed})
		require.NoError(t, e.Run(2000, func() bool { return e.Leader() >= 0 }))
		bad := e.Leader()
		e.Members[bad].Byzantine = true
		start := e.Ticks
		require.NoError(t, e.Run(6000, func() bool { l := e.Leader(); return l >= 0 && l != bad }))
		require.Less(t, e.Ticks-start, e.Params.DeadlineTicks, "replaced after %d ticks: by the stall rule, not by stepping down", e.Ticks-start)
		require.Positive(t, e.Members[bad].M.Counters.InvalidEntries, "the leader's entry was judged invalid")
		e.Members[bad].Byzantine = false
		require.NoError(t, e.Run(4000, applied(e, 3)))
		sameModel(t, e)
	})
}

// A leader that heartbeats, never proposes and ignores leadership
// transfers is replaced: after the polite transfer fails, the designated
// successor forces an election that voters grant despite the idle leader's
// lease.
func TestLeaderIgnoringTransferIsReplaced(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 5, Seed: seed})
		require.NoError(t, e.Run(2000, applied(e, 1)))
		lazy := e.Leader()
		require.GreaterOrEqual(t, lazy, 0)
		e.Members[lazy].Lazy = true
		e.Members[lazy].IgnoreTransfer = true
		start := e.Ticks
		require.NoError(t, e.Run(8000, func() bool { l := e.Leader(); return l >= 0 && l != lazy }))
		p := e.Params
		require.LessOrEqual(t, e.Ticks-start, 4*p.DeadlineTicks+4*p.ElectionTicks, "replaced after %d ticks", e.Ticks-start)
		require.NoError(t, e.Run(4000, applied(e, 3)))
		sameModel(t, e)
	})
}
