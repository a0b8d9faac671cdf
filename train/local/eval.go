package local

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/train"
)

// Result is an applied model's score on the local test set.
type Result struct {
	Round    uint64
	Model    fedavg.Digest
	Accuracy float64
	Loss     float64
	Examples int
}

// Evaluator scores applied models on the test set off the node's loop, one
// at a time; a model submitted while another is evaluated replaces any
// still waiting.
type Evaluator struct {
	model *train.Model
	test  *train.Dataset
	log   *slog.Logger
	err   error

	mu      sync.Mutex
	pending *evalJob
	running bool
	stopped bool
	wg      sync.WaitGroup
	result  atomic.Pointer[Result]
}

type evalJob struct {
	round uint64
	g     *fedavg.Global
}

// NewEvaluator evaluates models of spec on test.
func NewEvaluator(spec train.Spec, test *train.Dataset, log *slog.Logger) *Evaluator {
	m, err := train.NewModel(spec)
	return &Evaluator{model: m, test: test, log: log, err: err}
}

// Submit queues g, the model of round r, for evaluation.
func (e *Evaluator) Submit(r uint64, g *fedavg.Global) {
	if g == nil || e.err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return
	}
	e.pending = &evalJob{round: r, g: g}
	if !e.running {
		e.running = true
		e.wg.Add(1)
		go e.run()
	}
}

func (e *Evaluator) run() {
	defer e.wg.Done()
	for {
		e.mu.Lock()
		j := e.pending
		e.pending = nil
		if j == nil || e.stopped {
			e.running = false
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		start := time.Now()
		mt, err := e.model.Evaluate(j.g.Weights, e.test)
		if err != nil {
			e.log.Error("evaluation failed", "round", j.round, "err", err)
			continue
		}
		d := j.g.Digest()
		e.result.Store(&Result{Round: j.round, Model: d, Accuracy: mt.Accuracy, Loss: mt.Loss, Examples: mt.N})
		e.log.Info("evaluated", "round", j.round, "model", d.String()[:12], "accuracy", mt.Accuracy, "test_loss", mt.Loss,
			"seconds", time.Since(start).Seconds())
	}
}

// Last is the latest result, nil before the first.
func (e *Evaluator) Last() *Result { return e.result.Load() }

// Stop drops what is waiting and waits up to wait for a running evaluation
// (it touches nothing but the log and the result, so it may finish
// unobserved; evaluating a large model takes seconds).
func (e *Evaluator) Stop(wait time.Duration) {
	e.mu.Lock()
	e.stopped = true
	e.pending = nil
	e.mu.Unlock()
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(wait):
	}
}
