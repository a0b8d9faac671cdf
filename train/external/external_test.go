package external

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/local"
)

// python is Debian's interpreter, named as a node config names it.
const python = "/usr/bin/python3"

var logreg = train.Spec{Arch: train.ArchLogReg, Height: 28, Width: 28, Channels: 1, Classes: 10}

// syncBuffer is a log sink safe for the trainer's output goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fake returns a trainer running testdata/fake_trainer.py in mode, and
// its log.
func fake(t *testing.T, mode string, timeout time.Duration) (*Trainer, *syncBuffer, string) {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s: %v (the external trainer tests run Debian's python3; make testdeps installs it)", python, err)
	}
	testdata, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	store := t.TempDir()
	var logs syncBuffer
	tr, err := New(Config{
		Command: []string{python, "fake_trainer.py", mode},
		Dir:     testdata, Timeout: timeout,
		WorkDir: filepath.Join(store, "trainer"),
		Spec:    logreg, Cap: 1000,
		Data: map[string]any{"dataset": "mnist"},
		Log:  slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return tr, &logs, store
}

func genesis(t *testing.T) *fedavg.Global {
	g, err := local.Genesis(logreg, 1)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

var tc = fedavg.TrainConfig{Epochs: 1, BatchSize: 10, LR: 0.05}

// A well-behaved command's update is its model minus the global model,
// with its example count; its output goes to the log and the working
// directory is private and emptied.
func TestFakeOK(t *testing.T) {
	tr, logs, store := fake(t, "ok", time.Minute)
	g := genesis(t)
	delta, n, err := tr.Train(context.Background(), 1, g, tc)
	if err != nil {
		t.Fatal(err)
	}
	if n != 100 || len(delta) != len(g.Weights) {
		t.Fatalf("%d examples, %d values; want 100 and %d", n, len(delta), len(g.Weights))
	}
	for i, d := range delta {
		// float32(w + 0.001) - w, rounded twice.
		if math.Abs(float64(d)-0.001) > 1e-6 {
			t.Fatalf("delta[%d] = %v, want 0.001", i, d)
		}
	}
	for _, want := range []string{`"msg":"trainer output","round":1,"stream":"stdout","line":"fake trainer: round 1 mode ok tensors 2"`,
		`"msg":"trained","round":1,"examples":100`, `"metrics":{"train_loss":0.5}`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
	if _, err := os.Stat(filepath.Join(store, "trainer")); !os.IsNotExist(err) {
		t.Errorf("working directory left behind: %v", err)
	}
}

// Every misbehaviour is an error naming it, and the next round works.
func TestFakeFailures(t *testing.T) {
	cases := []struct {
		mode string
		want []string
	}{
		{"shape", []string{"round 1: trained model: ", "tensor fc.weight has shape [784 10], want [10 784]"}},
		{"nan", []string{"round 1: trained model: ", "tensor fc.bias: value 5 (of 10) is NaN, want finite"}},
		{"dtype", []string{"tensor fc.weight is I32, want F32"}},
		{"examples", []string{"claims 1001 examples, above the cap of 1000"}},
		{"exit", []string{"round 1: /usr/bin/python3 failed: exit status 3", "its last stderr: fake trainer: cannot read the data"}},
		{"noresult", []string{"round 1: no result: ", "result.json: no such file"}},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			tr, logs, _ := fake(t, c.mode+"@1", time.Minute)
			g := genesis(t)
			_, _, err := tr.Train(context.Background(), 1, g, tc)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, n, err := tr.Train(context.Background(), 2, g, tc); err != nil || n != 100 {
				t.Errorf("round 2 after the failure: %d examples, %v", n, err)
			}
			if !strings.Contains(logs.String(), `"msg":"trained","round":2`) {
				t.Errorf("round 2 not logged:\n%s", logs)
			}
		})
	}
}

// A command that hangs is killed at the timeout, its children with it.
func TestFakeTimeout(t *testing.T) {
	tr, _, store := fake(t, "hang@1", 3*time.Second)
	g := genesis(t)
	start := time.Now()
	_, _, err := tr.Train(context.Background(), 1, g, tc)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "timed out after") || !strings.Contains(err.Error(), "(trainer.timeout 3s); its process group was killed") {
		t.Fatalf("error %v, want a timeout", err)
	}
	if took > 15*time.Second {
		t.Errorf("took %v with a 3s timeout", took)
	}
	b, err := os.ReadFile(filepath.Join(store, "hang.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(b))
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the script's child %d outlived the timeout", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, n, err := tr.Train(context.Background(), 2, g, tc); err != nil || n != 100 {
		t.Errorf("round 2 after the timeout: %d examples, %v", n, err)
	}
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// The node stopping kills the command at once.
func TestFakeCancel(t *testing.T) {
	tr, _, _ := fake(t, "hang", time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(time.Second, cancel)
	start := time.Now()
	_, _, err := tr.Train(ctx, 1, genesis(t), tc)
	if err != context.Canceled || time.Since(start) > 10*time.Second {
		t.Errorf("%v after %v, want context.Canceled at once", err, time.Since(start))
	}
}

// Output is logged line by line, bounded in lines and in bytes.
func TestFakeNoisy(t *testing.T) {
	tr, logs, _ := fake(t, "noisy", time.Minute)
	if _, _, err := tr.Train(context.Background(), 1, genesis(t), tc); err != nil {
		t.Fatal(err)
	}
	s := logs.String()
	if n := strings.Count(s, `"msg":"trainer output"`); n != maxLogLines {
		t.Errorf("%d output lines logged, want %d", n, maxLogLines)
	}
	if !strings.Contains(s, `"msg":"trainer output cut","round":1,"lines_dropped":2001`) {
		t.Errorf("no cut notice:\n%s", s[len(s)-500:])
	}
	if !strings.Contains(s, "x [cut]") || strings.Contains(s, strings.Repeat("x", maxLineBytes)) {
		t.Error("a 5000-byte line was not cut")
	}
}

// A result file is read strictly and bounded.
func TestReadResult(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ body, want string }{
		{`{"examples": 10, "metrics": {"loss": 1}, "extra": 1}`, `unknown field "extra"`},
		{`{"examples": 10, "metrics": {"loss": NaN}}`, "invalid character 'N'"},
		{`{"examples": "ten"}`, "cannot unmarshal string"},
		{`{"examples": 10} {"examples": 11}`, "more than one JSON value"},
		{`{"examples": 10, "metrics": {"": 1}}`, `metric name "", want 1 to 64 bytes`},
		{strings.Repeat(" ", maxResultBytes+1), "larger than 65536 bytes"},
	} {
		path := filepath.Join(dir, "result.json")
		if err := os.WriteFile(path, []byte(c.body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readResult(path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.40s: %v, want %q", c.body, err, c.want)
		}
	}
	for _, cfg := range []Config{
		{Timeout: time.Second, WorkDir: dir, Spec: logreg},
		{Command: []string{"x"}, WorkDir: dir, Spec: logreg},
		{Command: []string{"x"}, Timeout: time.Second, Spec: logreg},
		{Command: []string{"x"}, Timeout: time.Second, WorkDir: dir, Spec: train.Spec{Arch: "rnn"}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
