package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/train"
)

var (
	mnistOnce sync.Once
	mnist     Data
	mnistErr  error
)

// smallMNIST is the first n training and m test examples of real MNIST,
// loaded the way a user's node loads it.
func smallMNIST(t *testing.T, n, m int) Data {
	t.Helper()
	mnistOnce.Do(func() { mnist, mnistErr = LoadData(DefaultConfig()) })
	require.NoError(t, mnistErr)
	cut := func(d *train.Dataset, k int) *train.Dataset {
		c := *d
		c.N, c.X, c.Y = k, d.X[:k*d.Dim], d.Y[:k]
		return &c
	}
	return Data{Train: cut(mnist.Train, n), Test: cut(mnist.Test, m)}
}

func smallConfig() Config {
	c := DefaultConfig()
	c.Members = 5
	c.Model = "logreg"
	c.Rounds = 3
	c.Strategy.Train.LR = 0.05
	return c
}

func TestRunLearnsAndIsDeterministic(t *testing.T) {
	data := smallMNIST(t, 5000, 2000)
	c := smallConfig()
	c.Workers = 1
	a, err := Run(context.Background(), c, data, Observer{})
	require.NoError(t, err)
	require.Len(t, a.Rounds, 3)
	require.Greater(t, a.Metrics.Accuracy, 0.80, "logistic regression on 5000 MNIST examples")
	require.Less(t, a.Rounds[2].TrainLoss, a.Rounds[0].TrainLoss)

	// Scheduling does not change the outcome: two workers give the same digests.
	c.Workers = 2
	var trained int
	b, err := Run(context.Background(), c, data, Observer{Trained: func(round, done, total int) { trained++ }})
	require.NoError(t, err)
	require.Equal(t, 15, trained)
	for i := range a.Rounds {
		require.Equal(t, a.Rounds[i].Digest, b.Rounds[i].Digest, "round %d", i+1)
	}

	// Another seed is another run.
	c.Seed = 2
	d, err := Run(context.Background(), c, data, Observer{})
	require.NoError(t, err)
	require.NotEqual(t, a.Final.Digest(), d.Final.Digest())
}

func TestRunFractionSamplesMembers(t *testing.T) {
	data := smallMNIST(t, 5000, 1000)
	c := smallConfig()
	c.Members = 10
	c.Fraction = 0.3
	c.Rounds = 2
	res, err := Run(context.Background(), c, data, Observer{})
	require.NoError(t, err)
	for _, rr := range res.Rounds {
		require.Equal(t, 3, rr.Participants)
		require.Equal(t, int64(3*500), rr.Examples)
	}
}

func TestRunStopsAtTarget(t *testing.T) {
	data := smallMNIST(t, 5000, 1000)
	c := smallConfig()
	c.Rounds = 10
	c.Target = 0.5
	c.StopAtTarget = true
	res, err := Run(context.Background(), c, data, Observer{})
	require.NoError(t, err)
	require.Equal(t, 1, res.TargetRound)
	require.Len(t, res.Rounds, 1)
}

func TestRunCancelled(t *testing.T) {
	data := smallMNIST(t, 5000, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, smallConfig(), data, Observer{})
	require.ErrorIs(t, err, context.Canceled)
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Dataset = "cifar" }, "dataset"},
		{func(c *Config) { c.Partition = "random" }, "partition"},
		{func(c *Config) { c.Partition, c.Alpha = "dirichlet", 0 }, "alpha"},
		{func(c *Config) { c.Members = 0 }, "members"},
		{func(c *Config) { c.Model = "resnet" }, "model"},
		{func(c *Config) { c.Rounds = 0 }, "rounds"},
		{func(c *Config) { c.Fraction = 1.5 }, "fraction"},
		{func(c *Config) { c.MinParticipants = 11 }, "min-participants"},
		{func(c *Config) { c.Strategy.Strategy = "fedsgd" }, "strategy"},
		{func(c *Config) { c.Strategy.Train.BatchSize = 0 }, "training"},
		{func(c *Config) { c.Target = 0 }, "target"},
	} {
		c := DefaultConfig()
		tc.edit(&c)
		err := c.Validate()
		require.Error(t, err)
		require.Contains(t, err.Error(), tc.want)
	}
	require.NoError(t, DefaultConfig().Validate())
}

func TestReport(t *testing.T) {
	data := smallMNIST(t, 2000, 500)
	c := smallConfig()
	c.Rounds = 2
	res, err := Run(context.Background(), c, data, Observer{})
	require.NoError(t, err)
	dir := t.TempDir()
	jsonl, chart, err := res.WriteReport(filepath.Join(dir, "r"))
	require.NoError(t, err)
	f, err := os.Open(jsonl)
	require.NoError(t, err)
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		lines = append(lines, m)
	}
	require.Len(t, lines, 3)
	require.EqualValues(t, 1, lines[0]["round"])
	require.Equal(t, true, lines[2]["summary"])
	require.Equal(t, res.Final.Digest().String(), lines[2]["digest"])
	png, err := os.ReadFile(chart)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")))
	require.Greater(t, len(png), 10000)
	require.True(t, strings.HasSuffix(chart, ".png"))
}

// TestNodesMatchDirectLoop is the differential test: for the same seed,
// fraction 1 and no faults, the consortium of full nodes (Raft, stores,
// in-memory network) ends on the same model digest as the direct loop.
func TestNodesMatchDirectLoop(t *testing.T) {
	data := smallMNIST(t, 3000, 1000)
	for _, strategy := range []string{"fedavg", "fedadam"} {
		t.Run(strategy, func(t *testing.T) {
			c := smallConfig()
			c.Members = 4
			c.Rounds = 3
			c.Workers = 2
			c.Strategy.Strategy = strategy
			direct, err := Run(context.Background(), c, data, Observer{})
			require.NoError(t, err)
			nodes, err := RunNodes(context.Background(), c, data, Faults{}, Observer{})
			require.NoError(t, err)
			require.Len(t, nodes.Rounds, 3)
			for i := range direct.Rounds {
				require.Equal(t, direct.Rounds[i].Digest, nodes.Rounds[i].Digest, "round %d", i+1)
				require.Equal(t, direct.Rounds[i].Participants, nodes.Rounds[i].Participants)
			}
			require.Equal(t, direct.Final.Digest(), nodes.Final.Digest())
			require.Equal(t, direct.Metrics.Accuracy, nodes.Metrics.Accuracy)
		})
	}
}

// TestCrashAtEveryPoint kills a member at every crash point of the node's
// loop (before and after persisting a Ready, after publishing, after
// Advance) and of its store (inside PutBlob after the temp write, the
// rename and the directory fsync; before the Raft transaction commits;
// inside apply before and after the bbolt commit). Each run reopens the
// member's store, resumes, and must end on the digest of an uncrashed run.
func TestCrashAtEveryPoint(t *testing.T) {
	data := smallMNIST(t, 3000, 500)
	c := smallConfig()
	c.Members = 4
	c.Rounds = 3
	c.Workers = 2
	want, err := RunNodes(context.Background(), c, data, Faults{}, Observer{})
	require.NoError(t, err)
	points := []string{
		node.CrashBeforePersist, node.CrashAfterPersist, node.CrashAfterPublish, node.CrashAfterAdvance,
		store.CrashBlobTmpWritten, store.CrashBlobRenamed, store.CrashBlobDirSynced,
		store.CrashRaftBeforeCommit, store.CrashApplyBeforeCommit, store.CrashApplyCommitted,
	}
	for _, p := range points {
		hits := []int{2, 9}
		if p == store.CrashApplyBeforeCommit || p == store.CrashApplyCommitted {
			hits = []int{1, 3} // one apply per round: the first and the last
		}
		for _, hit := range hits {
			for _, member := range []int{0, 3} {
				t.Run(fmt.Sprintf("%s#%d/member%d", p, hit, member), func(t *testing.T) {
					f := Faults{CrashPoints: []CrashPoint{{Member: member, Point: p, Hit: hit, DownTicks: 3}}}
					got, err := RunNodes(context.Background(), c, data, f, Observer{})
					require.NoError(t, err)
					require.Equal(t, 1, got.CrashPointsFired, "the crash point was never reached")
					for i, r := range got.Rounds {
						require.Equal(t, want.Rounds[i].Participants, r.Participants, "round %d", r.Round)
						require.Equal(t, want.Rounds[i].Digest, r.Digest, "round %d", r.Round)
					}
					require.Equal(t, want.Final.Digest(), got.Final.Digest())
				})
			}
		}
	}
}

// TestFaultsKeepOneDigest drops messages, crashes and restarts members and
// cuts a minority off: every live member still ends on one digest (RunNodes
// checks it) and the final accuracy is within 1 point of the fault-free run.
func TestFaultsKeepOneDigest(t *testing.T) {
	data := smallMNIST(t, 5000, 1000)
	c := smallConfig()
	c.Members = 6
	c.Rounds = 4
	c.Workers = 2
	clean, err := RunNodes(context.Background(), c, data, Faults{}, Observer{})
	require.NoError(t, err)
	for name, f := range map[string]Faults{
		"drop":  {Drop: 0.05},
		"crash": {Crashes: []Crash{{Member: 1, Round: 1, DownTicks: 30}, {Member: 4, Round: 2, DownTicks: 200}}},
		"cut":   {Partitions: []Partition{{Members: []int{0, 5}, Round: 2, Ticks: 150}}},
		"all": {Drop: 0.02, Crashes: []Crash{{Member: 2, Round: 1, DownTicks: 120}},
			Partitions: []Partition{{Members: []int{3}, Round: 3, Ticks: 120}}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := RunNodes(context.Background(), c, data, f, Observer{})
			require.NoError(t, err)
			require.Len(t, got.Rounds, c.Rounds)
			require.InDelta(t, clean.Metrics.Accuracy, got.Metrics.Accuracy, 0.01)
		})
	}
}

// TestLibp2pMatchesDirectLoop runs the members over real libp2p hosts on
// 127.0.0.1 (gater, gossipsub, blob and Raft streams) and kills one member
// once round 1 is decided: all end on the direct loop's digest.
func TestLibp2pMatchesDirectLoop(t *testing.T) {
	data := smallMNIST(t, 3000, 500)
	c := smallConfig()
	c.Members = 4
	c.Rounds = 3
	c.Workers = 2
	direct, err := Run(context.Background(), c, data, Observer{})
	require.NoError(t, err)
	got, err := RunLibp2p(context.Background(), c, data, Faults{Crashes: []Crash{{Member: 2, Round: 1, DownTicks: 5}}}, Observer{})
	require.NoError(t, err)
	require.Equal(t, direct.Final.Digest(), got.Final.Digest())
}

// TestNodesStopAtTarget: the nodes stop at the first round reaching the
// target; members that applied a round beyond it are compared (and the
// report ends) at the target round, as in the direct loop.
func TestNodesStopAtTarget(t *testing.T) {
	data := smallMNIST(t, 5000, 1000)
	c := smallConfig()
	c.Rounds = 10
	c.Target = 0.5
	c.StopAtTarget = true
	direct, err := Run(context.Background(), c, data, Observer{})
	require.NoError(t, err)
	nodes, err := RunNodes(context.Background(), c, data, Faults{}, Observer{})
	require.NoError(t, err)
	require.Equal(t, direct.TargetRound, nodes.TargetRound)
	require.Len(t, nodes.Rounds, len(direct.Rounds))
	require.Equal(t, direct.Final.Digest(), nodes.Final.Digest())
	require.Equal(t, direct.Metrics.Accuracy, nodes.Metrics.Accuracy)
}
