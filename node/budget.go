package node

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/privacy/dp"
)

// A node's privacy budget (PRIVACY.md section 2). Under a mode that keeps
// one (update, distributed, dp-sgd), the
// node owns a Renyi-DP accountant, persisted in its store. Before it
// publishes anything derived from its data in a round, it asks the
// accountant what the epsilon would be after that round: past its ceiling
// it declines the round (a signed Decline carrying the reason); otherwise
// it charges the round, persists the accountant (fsync'd, before the blob
// is stored, served or announced) and only then publishes. A charge is
// never refunded, whatever becomes of the round, and a restarted node
// reads back what it spent.

// privacyBucket and accountantKey locate the persisted accountant.
const (
	privacyBucket = "privacy"
	accountantKey = "accountant"
)

// DPSGDTrainer is a Trainer whose local training is DP-SGD (mode dp-sgd):
// besides training, it says what one participation costs, which the node
// charges before it publishes the update.
type DPSGDTrainer interface {
	Trainer
	// PrivacyCost returns the mechanism of one step of training at cfg and
	// the number of steps one participation takes.
	PrivacyCost(cfg fedavg.TrainConfig) (dp.Mechanism, int64, error)
}

// PrivacyStatus is the node's privacy budget in Status.
type PrivacyStatus struct {
	Mode    string  `json:"mode"`
	Delta   float64 `json:"delta"`
	Ceiling float64 `json:"epsilon_ceiling"`
	// Spent is the epsilon spent at Delta, over every run of this store.
	Spent float64 `json:"epsilon_spent"`
	// Rounds is how many rounds were charged, over every run.
	Rounds int64 `json:"rounds_charged"`
	// Declines counts the rounds this process declined for the budget.
	Declines uint64 `json:"declines"`
	// Exhausted is set once a round was declined because the next
	// participation would pass the ceiling; FirstDeclined is that round
	// (this process).
	Exhausted     bool   `json:"exhausted,omitempty"`
	FirstDeclined uint64 `json:"first_declined_round,omitempty"`
}

// ErrBudgetExhausted is what charging a participation that would pass the
// ceiling returns (wrapped in a *BudgetError).
var ErrBudgetExhausted = errors.New("privacy budget exhausted")

// BudgetError says how far a declined participation would have gone.
type BudgetError struct {
	Spent, Next, Ceiling, Delta float64
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("privacy budget exhausted: epsilon %.4g spent, the next round would reach %.4g, ceiling %.4g at delta %g",
		e.Spent, e.Next, e.Ceiling, e.Delta)
}

// Unwrap makes a BudgetError match ErrBudgetExhausted.
func (e *BudgetError) Unwrap() error { return ErrBudgetExhausted }

// budget is the node's accountant and what it charges. Its methods are
// safe for concurrent use (the train task charges off the loop, the loop
// reads it for status).
type budget struct {
	mode    string
	delta   float64
	ceiling float64
	store   Store
	noise   dp.UpdateNoise // update mode
	dim     int

	noiseMu sync.Mutex // held while noise is drawn (long), apart from mu
	src     *dp.Source // the update and distributed modes' noise; nil otherwise

	mu        sync.Mutex
	acct      *dp.Accountant
	spent     float64
	rounds    int64
	declines  uint64
	exhausted bool
	first     uint64 // the first round declined for the budget
}

// newBudget loads the node's accountant from the store (empty on first
// start). It returns nil under a mode that keeps no budget.
func newBudget(m *manifest.Manifest, ceiling float64, st Store, rnd io.Reader, dim int) (*budget, error) {
	p := m.Privacy
	switch p.Mode {
	case manifest.PrivacyUpdate, manifest.PrivacyDistributed, manifest.PrivacyDPSGD:
	default:
		return nil, nil
	}
	if ceiling <= 0 || ceiling > p.DP.Epsilon {
		ceiling = p.DP.Epsilon
	}
	if !(ceiling > 0) || math.IsInf(ceiling, 0) {
		return nil, fmt.Errorf("node: privacy ceiling %v, want > 0", ceiling)
	}
	b := &budget{mode: p.Mode, delta: p.DP.Delta, ceiling: ceiling, store: st, dim: dim}
	if p.Mode == manifest.PrivacyUpdate {
		b.noise = p.UpdateNoise()
		if err := b.noise.Validate(dim); err != nil {
			return nil, fmt.Errorf("node: privacy.dp: %w", err)
		}
	}
	if p.Mode == manifest.PrivacyUpdate || p.Mode == manifest.PrivacyDistributed {
		if rnd == nil {
			rnd = rand.Reader
		}
		b.src = dp.NewSource(rnd)
	}
	acct, rounds, err := loadAccountant(st)
	if err != nil {
		return nil, err
	}
	b.acct, b.rounds = acct, rounds
	if err := b.refresh(); err != nil {
		return nil, err
	}
	return b, nil
}

// budgetRecord is the persisted budget: the accountant (its orders and
// history) and the number of rounds charged.
type budgetRecord struct {
	Version    int            `json:"version"`
	Rounds     int64          `json:"rounds"`
	Accountant *dp.Accountant `json:"accountant"`
}

// loadAccountant reads the persisted budget, or makes an empty one.
func loadAccountant(st Store) (*dp.Accountant, int64, error) {
	vals, err := st.List(privacyBucket)
	if err != nil {
		return nil, 0, fmt.Errorf("node: privacy budget: %w", err)
	}
	acct, err := dp.NewAccountant(dp.DefaultOrders())
	if err != nil {
		return nil, 0, err
	}
	switch len(vals) {
	case 0:
		return acct, 0, nil
	case 1:
		rec := budgetRecord{Accountant: acct}
		if err := json.Unmarshal(vals[0], &rec); err != nil || rec.Version != 1 || rec.Rounds < 0 {
			// Never start over from zero on a record that does not read.
			return nil, 0, fmt.Errorf("node: the privacy budget in the store does not read (refusing to start with a fresh budget): version %d, %v", rec.Version, err)
		}
		return acct, rec.Rounds, nil
	}
	return nil, 0, fmt.Errorf("node: privacy budget: %d records in the store, want one", len(vals))
}

// refresh recomputes spent from the accountant. Under b.mu, or before b
// is shared.
func (b *budget) refresh() error {
	eps, _, err := b.acct.Epsilon(b.delta)
	if err != nil {
		return fmt.Errorf("node: privacy budget: %w", err)
	}
	b.spent = eps
	return nil
}

// cost is what one participation charges: the mechanism and its steps.
// ddg is the round's encoding in mode distributed (the round sets it).
func (b *budget) cost(tr Trainer, cfg fedavg.TrainConfig, ddg *dp.DistributedNoise) (dp.Mechanism, int64, error) {
	switch b.mode {
	case manifest.PrivacyUpdate:
		return b.noise.Mechanism(b.dim), 1, nil
	case manifest.PrivacyDistributed:
		if ddg == nil {
			return nil, 0, errors.New("node: privacy.mode distributed: the round gave no encoding")
		}
		if err := ddg.Validate(b.dim); err != nil {
			return nil, 0, fmt.Errorf("node: privacy.dp: %w", err)
		}
		return ddg.Mechanism(b.dim), 1, nil
	case manifest.PrivacyDPSGD:
		pt, ok := tr.(DPSGDTrainer)
		if !ok {
			return nil, 0, errors.New("node: privacy.mode dp-sgd needs a DP-SGD trainer")
		}
		return pt.PrivacyCost(cfg)
	}
	return nil, 0, fmt.Errorf("node: privacy.mode %s keeps no budget", b.mode)
}

// check reports, without charging, whether a participation costing steps
// of m fits the ceiling: a *BudgetError if not.
func (b *budget) check(m dp.Mechanism, steps int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.checkLocked(m, steps)
}

func (b *budget) checkLocked(m dp.Mechanism, steps int64) error {
	next, _, err := b.acct.EpsilonAfter(b.delta, m, steps)
	if err != nil {
		return fmt.Errorf("node: privacy budget: %w", err)
	}
	if next > b.ceiling || math.IsNaN(next) {
		return &BudgetError{Spent: b.spent, Next: next, Ceiling: b.ceiling, Delta: b.delta}
	}
	return nil
}

// charge spends steps of m and persists the accountant before it returns;
// a participation that would pass the ceiling is refused with a
// *BudgetError and nothing is charged. Once charge returns nil, the
// charge is on disk and stays: it is never refunded. If persisting fails,
// the charge stays in memory too (what is spent is never given back) and
// the error is returned: the caller must not publish.
func (b *budget) charge(m dp.Mechanism, steps int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkLocked(m, steps); err != nil {
		return err
	}
	if err := b.acct.Spend(m, steps); err != nil {
		return fmt.Errorf("node: privacy budget: %w", err)
	}
	b.rounds++
	if err := b.refresh(); err != nil {
		return err
	}
	rec, err := json.Marshal(budgetRecord{Version: 1, Rounds: b.rounds, Accountant: b.acct})
	if err != nil {
		return fmt.Errorf("node: privacy budget: %w", err)
	}
	if err := b.store.Put(privacyBucket, accountantKey, rec); err != nil {
		return fmt.Errorf("node: persist privacy budget: %w", err)
	}
	return nil
}

// declined notes round r declined for the budget.
func (b *budget) declined(r uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.declines++
	if !b.exhausted {
		b.exhausted, b.first = true, r
	}
}

// addNoise returns the update mode's release of delta: clipped to S, on
// the grid, discrete Gaussian noise added, decoded back to float32. Only
// call it after charge succeeded.
func (b *budget) addNoise(delta []float32) ([]float32, error) {
	b.noiseMu.Lock()
	defer b.noiseMu.Unlock()
	v, err := b.noise.Encode(delta, b.src)
	if err != nil {
		return nil, fmt.Errorf("node: privacy noise: %w", err)
	}
	return b.noise.Decode(v), nil
}

// encodeDistributed is the distributed mode's input before masking: delta
// clipped, rotated by rot, rounded and noised (dp.DistributedNoise.Encode).
// Only call it after charge succeeded.
func (b *budget) encodeDistributed(ddg *dp.DistributedNoise, delta []float32, rot *dp.Rotation) ([]uint64, error) {
	b.noiseMu.Lock()
	defer b.noiseMu.Unlock()
	v, err := ddg.Encode(delta, rot, b.src)
	if err != nil {
		return nil, fmt.Errorf("node: privacy noise: %w", err)
	}
	return v, nil
}

// status is the budget for Status.
func (b *budget) status() *PrivacyStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return &PrivacyStatus{Mode: b.mode, Delta: b.delta, Ceiling: b.ceiling, Spent: b.spent, Rounds: b.rounds,
		Declines: b.declines, Exhausted: b.exhausted, FirstDeclined: b.first}
}

// Privacy returns the node's privacy budget as it stands (safe from any
// goroutine; Status has it as of the loop's last step), nil under a mode
// that keeps none.
func (n *Node) Privacy() *PrivacyStatus {
	if n.budget == nil {
		return nil
	}
	return n.budget.status()
}
