package member_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/member/membertest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/train/local"
)

// plainUpdates are the update blobs a plain round would publish for round
// r: what must never appear in any member's store under secure aggregation.
func plainUpdates(c *membertest.Cluster, dim int, r uint64) [][]byte {
	var out [][]byte
	for i := range c.IDs {
		d, _, _ := membertest.FixedTrainer{Scale: float32(i + 1)}.Train(context.Background(), r, &fedavg.Global{Weights: make([]float32, dim)}, fedavg.TrainConfig{})
		out = append(out, round.EncodeUpdate(d))
	}
	return out
}

// Secure aggregation through the nodes: every round commits through the
// four phases, every member ends on one digest, the model is plain FedAvg
// within the encoding's quantization bound, no member's store holds an
// unmasked update, and the private records are wiped.
func TestSecAggRounds(t *testing.T) {
	const rounds = 3
	c := membertest.MakeCluster(t, membertest.Options{Members: 5, Rounds: rounds, Privacy: manifest.Privacy{Mode: manifest.PrivacySecAgg}})
	c.RunUntil(t, func() bool { return c.AllApplied(rounds) })
	checkSecAgg(t, c, rounds, 0)
}

// A participant that never delivers its input drops out in phase 2: the
// Unmask leaves it in D, the survivors reveal its mask key's shares, and
// the sum of the other four is exact.
func TestSecAggDropout(t *testing.T) {
	const rounds = 2
	c := membertest.MakeCluster(t, membertest.Options{Members: 5, Rounds: rounds, Privacy: manifest.Privacy{Mode: manifest.PrivacySecAgg},
		Trainers: map[int]node.Trainer{4: membertest.Silent{}}})
	c.RunUntil(t, func() bool { return c.AllApplied(rounds) })
	checkSecAgg(t, c, rounds, 4)
}

// checkSecAgg checks a cluster that ran rounds secure aggregations: one
// digest, plain FedAvg of what each Commit names (exactly inputs of them
// if inputs > 0), no plain update in any store, private records wiped.
func checkSecAgg(t *testing.T, c *membertest.Cluster, rounds, inputs int) {
	t.Helper()
	genesis, err := local.Genesis(local.Spec(c.Manifest), c.Manifest.Model.InitSeed)
	require.NoError(t, err)
	dim := len(genesis.Weights)
	var model *fedavg.Global
	for i := range c.Members {
		require.Empty(t, c.Node(i).Status().Halted, "member %d", i)
		last, err := c.Store(i).LastApplied()
		require.NoError(t, err)
		require.Equal(t, uint64(rounds), last.Round)
		if model == nil {
			b, err := c.Store(i).Blob(last.Model)
			require.NoError(t, err)
			model, err = fedavg.Decode(b)
			require.NoError(t, err)
		}
		require.Equal(t, model.Digest(), last.Model, "member %d ends on another model", i)
	}

	// The model is plain FedAvg of the inputs each Commit names (equal
	// weights: the mean of their FixedTrainer scales times r * 1e-4; the
	// FedAvg server step is 1), within the encoding's quantization bound.
	_, _, ents, err := c.Store(0).LoadRaft()
	require.NoError(t, err)
	scale := map[string]float64{}
	for i, id := range c.IDs {
		scale[string(id.ID)] = float64(i + 1)
	}
	want, commits := 0.0, 0
	for _, ent := range ents {
		e, err := round.DecodeEntry(ent.GetData())
		if err != nil || e.Kind != round.EntryCommit {
			continue
		}
		commits++
		if inputs > 0 {
			require.Len(t, e.Included, inputs, "round %d", e.Round)
		}
		require.Len(t, e.Reveals, 4, "t reveals") // t = max(ceil(2n/3), n/3+2) for n = 5
		mean := 0.0
		for _, a := range e.Included {
			require.Equal(t, round.KindInput, a.Kind)
			mean += scale[string(a.Author)]
		}
		want += mean / float64(len(e.Included)) * float64(e.Round) * 1e-4
	}
	require.Equal(t, rounds, commits, "every round commits")
	enc := node.SecAggParams(c.Manifest).Encoding
	bound := float64(rounds) * (enc.ErrorBound(5)/300 + 1e-7) // per round: the decoded sum's error over the total weight (>= 3 x 100), and float32 rounding
	for k, w := range model.Weights {
		require.InDelta(t, want, float64(w)-float64(genesis.Weights[k]), bound, "coordinate %d", k)
	}

	for i := range c.Members {
		ds, err := c.Store(i).Blobs()
		require.NoError(t, err)
		for r := uint64(1); r <= uint64(rounds); r++ {
			for _, p := range plainUpdates(c, dim, r) {
				for _, d := range ds {
					b, err := c.Store(i).Blob(d)
					require.NoError(t, err)
					require.False(t, bytes.Equal(b, p), "member %d stores a plain update of round %d", i, r)
				}
			}
		}
		priv, err := c.Store(i).List("secagg-private")
		require.NoError(t, err)
		require.Empty(t, priv, "member %d keeps secagg secrets of decided rounds", i)
	}
}
