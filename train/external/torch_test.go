package external

import (
	"context"
	"log/slog"
	"math"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/local"
)

// torchTrainer runs examples/pytorch/train.py on part index of members of
// MNIST's training set, as a node config would name it.
func torchTrainer(t *testing.T, spec train.Spec, members, index int) (*Trainer, *syncBuffer) {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import torch, numpy").CombinedOutput(); err != nil {
		t.Fatalf("%s has no torch (%v: %s): make testdeps installs python3-torch", python, err, out)
	}
	dir, err := train.MNISTDir()
	if err != nil {
		t.Fatal(err)
	}
	example, err := filepath.Abs("../../examples/pytorch")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	tr, err := New(Config{
		Command: []string{python, "train.py"}, Dir: example, Timeout: 5 * time.Minute,
		WorkDir: filepath.Join(t.TempDir(), "trainer"), Spec: spec, Cap: 60000,
		Data: map[string]any{"dataset": "mnist", "dir": dir, "partition": "iid", "members": members, "index": index, "seed": 1},
		Log:  slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return tr, &logs
}

// One round of the PyTorch example from G(0): an update of the model's
// shape, finite, claiming the part's examples, and the model it makes
// scores higher on the test set than G(0).
func TestTorchOneRound(t *testing.T) {
	_, test, err := train.LoadMNIST("")
	if err != nil {
		t.Fatal(err)
	}
	// The first 2000 test examples: the built-in CNN evaluates about 600
	// examples a second here.
	sub := *test
	sub.N, sub.X, sub.Y = 2000, test.X[:2000*test.Dim], test.Y[:2000]
	test = &sub
	for _, c := range []struct {
		arch     string
		members  int
		examples int64
		minGain  float64
	}{
		{train.Arch2NN, 3, 20000, 0.5},
		{train.ArchCNN, 60, 1000, 0.4},
	} {
		t.Run(c.arch, func(t *testing.T) {
			spec := train.Spec{Arch: c.arch, Height: 28, Width: 28, Channels: 1, Classes: 10}
			g, err := local.Genesis(spec, 1)
			if err != nil {
				t.Fatal(err)
			}
			tr, logs := torchTrainer(t, spec, c.members, 1)
			start := time.Now()
			delta, n, err := tr.Train(context.Background(), 1, g, fedavg.TrainConfig{Epochs: 1, BatchSize: 10, LR: 0.05})
			took := time.Since(start)
			if err != nil {
				t.Fatalf("%v\n%s", err, logs)
			}
			if len(delta) != len(g.Weights) || n != c.examples {
				t.Fatalf("%d values and %d examples, want %d and %d", len(delta), n, len(g.Weights), c.examples)
			}
			var norm float64
			for i, d := range delta {
				if math.IsNaN(float64(d)) || math.IsInf(float64(d), 0) {
					t.Fatalf("delta[%d] = %v", i, d)
				}
				norm += float64(d) * float64(d)
			}
			m, _ := train.NewModel(spec)
			before, err := m.Evaluate(g.Weights, test)
			if err != nil {
				t.Fatal(err)
			}
			w := make([]float32, len(g.Weights))
			for i := range w {
				w[i] = g.Weights[i] + delta[i]
			}
			after, err := m.Evaluate(w, test)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d examples in %.1fs, |delta| %.3f, test accuracy %.4f -> %.4f", c.arch, n, took.Seconds(), math.Sqrt(norm), before.Accuracy, after.Accuracy)
			if after.Accuracy < before.Accuracy+c.minGain {
				t.Errorf("test accuracy %.4f -> %.4f, want a gain of at least %.2f", before.Accuracy, after.Accuracy, c.minGain)
			}
		})
	}
}
