package member_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/member/membertest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/privacy/dp"
)

// The distributed mode through the nodes: every round commits through the
// secure-aggregation phases with each participant's DDG encoding as its
// input, every member ends on one model, that model is the plain mean plus
// noise of the size the round's encoding promises (no more, no less), no
// plain update is stored anywhere, and each member's budget holds exactly
// one charge of the round's DDG mechanism per round it took part in.
func TestDistributedRounds(t *testing.T) {
	const rounds, z, clip = 3, 0.01, 1.0
	c := membertest.MakeCluster(t, membertest.Options{Members: 5, Rounds: rounds,
		Privacy: manifest.Privacy{Mode: manifest.PrivacyDistributed, DP: manifest.DP{Z: z, Clip: clip, Epsilon: 1e6}}})
	c.RunUntil(t, func() bool { return c.AllApplied(rounds) })

	genesis, model := oneModel(t, c, rounds)
	dim := len(genesis.Weights)
	want, commits := committedMean(t, c, 5)
	require.Equal(t, rounds, commits, "every round commits")

	// n = 5: t = 4, gamma = 1, so each participant adds the variance of
	// t - gamma = 3 honest ones, and the mean of 5 carries per coordinate
	// a noise of standard deviation z*S/sqrt(3*5) per round.
	sa := node.SecAggParams(c.Manifest)
	noise := sa.NoiseFor(4, 1)
	require.Equal(t, 3, noise.Honest)
	sd := z * clip / math.Sqrt(3*5) * math.Sqrt(rounds)
	var sum, sq float64
	for k, w := range model.Weights {
		r := float64(w) - float64(genesis.Weights[k]) - want
		sum += r
		sq += r * r
	}
	mean := sum / float64(dim)
	got := math.Sqrt(sq/float64(dim) - mean*mean)
	t.Logf("dim %d: residual mean %.3g, sd %.4g, want sd %.4g", dim, mean, got, sd)
	require.InDelta(t, 0, mean, 6*sd/math.Sqrt(float64(dim)), "the noise is centred")
	require.InDelta(t, sd, got, 0.1*sd, "the noise has the size the encoding promises")

	noPlainUpdates(t, c, dim, rounds)

	// Each member charged the round's mechanism once per round.
	acct, err := dp.NewAccountant(dp.DefaultOrders())
	require.NoError(t, err)
	require.NoError(t, acct.Spend(noise.Mechanism(dim), rounds))
	eps, _, err := acct.Epsilon(c.Manifest.Privacy.DP.Delta)
	require.NoError(t, err)
	for i := range c.Members {
		p := c.Node(i).Privacy()
		require.NotNil(t, p, "member %d keeps a budget", i)
		require.Equal(t, int64(rounds), p.Rounds, "member %d", i)
		require.InDelta(t, eps, p.Spent, 1e-9*eps, "member %d", i)
	}
}
