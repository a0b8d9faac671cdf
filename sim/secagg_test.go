package sim

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/node"
)

// Secure aggregation through the simulated consortium: its accuracy is
// the plain run's (the sum is exact up to the fixed-point grid), and a
// participant killed in any phase of a round, after it persisted its work
// and before it published it, drops out of that round only: the round
// commits without it (or, killed before its reveal, with its input and the
// others' reveals), every member ends on one digest (RunNodes checks it).
func TestSecAggDropEachPhase(t *testing.T) {
	data := smallMNIST(t, 3000, 500)
	c := smallConfig()
	c.Members = 6 // n = 6: t = max(ceil(12/3), 2 + 2) = 4, two may drop
	c.Rounds = 3
	c.Workers = 2
	plain, err := RunNodes(context.Background(), c, data, Faults{}, Observer{})
	require.NoError(t, err)
	c.Privacy = manifest.Privacy{Mode: manifest.PrivacySecAgg}
	clean, err := RunNodes(context.Background(), c, data, Faults{}, Observer{})
	require.NoError(t, err)
	require.InDelta(t, plain.Metrics.Accuracy, clean.Metrics.Accuracy, 0.005)
	for _, r := range clean.Rounds {
		require.Equal(t, 6, r.Participants, "round %d", r.Round)
	}
	for phase, want := range map[string]int{"keys": 5, "shares": 5, "input": 5, "reveal": 6} {
		t.Run(phase, func(t *testing.T) {
			f := Faults{CrashPoints: []CrashPoint{{Member: 5, Point: node.CrashSecAgg + phase, Hit: 2, DownTicks: 150}}} // past the phase deadline (25 ticks) and the input phase (100)
			got, err := RunNodes(context.Background(), c, data, f, Observer{})
			require.NoError(t, err)
			require.Equal(t, 1, got.CrashPointsFired)
			require.Len(t, got.Rounds, c.Rounds)
			require.Equal(t, 6, got.Rounds[0].Participants)
			require.Equal(t, want, got.Rounds[1].Participants, "round 2, member 5 killed in its %s phase", phase)
			require.InDelta(t, clean.Metrics.Accuracy, got.Metrics.Accuracy, 0.02)
		})
	}
}
