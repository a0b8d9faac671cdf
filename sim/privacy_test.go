package sim

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/privacy/dp"
	"github.com/globalbrain/globalbrain/round"
)

// TestNodesPrivacyBudget: under the update mode every member charges each
// round it takes part in, the report carries the epsilon per round, and a
// member reaching its ceiling declines from then on (here all of them, at
// once: the rounds after go by without updates).
func TestNodesPrivacyBudget(t *testing.T) {
	data := smallMNIST(t, 3000, 500)
	c := smallConfig()
	c.Members = 3
	c.Rounds = 4
	p := manifest.Privacy{Mode: manifest.PrivacyUpdate, DP: manifest.DP{Z: 1, Clip: 1, Delta: 1e-5}}
	// The ceiling lets each member publish twice.
	noise := dp.UpdateNoise{Z: 1, Clip: 1, Scale: manifest.DefaultDPScale}
	dim := 28*28*10 + 10
	a, err := dp.NewAccountant(nil)
	require.NoError(t, err)
	eps2, _, err := a.EpsilonAfter(1e-5, noise.Mechanism(dim), 2)
	require.NoError(t, err)
	eps3, _, err := a.EpsilonAfter(1e-5, noise.Mechanism(dim), 3)
	require.NoError(t, err)
	p.DP.Epsilon = (eps2 + eps3) / 2
	c.Privacy = p
	var exhausted []MemberBudget
	res, err := RunNodes(context.Background(), c, data, Faults{}, Observer{Exhausted: func(b MemberBudget) { exhausted = append(exhausted, b) }})
	require.NoError(t, err)
	require.Len(t, res.Rounds, 4)
	require.Equal(t, 3, res.Rounds[0].Participants)
	require.Equal(t, 3, res.Rounds[1].Participants)
	require.Equal(t, 0, res.Rounds[2].Participants, "every member is past its budget")
	require.Greater(t, res.Rounds[1].Epsilon, res.Rounds[0].Epsilon)
	require.InDelta(t, eps2, res.Rounds[3].Epsilon, 1e-9)
	require.Equal(t, 3, res.Rounds[3].Exhausted)
	require.NotNil(t, res.Privacy)
	require.InDelta(t, eps2, res.Privacy.Epsilon, 1e-9)
	require.Equal(t, 1e-5, res.Privacy.Delta)
	require.Len(t, res.Privacy.Exhausted, 3)
	require.Len(t, exhausted, 3)
	for _, b := range exhausted {
		require.Equal(t, uint64(3), b.Round)
	}

	// The direct loop keeps no budget.
	_, err = Run(context.Background(), c, data, Observer{})
	require.ErrorContains(t, err, "the direct loop runs no privacy mode")
	c.Privacy = manifest.Privacy{Mode: manifest.PrivacyDistributed}
	require.ErrorContains(t, c.Validate(), "privacy.dp.z: required for privacy.mode distributed")
}

// TestNodesDPSGD: under dp-sgd the built-in trainer runs DP-SGD with the
// manifest's parameters and every member charges ceil(E N / B) steps of
// the subsampled Gaussian per round it takes part in.
func TestNodesDPSGD(t *testing.T) {
	data := smallMNIST(t, 3000, 500)
	c := smallConfig()
	c.Members = 3
	c.Rounds = 2
	c.Strategy.Train.BatchSize = 50
	c.Strategy.Train.LR = 0.5
	c.Privacy = manifest.Privacy{Mode: manifest.PrivacyDPSGD, DP: manifest.DP{Z: 1, ExampleClip: 1, Epsilon: 50}}
	res, err := RunNodes(context.Background(), c, data, Faults{}, Observer{})
	require.NoError(t, err)
	// Each member holds 1000 examples: q = 0.05, 20 steps a round.
	p := dp.DPSGD{ExampleClip: 1, Z: 1, BatchSize: 50}
	a, err := dp.NewAccountant(nil)
	require.NoError(t, err)
	want, _, err := a.EpsilonAfter(manifest.DefaultDelta, p.Mechanism(1000), 2*p.Steps(1, 1000))
	require.NoError(t, err)
	require.NotNil(t, res.Privacy)
	require.InDelta(t, want, res.Privacy.Epsilon, 1e-9)
	require.Equal(t, 3, res.Rounds[1].Participants)
	require.Greater(t, res.Metrics.Accuracy, 0.3, "DP-SGD still learns")
}

// TestNodesDistributed: under the distributed mode every round is a secure
// aggregation of DDG encodings; each participant charges the round's DDG
// mechanism (noise for t - gamma honest inputs) before it publishes, the
// report carries the epsilon, a member at its ceiling declines, and once
// fewer than t remain the rounds go by without a sum.
func TestNodesDistributed(t *testing.T) {
	data := smallMNIST(t, 3000, 500)
	c := smallConfig()
	c.Members = 4 // n = 4: gamma = 1, t = 3, each adds noise for 2 honest
	c.Rounds = 3
	c.Workers = 2
	sa := &round.SecAggParams{KMin: 2, Distributed: &dp.DistributedNoise{Z: 1, Clip: 1, Scale: manifest.DefaultDPScale, Beta: dp.DefaultBeta}}
	tt, gamma, ok := sa.Threshold(4)
	require.True(t, ok)
	require.Equal(t, []int{3, 1}, []int{tt, gamma})
	mech := sa.NoiseFor(tt, gamma).Mechanism(28*28*10 + 10)
	a, err := dp.NewAccountant(nil)
	require.NoError(t, err)
	eps2, _, err := a.EpsilonAfter(1e-5, mech, 2)
	require.NoError(t, err)
	eps3, _, err := a.EpsilonAfter(1e-5, mech, 3)
	require.NoError(t, err)
	c.Privacy = manifest.Privacy{Mode: manifest.PrivacyDistributed, DP: manifest.DP{Z: 1, Clip: 1, Epsilon: (eps2 + eps3) / 2}}
	res, err := RunNodes(context.Background(), c, data, Faults{}, Observer{})
	require.NoError(t, err)
	require.Len(t, res.Rounds, 3)
	require.Equal(t, 4, res.Rounds[0].Participants)
	require.Equal(t, 4, res.Rounds[1].Participants)
	require.Equal(t, 0, res.Rounds[2].Participants, "every member is past its budget")
	require.NotNil(t, res.Privacy)
	require.InDelta(t, eps2, res.Privacy.Epsilon, 1e-9*eps2)
	require.Len(t, res.Privacy.Exhausted, 4)
}
