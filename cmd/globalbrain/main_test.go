package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/sim"
)

func TestRunCommands(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Error(t, run(context.Background(), nil, &out, &errOut))
	err := run(context.Background(), []string{"train-everything"}, &out, &errOut)
	require.ErrorContains(t, err, `unknown command "train-everything"`)
	require.NoError(t, run(context.Background(), []string{"version"}, &out, &errOut))
	require.Contains(t, out.String(), "globalbrain")
}

func TestParseSimulateErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--members", "ten"}, "invalid value \"ten\" for flag -members"},
		{[]string{"--model", "resnet"}, "model"},
		{[]string{"--fraction", "0"}, "fraction"},
		{[]string{"--preset", "mcmahan-cnn"}, `preset "mcmahan-cnn" unknown`},
		{[]string{"--lr", "-1"}, "training"},
		{[]string{"--no-such-flag"}, "flag provided but not defined"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--crash", "3"}, "want I@R[:T]"},
		{[]string{"--crash", "x@2"}, `member "x"`},
		{[]string{"--crash", "12@2"}, "member 12 of 10"},
		{[]string{"--cut", "1,2@3"}, "want I,J,...@R:T"},
		{[]string{"--cut", "1,2@3:0"}, "positive tick count"},
		{[]string{"--drop", "1"}, "-drop 1"},
		{[]string{"--direct", "--drop", "0.1"}, "need the nodes"},
		{[]string{"--transport", "carrier-pigeon"}, `-transport "carrier-pigeon"`},
		{[]string{"--transport", "libp2p", "--drop", "0.1"}, "only -crash faults"},
		{[]string{"--privacy", "dp"}, `-privacy "dp", want none, dp-update, dp-sgd, secagg or dp-distributed`},
		{[]string{"--privacy", "secagg", "--dp-z", "1"}, "adds no noise"},
		{[]string{"--privacy", "dp-distributed", "--dp-z", "1"}, "-privacy dp-distributed needs -dp-z, -dp-clip and -dp-epsilon"},
		{[]string{"--privacy", "dp-update", "--dp-z", "1"}, "-privacy dp-update needs -dp-z, -dp-clip and -dp-epsilon"},
		{[]string{"--privacy", "dp-update", "--dp-z", "1", "--dp-clip", "1", "--dp-epsilon", "3", "--dp-example-clip", "1"}, "-dp-example-clip is dp-sgd's"},
		{[]string{"--privacy", "dp-sgd", "--dp-z", "1", "--dp-clip", "1", "--dp-epsilon", "3"}, "-dp-clip is dp-update's"},
		{[]string{"--dp-z", "1"}, "the -dp-* flags need -privacy dp-update, dp-distributed or dp-sgd"},
		{[]string{"--privacy", "dp-update", "--dp-z", "1", "--dp-clip", "1", "--dp-epsilon", "3", "--direct"}, "-privacy needs the nodes"},
		{[]string{"--privacy", "dp-update", "--dp-z", "1", "--dp-clip", "1", "--dp-epsilon", "3", "--dp-delta", "2"}, "privacy.dp.delta: 2, want in (0, 1)"},
	} {
		_, _, err := parseSimulate(tc.args, io.Discard)
		require.Error(t, err, tc.args)
		require.Contains(t, err.Error(), tc.want, tc.args)
	}
}

func TestParseSimulatePresets(t *testing.T) {
	c, o, err := parseSimulate([]string{"--preset", "mcmahan-2nn-noniid"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "mcmahan-2nn-noniid", o.preset)
	require.Equal(t, "out/mcmahan-2nn-noniid", o.out)
	require.Equal(t, 100, c.Members)
	require.Equal(t, "shards", c.Partition)
	require.Equal(t, 2, c.ShardsPerMember)
	require.Equal(t, 0.1, c.Fraction)
	require.Equal(t, 1000, c.Rounds)
	require.Equal(t, presetLR, c.Strategy.Train.LR)
	require.Equal(t, 10, c.Strategy.Train.BatchSize)
	require.True(t, c.StopAtTarget)

	// A flag overrides the preset whatever its position.
	c, _, err = parseSimulate([]string{"--rounds", "5", "--preset", "mcmahan-2nn-iid", "--crash", "3@2:40", "--cut", "0,1@1:30"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 5, c.Rounds)
	require.Equal(t, "iid", c.Partition)
	require.Equal(t, 100, c.Members)
	_, o, err = parseSimulate([]string{"--crash", "3@2:40", "--crash", "4@1", "--cut", "0,1@1:30"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []sim.Crash{{Member: 3, Round: 2, DownTicks: 40}, {Member: 4, Round: 1, DownTicks: 50}}, o.faults.Crashes)
	require.Equal(t, []sim.Partition{{Members: []int{0, 1}, Round: 1, Ticks: 30}}, o.faults.Partitions)
}

// TestSimulateOutput runs a tiny simulation on real MNIST and checks the
// lines users and scripts read.
func TestSimulateOutput(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	err := run(context.Background(), []string{"simulate", "--members", "3", "--model", "logreg", "--rounds", "2",
		"--lr", "0.05", "--out", filepath.Join(dir, "rep")}, &out, io.Discard)
	require.NoError(t, err)
	nodesOut := out.String()
	out.Reset()
	err = run(context.Background(), []string{"simulate", "--direct", "--members", "3", "--model", "logreg", "--rounds", "2",
		"--lr", "0.05", "--out", filepath.Join(dir, "rep")}, &out, io.Discard)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Regexp(t, `^\s+1\s+3/3\s`, lines[2])
	require.Regexp(t, `^\s+2\s+3/3\s`, lines[3])
	n := len(lines)
	require.Regexp(t, regexp.MustCompile(`^final accuracy 0\.(8|9)\d{3}$`), lines[n-2])
	require.Regexp(t, `^elapsed \d+\.\ds$`, lines[n-1])
	require.FileExists(t, filepath.Join(dir, "rep", "report.jsonl"))
	// The nodes and the direct loop print the same digests.
	digest := regexp.MustCompile(`model digest [0-9a-f]{64}`)
	require.Equal(t, digest.FindString(out.String()), digest.FindString(nodesOut))
	require.NotEmpty(t, digest.FindString(nodesOut))
	require.FileExists(t, filepath.Join(dir, "rep", "accuracy.png"))
}

// TestSimulatePrivacy: a dp-update run prints the epsilon of every round,
// the members that reach their budget, and the epsilon at the end.
func TestSimulatePrivacy(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	err := run(context.Background(), []string{"simulate", "--members", "3", "--model", "logreg", "--rounds", "3",
		"--lr", "0.05", "--out", filepath.Join(dir, "rep"), "--privacy", "dp-update", "--dp-z", "1", "--dp-clip", "1", "--dp-epsilon", "6"}, &out, io.Discard)
	require.NoError(t, err)
	s := out.String()
	require.Contains(t, s, "privacy dp-update: z 1, clip 1, each member's budget epsilon 6\n")
	require.Regexp(t, `round participants .* epsilon\n`, s)
	require.Regexp(t, `\n\s+1\s+3/3\s.*\s4\.7287\n`, s)
	require.Contains(t, s, "member 0 reached its privacy budget (epsilon 4.7287 spent, ceiling 6): it declines from round 2 on")
	require.Regexp(t, `\n\s+2\s+0/3\s`, s)
	require.Contains(t, s, "epsilon 4.7287 at delta 1e-05 (the most any member spent; budget 6)")
	require.Contains(t, s, "3 of 3 members reached their privacy budget and stopped participating")
	rep, err := os.ReadFile(filepath.Join(dir, "rep", "report.jsonl"))
	require.NoError(t, err)
	require.Contains(t, string(rep), `"privacy":{"mode":"update","delta":0.00001,"epsilon_ceiling":6,"epsilon":4.72`)
}

func TestBenchQuick(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"bench", "--quick", "--passes", "1"}, &out, io.Discard))
	s := out.String()
	for _, row := range []string{"fedavg aggregate", "train 2nn B=10", "train 2nn B=50", "train cnn B=50", "memory copy GB/s", "sgemm 256^3 GFLOP/s",
		"protocol 10 members C=1", "protocol 20 members C=0.5", "direct loop s/round", "MB written/round",
		"secagg 5 participants", "secagg 10 participants", "plain s/round", "MB fetched/member/round",
		"blob protocol 4 MB to 3 peers", "raw TCP MB/s", "libp2p 4 peers", "gossip MB/round", "blob payload MB/round"} {
		require.Contains(t, s, row)
	}
	require.NotRegexp(t, `\s0\.00\s+examples/s`, s, "every figure was measured")
	require.Error(t, run(context.Background(), []string{"bench", "--passes", "0"}, io.Discard, io.Discard))
}
