package external

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/modelfile"
)

// Version is the version of the contract, in every round config.
const Version = 1

// Files in the working directory.
const (
	RoundConfigFile = "round.json"
	GlobalFile      = "global.safetensors"
	TrainedFile     = "trained.safetensors"
	ResultFile      = "result.json"
)

// Bounds on what the command may hand back.
const (
	maxResultBytes = 64 << 10
	maxMetrics     = 64
	maxLineBytes   = 2000 // a longer output line is cut
	maxLogLines    = 1000 // output lines logged per round; the rest are counted
	tailLines      = 5    // last stderr lines quoted in an error
	killGrace      = 5 * time.Second
)

// Config describes an external trainer.
type Config struct {
	// Command is the program and its arguments; the round config's path
	// is appended.
	Command []string
	// Dir is the directory the command runs in.
	Dir string
	// Timeout bounds one round's run.
	Timeout time.Duration
	// WorkDir is the private working directory (created mode 0700,
	// emptied before and after every round).
	WorkDir string
	// Spec is the manifest's model.
	Spec train.Spec
	// Cap is the most examples an update may claim (0: none).
	Cap int64
	// Data is the node's data section, handed to the command as is.
	Data map[string]any
	// Seed returns the training seed of round r (local.Seed's stream).
	Seed func(r uint64) uint64
	// Log receives the command's output and the round's result.
	Log *slog.Logger
}

// Trainer runs the command each round; it implements the node's Trainer.
// Rounds run one at a time.
type Trainer struct {
	cfg Config
	mu  sync.Mutex
}

// New checks cfg and returns its trainer.
func New(cfg Config) (*Trainer, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, errors.New("external trainer: no command")
	}
	if cfg.Timeout <= 0 {
		return nil, fmt.Errorf("external trainer: timeout %v, want > 0", cfg.Timeout)
	}
	if cfg.WorkDir == "" {
		return nil, errors.New("external trainer: no working directory")
	}
	if _, err := modelfile.Layout(cfg.Spec); err != nil {
		return nil, fmt.Errorf("external trainer: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Seed == nil {
		cfg.Seed = func(r uint64) uint64 { return r }
	}
	return &Trainer{cfg: cfg}, nil
}

// RoundConfig is the JSON the command reads: what to train, from which
// model, on which data, and where to write the result.
type RoundConfig struct {
	Version   int     `json:"version"`
	Round     uint64  `json:"round"`
	Epochs    int     `json:"epochs"`
	BatchSize int     `json:"batch_size"`
	LR        float64 `json:"lr"`
	ProxMu    float64 `json:"prox_mu"`
	// Seed seeds the round's training randomness.
	Seed uint64 `json:"seed"`
	// MaxExamples is the most examples the result may claim (0: no cap).
	MaxExamples int64 `json:"max_examples"`
	Model       Model `json:"model"`
	// Global is the global model to start from; Trained and Result are
	// where the command writes the trained model and its result.
	Global  string `json:"global"`
	Trained string `json:"trained"`
	Result  string `json:"result"`
	// Data is the node config's data section (dir resolved).
	Data map[string]any `json:"data"`
}

// Model is the manifest's model.
type Model struct {
	Arch     string `json:"arch"`
	Height   int    `json:"height"`
	Width    int    `json:"width"`
	Channels int    `json:"channels"`
	Classes  int    `json:"classes"`
}

// Result is the JSON the command writes: the example count it trained on
// and its metrics (finite numbers by name, such as train_loss).
type Result struct {
	Examples int64              `json:"examples"`
	Metrics  map[string]float64 `json:"metrics"`
}

// Train writes g and the round config, runs the command and returns the
// trained model minus g and the example count. Every failure is an error
// saying what went wrong; the node declines the round.
func (t *Trainer) Train(ctx context.Context, r uint64, g *fedavg.Global, tc fedavg.TrainConfig) ([]float32, int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	start := time.Now()
	delta, res, err := t.train(ctx, r, g, tc)
	if rmErr := os.RemoveAll(t.cfg.WorkDir); rmErr != nil && err == nil {
		err = fmt.Errorf("external trainer: round %d: cleaning %s: %w", r, t.cfg.WorkDir, rmErr)
	}
	if err != nil {
		return nil, 0, err
	}
	keys := make([]string, 0, len(res.Metrics))
	for k := range res.Metrics {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	metrics := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		metrics = append(metrics, k, res.Metrics[k])
	}
	attrs := []any{"round", r, "examples", res.Examples, "seconds", time.Since(start).Seconds(), "trainer", "external", slog.Group("metrics", metrics...)}
	t.cfg.Log.Info("trained", attrs...)
	return delta, res.Examples, nil
}

func (t *Trainer) train(ctx context.Context, r uint64, g *fedavg.Global, tc fedavg.TrainConfig) ([]float32, Result, error) {
	fail := func(format string, args ...any) ([]float32, Result, error) {
		return nil, Result{}, fmt.Errorf("external trainer: round %d: "+format, append([]any{r}, args...)...)
	}
	dir := t.cfg.WorkDir
	if err := os.RemoveAll(dir); err != nil {
		return fail("cleaning %s: %v", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail("%v", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil { // MkdirAll is subject to the umask
		return fail("%v", err)
	}
	s := t.cfg.Spec
	b, err := modelfile.EncodeSafetensors(s, g.Weights, map[string]string{"format": "pt", "arch": s.Arch, "round": fmt.Sprint(r - 1)})
	if err != nil {
		return fail("%v", err)
	}
	rc := RoundConfig{
		Version: Version, Round: r, Epochs: tc.Epochs, BatchSize: tc.BatchSize, LR: tc.LR, ProxMu: tc.ProxMu,
		Seed: t.cfg.Seed(r), MaxExamples: t.cfg.Cap,
		Model:   Model{Arch: s.Arch, Height: s.Height, Width: s.Width, Channels: s.Channels, Classes: s.Classes},
		Global:  filepath.Join(dir, GlobalFile),
		Trained: filepath.Join(dir, TrainedFile),
		Result:  filepath.Join(dir, ResultFile),
		Data:    t.cfg.Data,
	}
	js, err := json.MarshalIndent(rc, "", "  ")
	if err != nil {
		return fail("round config: %v", err)
	}
	rcPath := filepath.Join(dir, RoundConfigFile)
	if err := os.WriteFile(rc.Global, b, 0o600); err != nil {
		return fail("%v", err)
	}
	if err := os.WriteFile(rcPath, js, 0o600); err != nil {
		return fail("%v", err)
	}
	if err := t.run(ctx, r, rcPath); err != nil {
		return nil, Result{}, err
	}
	res, err := readResult(rc.Result)
	if err != nil {
		return fail("%v", err)
	}
	if res.Examples < 1 {
		return fail("%s: examples %d, want at least 1", rc.Result, res.Examples)
	}
	if t.cfg.Cap > 0 && res.Examples > t.cfg.Cap {
		return fail("%s: claims %d examples, above the cap of %d (max_examples, or the manifest's max_examples_per_member); an update is never clamped",
			rc.Result, res.Examples, t.cfg.Cap)
	}
	trained, err := modelfile.ReadSafetensors(rc.Trained, s)
	if err != nil {
		return fail("trained model: %v", err)
	}
	for i, w := range g.Weights {
		trained[i] -= w
		if v := float64(trained[i]); math.IsInf(v, 0) || math.IsNaN(v) {
			return fail("trained model minus the global model is %v at parameter %d", v, i)
		}
	}
	return trained, res, nil
}

// run runs the command in its own process group, its output to the log,
// killing the whole group when the timeout passes or ctx ends.
func (t *Trainer) run(ctx context.Context, r uint64, rcPath string) error {
	rctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	args := append(append([]string(nil), t.cfg.Command[1:]...), rcPath)
	cmd := exec.CommandContext(rctx, t.cfg.Command[0], args...)
	cmd.Dir = t.cfg.Dir
	cmd.Env = append(os.Environ(), "GLOBALBRAIN_ROUND_CONFIG="+rcPath)
	setProcessGroup(cmd)
	cmd.WaitDelay = killGrace
	out := &output{log: t.cfg.Log, round: r}
	cmd.Stdout = &lineWriter{out: out, stream: "stdout"}
	cmd.Stderr = &lineWriter{out: out, stream: "stderr"}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("external trainer: round %d: cannot start %s: %v", r, t.cfg.Command[0], err)
	}
	err := cmd.Wait()
	killGroup(cmd) // whatever it left running
	cmd.Stdout.(*lineWriter).flush()
	cmd.Stderr.(*lineWriter).flush()
	if out.dropped > 0 {
		t.cfg.Log.Warn("trainer output cut", "round", r, "lines_dropped", out.dropped)
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(rctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("external trainer: round %d: %s timed out after %v (trainer.timeout %v); its process group was killed%s",
			r, t.cfg.Command[0], time.Since(start).Round(time.Millisecond), t.cfg.Timeout, out.tail())
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("external trainer: round %d: %s failed: %v%s", r, t.cfg.Command[0], ee.ProcessState, out.tail())
		}
		return fmt.Errorf("external trainer: round %d: %s: %v%s", r, t.cfg.Command[0], err, out.tail())
	}
	return nil
}

// output logs the command's lines, at most maxLogLines a round, each cut
// at maxLineBytes, and keeps the last stderr lines for the error.
type output struct {
	log     *slog.Logger
	round   uint64
	mu      sync.Mutex
	lines   int
	dropped int
	last    []string
}

// lineWriter hands its stream's lines to out, keeping at most
// maxLineBytes of each.
type lineWriter struct {
	out    *output
	stream string
	buf    []byte
	cut    bool // the current line passed maxLineBytes
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		frag := p
		if i >= 0 {
			frag = p[:i]
		}
		room := maxLineBytes - len(w.buf)
		w.buf = append(w.buf, frag[:min(len(frag), room)]...)
		if len(frag) > room {
			w.cut = true
		}
		if i < 0 {
			break
		}
		w.flush()
		p = p[i+1:]
	}
	return n, nil
}

// flush hands on the line in progress, if any.
func (w *lineWriter) flush() {
	if len(w.buf) == 0 && !w.cut {
		return
	}
	line := strings.TrimRight(string(bytes.ToValidUTF8(w.buf, []byte("?"))), "\r")
	if w.cut {
		line += " [cut]"
	}
	w.buf, w.cut = w.buf[:0], false
	w.out.add(w.stream, line)
}

func (o *output) add(stream, line string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if stream == "stderr" {
		o.last = append(o.last, line)
		if len(o.last) > tailLines {
			o.last = o.last[1:]
		}
	}
	if o.lines >= maxLogLines {
		o.dropped++
		return
	}
	o.lines++
	o.log.Info("trainer output", "round", o.round, "stream", stream, "line", line)
}

// tail quotes the last stderr lines.
func (o *output) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.last) == 0 {
		return ""
	}
	return "; its last stderr: " + strings.Join(o.last, " | ")
}

// readResult reads and checks the command's result file.
func readResult(path string) (Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return Result{}, fmt.Errorf("no result: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxResultBytes+1))
	if err != nil {
		return Result{}, fmt.Errorf("%s: %v", path, err)
	}
	if len(b) > maxResultBytes {
		return Result{}, fmt.Errorf("%s: larger than %d bytes", path, maxResultBytes)
	}
	var res Result
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		return Result{}, fmt.Errorf("%s: %v (want {\"examples\": N, \"metrics\": {\"train_loss\": x, ...}})", path, err)
	}
	if dec.More() {
		return Result{}, fmt.Errorf("%s: more than one JSON value", path)
	}
	if len(res.Metrics) > maxMetrics {
		return Result{}, fmt.Errorf("%s: %d metrics, at most %d", path, len(res.Metrics), maxMetrics)
	}
	for k, v := range res.Metrics {
		if len(k) == 0 || len(k) > 64 {
			return Result{}, fmt.Errorf("%s: metric name %q, want 1 to 64 bytes", path, k)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Result{}, fmt.Errorf("%s: metric %s is %v, want finite", path, k, v)
		}
	}
	return res, nil
}
