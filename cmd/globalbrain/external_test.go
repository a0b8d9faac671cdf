package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/api"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/train"
)

// python is Debian's interpreter with torch (make testdeps installs
// python3-torch), named as a data owner's node.yaml names it.
const python = "/usr/bin/python3"

func needTorch(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import torch, numpy").CombinedOutput(); err != nil {
		t.Fatalf("%s has no torch (%v: %s): make testdeps installs python3-torch", python, err, out)
	}
}

// mnistSubset writes the first nTrain training and nTest test examples of
// MNIST (from the Go module cache) into dir as IDX files: real data, small
// enough that three nodes load it at once under the race detector.
func mnistSubset(t *testing.T, dir string, nTrain, nTest int) {
	t.Helper()
	src, err := train.MNISTDir()
	require.NoError(t, err)
	for _, f := range []struct {
		prefix string
		n      int
	}{{"train", nTrain}, {"t10k", nTest}} {
		for _, kind := range []struct {
			name       string
			header, sz int
		}{{"images-idx3-ubyte", 16, 28 * 28}, {"labels-idx1-ubyte", 8, 1}} {
			in, err := os.Open(filepath.Join(src, f.prefix+"-"+kind.name+".gz"))
			require.NoError(t, err)
			zr, err := gzip.NewReader(in)
			require.NoError(t, err)
			b := make([]byte, kind.header+f.n*kind.sz)
			_, err = io.ReadFull(zr, b)
			require.NoError(t, err)
			in.Close()
			binary.BigEndian.PutUint32(b[4:], uint32(f.n))
			require.NoError(t, os.WriteFile(filepath.Join(dir, f.prefix+"-"+kind.name), b, 0o644))
		}
	}
}

// consortium lays out n labs on the first 12,000 training and 2,000 test
// examples of MNIST, with the manifest's model, training and round
// sections as given; trainer[i], if set, is lab i's trainer section.
func consortium(t *testing.T, n int, model, training, round string, trainer map[int]string) []string {
	t.Helper()
	root := t.TempDir()
	data := filepath.Join(root, "data")
	require.NoError(t, os.MkdirAll(data, 0o755))
	mnistSubset(t, data, 12000, 2000)
	ports := freePorts(t, n)
	var ids []identity.PeerID
	var members strings.Builder
	for i := range n {
		id, _, err := p2p.LoadOrCreateKey(filepath.Join(root, fmt.Sprintf("lab-%d", i), "identity.key"))
		require.NoError(t, err)
		ids = append(ids, id.ID)
		fmt.Fprintf(&members, "  - {id: %s, voter: true}\n", id.ID)
	}
	man := fmt.Sprintf("name: torch\nmembers:\n%smodel: %s\ntraining: %s\nround: %s\n", members.String(), model, training, round)
	require.NoError(t, os.WriteFile(filepath.Join(root, "consortium.yaml"), []byte(man), 0o644))
	var configs []string
	for i := range n {
		var book strings.Builder
		for j := range n {
			if j != i {
				fmt.Fprintf(&book, "  - /ip4/127.0.0.1/tcp/%d/p2p/%s\n", ports[j], ids[j])
			}
		}
		cfg := fmt.Sprintf("manifest: ../consortium.yaml\nlisten: [/ip4/127.0.0.1/tcp/%d]\naddress_book:\n%shttp: 127.0.0.1:0\ndata: {dir: ../data, members: %d, index: %d}\n",
			ports[i], book.String(), n, i)
		if s, ok := trainer[i]; ok {
			cfg += "trainer: " + s + "\n"
		}
		path := filepath.Join(root, fmt.Sprintf("lab-%d", i), "node.yaml")
		require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
		configs = append(configs, path)
	}
	return configs
}

// waitApplied polls the nodes until each applied and evaluated round r.
func waitApplied(t *testing.T, nodes []*running, r uint64, within time.Duration) []api.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var sts []api.Status
		done := 0
		for _, n := range nodes {
			st := getStatusDoc(t, n)
			sts = append(sts, st)
			if st.Applied >= r && st.Accuracy != nil && st.Accuracy.Round >= r {
				done++
			}
		}
		if done == len(nodes) {
			return sts
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every node applied and evaluated round %d within %v: %+v", r, within, sts)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logRecords returns the JSON log records with message msg.
func logRecords(t *testing.T, logs, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec), sc.Text())
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// A consortium where lab 1 trains with the PyTorch example and labs 0 and
// 2 with the built-in engine converges on one digest; every round includes
// all three updates (min_participants 3). The exported global model, loaded
// into the example's PyTorch model, scores what the node's evaluator said.
func TestPyTorchMemberAndExport(t *testing.T) {
	needTorch(t)
	example, err := filepath.Abs("../../examples/pytorch/train.py")
	require.NoError(t, err)
	const rounds = 4
	configs := consortium(t, 3, "{arch: logreg, height: 28, width: 28, channels: 1, classes: 10}",
		fmt.Sprintf("{rounds: %d, lr: 0.1}", rounds), "{min_participants: 3, tick: 50ms, deadline: 60s, max_examples_per_member: 60000}",
		map[int]string{1: fmt.Sprintf("{command: [%s, %s], timeout: 5m}", python, example)})
	var nodes []*running
	for _, c := range configs {
		nodes = append(nodes, start(t, c))
	}
	start := time.Now()
	sts := waitApplied(t, nodes, rounds, 4*time.Minute)
	t.Logf("%d rounds in %.1fs", rounds, time.Since(start).Seconds())
	for i, st := range sts {
		require.Equal(t, sts[0].Model, st.Model, "node %d ends on another model", i)
		require.Equal(t, st.Model, st.Accuracy.Model, "node %d evaluated another model", i)
		t.Logf("node %d: round %d, test accuracy %.4f", i, st.Accuracy.Round, st.Accuracy.Accuracy)
		require.Greater(t, st.Accuracy.Accuracy, 0.86, "node %d: test accuracy after %d rounds", i, rounds)
	}
	for _, n := range nodes {
		shutdown(t, n)
	}
	for _, rec := range logRecords(t, nodes[0].logs.String(), "applied") {
		require.Equal(t, "commit", rec["kind"], "%v", rec)
		require.EqualValues(t, 3, rec["included"], "round %v includes all three updates", rec["round"])
	}
	lab1 := nodes[1].logs.String()
	trained := logRecords(t, lab1, "trained")
	require.Len(t, trained, rounds)
	for _, rec := range trained {
		require.Equal(t, "external", rec["trainer"])
		require.EqualValues(t, 4000, rec["examples"])
		require.Greater(t, rec["metrics"].(map[string]any)["train_loss"], 0.0)
	}
	require.Contains(t, lab1, `"msg":"trainer output"`)
	require.Contains(t, lab1, `train.py: round 1: 4000 examples, train loss`)

	// Export the last round (the default) and round 2, in both formats.
	dir := t.TempDir()
	st := filepath.Join(dir, "latest.safetensors")
	var out, errb bytes.Buffer
	require.NoError(t, run(t.Context(), []string{"export", "--config", configs[0], "--out", st}, &out, &errb))
	require.Contains(t, out.String(), fmt.Sprintf("round %d, model %s, logreg, 7850 parameters", rounds, sts[0].Model))
	npz := filepath.Join(dir, "latest.npz")
	require.NoError(t, run(t.Context(), []string{"export", "--config", configs[2], "--round", "4", "--format", "npz", "--out", npz}, &out, &errb))
	r2 := filepath.Join(dir, "round2.safetensors")
	require.NoError(t, run(t.Context(), []string{"export", "--config", configs[1], "--round", "2", "--out", r2}, &out, &errb))

	// PyTorch loads each into the example's model and evaluates it.
	accs := torchEvaluate(t, filepath.Dir(example), filepath.Join(filepath.Dir(configs[0]), "..", "data"), "logreg", st, npz, r2)
	t.Logf("PyTorch test accuracy: round 4 %.4f (safetensors), %.4f (npz); round 2 %.4f", accs[0], accs[1], accs[2])
	require.InDelta(t, sts[0].Accuracy.Accuracy, accs[0], 0.001, "PyTorch and the node score the exported model alike")
	require.Equal(t, accs[0], accs[1], "npz and safetensors hold the same model")
	require.Greater(t, accs[2], 0.8)

	// Errors that name the problem.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", configs[0], "--round", "9"}, "round 9 is not applied yet: the store's latest is round 4"},
		{[]string{"--config", configs[0], "--format", "onnx"}, `--format "onnx", want safetensors or npz`},
		{[]string{"--store", dir, "--manifest", filepath.Join(filepath.Dir(configs[0]), "..", "consortium.yaml")}, "no store in " + dir},
		{[]string{"--store", dir}, "give --config node.yaml, or both --store DIR and --manifest FILE"},
	} {
		err := run(t.Context(), append([]string{"export", "--out", filepath.Join(dir, "x")}, c.args...), &out, &errb)
		require.ErrorContains(t, err, c.want)
	}
}

// torchEvaluate loads each file into examples/pytorch's model of arch with
// load_state_dict (strict) and returns its accuracy on the test set in
// the IDX directory mnist.
func torchEvaluate(t *testing.T, exampleDir, mnist, arch string, files ...string) []float64 {
	t.Helper()
	script := `
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
import train
m = {"arch": sys.argv[2], "height": 28, "width": 28, "channels": 1, "classes": 10}
x, y = train.read_idx(sys.argv[3], "t10k")
x = train.as_input(x, m)
for path in sys.argv[4:]:
    model = train.build_model(m)
    if path.endswith(".npz"):
        state = {k: torch.from_numpy(v) for k, v in np.load(path).items()}
    else:
        state = train.load_safetensors(path)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1).numpy() == y).mean()
    print(acc)
`
	args := append([]string{"-c", script, exampleDir, arch, mnist}, files...)
	out, err := exec.Command(python, args...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	var accs []float64
	for _, line := range strings.Fields(string(out)) {
		v, err := strconv.ParseFloat(line, 64)
		require.NoError(t, err, "%s", out)
		accs = append(accs, v)
	}
	require.Len(t, accs, len(files))
	return accs
}

// A node whose external trainer fails declines the round, logs why, and
// trains the next round: lab 0's fake trainer writes a NaN in round 1,
// lab 1's hangs past its 3 s timeout; round 1 commits with lab 2's update
// alone, round 2 with all three.
func TestExternalTrainerFailureDeclines(t *testing.T) {
	fake, err := filepath.Abs("../../train/external/testdata/fake_trainer.py")
	require.NoError(t, err)
	configs := consortium(t, 3, "{arch: logreg, height: 28, width: 28, channels: 1, classes: 10}",
		"{rounds: 2, lr: 0.05}", "{min_participants: 1, tick: 50ms, deadline: 30s, max_examples_per_member: 60000}",
		map[int]string{
			0: fmt.Sprintf("{command: [%s, %s, nan@1]}", python, fake),
			1: fmt.Sprintf("{command: [%s, %s, hang@1], timeout: 3s}", python, fake),
		})
	var nodes []*running
	for _, c := range configs {
		nodes = append(nodes, start(t, c))
	}
	sts := waitApplied(t, nodes, 2, 2*time.Minute)
	for i, st := range sts {
		require.Equal(t, sts[0].Model, st.Model, "node %d", i)
	}

	// The store is the running node's: export says so.
	var out, errb bytes.Buffer
	err = run(t.Context(), []string{"export", "--config", configs[0], "--out", filepath.Join(t.TempDir(), "m.safetensors")}, &out, &errb)
	require.ErrorContains(t, err, "a running node holds its store: stop it, export, start it again")

	for _, n := range nodes {
		shutdown(t, n)
	}
	included := map[float64]float64{}
	for _, rec := range logRecords(t, nodes[2].logs.String(), "applied") {
		included[rec["round"].(float64)] = rec["included"].(float64)
	}
	require.Equal(t, map[float64]float64{1: 1, 2: 3}, included, "updates included per round")
	for i, want := range []string{"safetensors: tensor fc.bias: value 5 (of 10) is NaN, want finite", "timed out after"} {
		failed := logRecords(t, nodes[i].logs.String(), "training failed; declining")
		require.Len(t, failed, 1, "node %d", i)
		require.EqualValues(t, 1, failed[0]["round"])
		require.Contains(t, failed[0]["err"], want, "node %d", i)
		trained := logRecords(t, nodes[i].logs.String(), "trained")
		require.Len(t, trained, 1, "node %d", i)
		require.EqualValues(t, 2, trained[0]["round"], "node %d trains round 2", i)
	}
}
