package member_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"encoding/json"
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
	genesis, model := oneModel(t, c, rounds)
	dim := len(genesis.Weights)

	// The model is plain FedAvg of the inputs each Commit names (equal
	// weights: the mean of their FixedTrainer scales times r * 1e-4; the
	// FedAvg server step is 1), within the encoding's quantization bound.
	want, commits := committedMean(t, c, inputs)
	require.Equal(t, rounds, commits, "every round commits")
	enc := node.SecAggParams(c.Manifest).Encoding
	bound := float64(rounds) * (enc.ErrorBound(5)/300 + 1e-7) // per round: the decoded sum's error over the total weight (>= 3 x 100), and float32 rounding
	for k, w := range model.Weights {
		require.InDelta(t, want, float64(w)-float64(genesis.Weights[k]), bound, "coordinate %d", k)
	}
	noPlainUpdates(t, c, dim, rounds)
}

// oneModel checks that every member applied rounds and ends on one model,
// and returns the genesis model and that one.
func oneModel(t *testing.T, c *membertest.Cluster, rounds int) (genesis, model *fedavg.Global) {
	t.Helper()
	genesis, err := local.Genesis(local.Spec(c.Manifest), c.Manifest.Model.InitSeed)
	require.NoError(t, err)
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
	return genesis, model
}

// committedMean is the sum over the committed rounds of the mean
// FixedTrainer update of the inputs each Commit names (the mean of their
// scales times r * 1e-4), and the number of Commits.
func committedMean(t *testing.T, c *membertest.Cluster, inputs int) (float64, int) {
	t.Helper()
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
	return want, commits
}

// noPlainUpdates checks that no member stores a plain update of rounds
// 1..rounds and that every private record is wiped.
func noPlainUpdates(t *testing.T, c *membertest.Cluster, dim, rounds int) {
	t.Helper()
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
		for _, bucket := range []string{"secagg-private", "secagg-private-update"} {
			priv, err := c.Store(i).List(bucket)
			require.NoError(t, err)
			require.Empty(t, priv, "member %d keeps %s of decided rounds", i, bucket)
		}
	}
}

// record is the fields of a participant's private secagg record
// (node/secagg.go) this test reads.
type record struct {
	Round  uint64 `json:"round"`
	Keys   []byte `json:"keys"`
	Shares *struct {
		Digest fedavg.Digest `json:"digest"`
	} `json:"shares"`
	Input *struct {
		Digest fedavg.Digest `json:"digest"`
	} `json:"input"`
	Reveal *struct {
		Digest fedavg.Digest `json:"digest"`
	} `json:"reveal"`
}

func privateRecord(t *testing.T, c *membertest.Cluster, i int) *record {
	vs, err := c.Store(i).List("secagg-private")
	require.NoError(t, err)
	for _, v := range vs {
		var r record
		require.NoError(t, json.Unmarshal(v, &r))
		if r.Round == 1 {
			return &r
		}
	}
	return nil
}

// A participant killed right after it persisted and published in a phase
// comes back with the same secrets and republishes the same bytes, never
// new ones: the round commits with its contribution intact (its keys in
// Keys, its share blob in Shares, its input in Unmask are the ones it
// persisted), the sum decodes, and nobody saw it equivocate.
func TestSecAggRestartEachPhase(t *testing.T) {
	for _, phase := range []string{"keys", "shares", "input", "reveal"} {
		t.Run(phase, func(t *testing.T) {
			const k = 4 // the member restarted
			c := membertest.MakeCluster(t, membertest.Options{Members: 5, Rounds: 1, Privacy: manifest.Privacy{Mode: manifest.PrivacySecAgg}})
			var saved record
			c.RunUntil(t, func() bool {
				r := privateRecord(t, c, k)
				if r == nil {
					return false
				}
				done := map[string]bool{"keys": r.Keys != nil, "shares": r.Shares != nil, "input": r.Input != nil, "reveal": r.Reveal != nil}[phase]
				if done {
					saved = *r
				}
				return done
			})
			c.Stop(k)
			c.Start(t, k)
			c.RunUntil(t, func() bool { return c.AllApplied(1) })

			_, _, ents, err := c.Store(0).LoadRaft()
			require.NoError(t, err)
			self := c.IDs[k].ID
			find := func(ms []*round.Message) *round.Message {
				for _, m := range ms {
					if bytes.Equal(m.Author, self) {
						return m
					}
				}
				return nil
			}
			committed := false
			for _, ent := range ents {
				e, err := round.DecodeEntry(ent.GetData())
				if err != nil {
					continue
				}
				switch e.Kind {
				case round.EntryKeys:
					a := find(e.Included)
					require.NotNil(t, a, "its keys are in U1")
					c0, err := ecdh.X25519().NewPrivateKey(saved.Keys[:32])
					require.NoError(t, err)
					s0, err := ecdh.X25519().NewPrivateKey(saved.Keys[32:])
					require.NoError(t, err)
					require.Equal(t, append(c0.PublicKey().Bytes(), s0.PublicKey().Bytes()...), a.Data, "the KeyAd of the persisted keys")
				case round.EntryShares:
					if saved.Shares != nil {
						require.Equal(t, saved.Shares.Digest, find(e.Included).Digest, "the persisted share blob")
					}
				case round.EntryUnmask:
					require.NotNil(t, find(e.Included), "its input is in U3: the restarted member took part")
					if saved.Input != nil {
						require.Equal(t, saved.Input.Digest, find(e.Included).Digest, "the persisted input")
					}
				case round.EntryCommit:
					committed = true
					if saved.Reveal != nil {
						if r := find(e.Reveals); r != nil {
							require.Equal(t, saved.Reveal.Digest, r.Digest, "the persisted reveal")
						}
					}
				}
			}
			require.True(t, committed, "round 1 commits")
			for i := range c.Members {
				require.Zero(t, c.Node(i).Status().Counters.Equivocations, "member %d saw an equivocation", i)
			}
		})
	}
}
