package dp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Mechanism is a release an Accountant can charge: it knows its Renyi-DP
// at every order. The implementations are SampledGaussian and DDG; the
// interface is closed so that every charge can be persisted and read back.
type Mechanism interface {
	// RDP is the mechanism's Renyi-DP epsilon at order alpha > 1 for one
	// application.
	RDP(alpha float64) float64
	// Validate reports whether the parameters are in range.
	Validate() error
	mechanism() // closes the interface
}

// SampledGaussian is the Gaussian mechanism with noise multiplier Z (noise
// standard deviation over L2 sensitivity) applied to a Poisson sample of
// rate Q; Q = 1 is the Gaussian mechanism without sampling, whose RDP is
// alpha/(2 Z^2). Its RDP is SampledGaussianRDP's.
type SampledGaussian struct {
	Q float64 `json:"q"`
	Z float64 `json:"z"`
}

// RDP implements Mechanism.
func (m SampledGaussian) RDP(alpha float64) float64 { return SampledGaussianRDP(m.Q, m.Z, alpha) }

// Validate reports whether 0 < Q <= 1 and Z is positive and finite.
func (m SampledGaussian) Validate() error {
	if !(m.Q > 0 && m.Q <= 1) {
		return fmt.Errorf("%w: sampling rate %v, want in (0, 1]", ErrBadParam, m.Q)
	}
	if !(m.Z > 0) || math.IsInf(m.Z, 0) {
		return fmt.Errorf("%w: noise multiplier %v, want > 0 and finite", ErrBadParam, m.Z)
	}
	return nil
}

func (SampledGaussian) mechanism() {}

// Entry is one line of an Accountant's history: Steps applications of
// Mechanism.
type Entry struct {
	Mechanism Mechanism
	Steps     int64
}

// entryJSON is Entry on disk: exactly one mechanism field is set.
type entryJSON struct {
	Steps           int64            `json:"steps"`
	SampledGaussian *SampledGaussian `json:"sampled_gaussian,omitempty"`
	DDG             *DDG             `json:"ddg,omitempty"`
}

// MarshalJSON implements json.Marshaler.
func (e Entry) MarshalJSON() ([]byte, error) {
	w := entryJSON{Steps: e.Steps}
	switch m := e.Mechanism.(type) {
	case SampledGaussian:
		w.SampledGaussian = &m
	case DDG:
		w.DDG = &m
	default:
		return nil, fmt.Errorf("dp: entry: unknown mechanism %T", e.Mechanism)
	}
	return json.Marshal(w)
}

// UnmarshalJSON implements json.Unmarshaler; it rejects unknown fields and
// an entry naming no mechanism or two.
func (e *Entry) UnmarshalJSON(data []byte) error {
	var w entryJSON
	if err := strictJSON(data, &w); err != nil {
		return fmt.Errorf("dp: entry: %w", err)
	}
	switch {
	case w.SampledGaussian != nil && w.DDG == nil:
		e.Mechanism = *w.SampledGaussian
	case w.DDG != nil && w.SampledGaussian == nil:
		e.Mechanism = *w.DDG
	default:
		return errors.New("dp: entry: want exactly one of sampled_gaussian and ddg")
	}
	e.Steps = w.Steps
	return nil
}

func strictJSON(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}

// Accountant is a node's Renyi-DP ledger: the history of what it released,
// composed by adding RDP order by order, converted to (epsilon, delta) as
// Opacus's RDPAccountant does (PrivacySpent). Steps of one mechanism in a
// row are kept as one entry with a count, as Opacus keeps them, and the
// RDP of an entry is its one-step RDP times the count, so a history of
// SampledGaussian entries gives exactly Opacus's epsilon.
//
// Its JSON form (MarshalJSON) is the orders and the history, so a node can
// persist what it spent before it publishes and read it back after a
// restart; the RDP curve is recomputed from the history. An Accountant is
// not safe for concurrent use.
type Accountant struct {
	orders  []float64
	history []Entry
	unit    map[Mechanism][]float64 // one-step RDP at the orders, computed once per mechanism
}

// NewAccountant returns an empty Accountant over orders, which must be
// finite, above 1 and distinct; nil means DefaultOrders (Opacus's).
func NewAccountant(orders []float64) (*Accountant, error) {
	if orders == nil {
		orders = DefaultOrders()
	}
	if err := checkOrders(orders); err != nil {
		return nil, err
	}
	return &Accountant{orders: slices.Clone(orders)}, nil
}

func checkOrders(orders []float64) error {
	if len(orders) == 0 {
		return fmt.Errorf("%w: no orders", ErrBadParam)
	}
	seen := make(map[float64]bool, len(orders))
	for _, a := range orders {
		if !(a > 1) || math.IsInf(a, 0) {
			return fmt.Errorf("%w: order %v, want finite and > 1", ErrBadParam, a)
		}
		if seen[a] {
			return fmt.Errorf("%w: order %v twice", ErrBadParam, a)
		}
		seen[a] = true
	}
	return nil
}

// Orders returns the Renyi orders the accountant tracks.
func (a *Accountant) Orders() []float64 { return slices.Clone(a.orders) }

// History returns the entries charged, oldest first.
func (a *Accountant) History() []Entry { return slices.Clone(a.history) }

// Spend charges steps applications of m. Like Opacus's step, it extends the
// last entry when m is the same mechanism with the same parameters.
func (a *Accountant) Spend(m Mechanism, steps int64) error {
	if m == nil {
		return fmt.Errorf("%w: nil mechanism", ErrBadParam)
	}
	if err := m.Validate(); err != nil {
		return err
	}
	if steps < 1 {
		return fmt.Errorf("%w: %d steps, want >= 1", ErrBadParam, steps)
	}
	if n := len(a.history); n > 0 && a.history[n-1].Mechanism == m {
		if a.history[n-1].Steps > math.MaxInt64-steps {
			return fmt.Errorf("%w: step count overflows", ErrBadParam)
		}
		a.history[n-1].Steps += steps
		return nil
	}
	a.history = append(a.history, Entry{Mechanism: m, Steps: steps})
	return nil
}

// Merge appends b's history to a's (b is unchanged): the composition of the
// two. Both must track the same orders.
func (a *Accountant) Merge(b *Accountant) error {
	if !slices.Equal(a.orders, b.orders) {
		return fmt.Errorf("%w: merging accountants over different orders", ErrBadParam)
	}
	for _, e := range b.history {
		if err := a.Spend(e.Mechanism, e.Steps); err != nil {
			return err
		}
	}
	return nil
}

// Clone returns an independent copy of a.
func (a *Accountant) Clone() *Accountant {
	c := &Accountant{orders: slices.Clone(a.orders), history: slices.Clone(a.history)}
	if a.unit != nil {
		c.unit = make(map[Mechanism][]float64, len(a.unit))
		for m, r := range a.unit {
			c.unit[m] = r // never modified once computed
		}
	}
	return c
}

func (a *Accountant) unitRDP(m Mechanism) []float64 {
	if r, ok := a.unit[m]; ok {
		return r
	}
	r := make([]float64, len(a.orders))
	for i, alpha := range a.orders {
		r[i] = m.RDP(alpha)
	}
	if a.unit == nil {
		a.unit = make(map[Mechanism][]float64)
	}
	a.unit[m] = r
	return r
}

// RDP returns the composed RDP at each order: the sum over the history of
// one step's RDP times the entry's steps.
func (a *Accountant) RDP() []float64 {
	total := make([]float64, len(a.orders))
	for _, e := range a.history {
		u := a.unitRDP(e.Mechanism)
		steps := float64(e.Steps)
		for i, r := range u {
			total[i] += float64(r * steps)
		}
	}
	return total
}

// Epsilon returns the epsilon spent at the given delta, 0 < delta < 1, and
// the order that attains it (PrivacySpent over RDP). An empty history has
// spent nothing: (0, 0), as Opacus returns.
func (a *Accountant) Epsilon(delta float64) (epsilon, alpha float64, err error) {
	if !(delta > 0 && delta < 1) {
		return 0, 0, fmt.Errorf("%w: delta %v, want in (0, 1)", ErrBadParam, delta)
	}
	if len(a.history) == 0 {
		return 0, 0, nil
	}
	epsilon, alpha = PrivacySpent(a.orders, a.RDP(), delta)
	return epsilon, alpha, nil
}

// EpsilonAfter is the epsilon a would have spent after Spend(m, steps),
// without charging it: what a node compares with its budget before it
// takes part.
func (a *Accountant) EpsilonAfter(delta float64, m Mechanism, steps int64) (epsilon, alpha float64, err error) {
	c := a.Clone()
	if err := c.Spend(m, steps); err != nil {
		return 0, 0, err
	}
	eps, alpha, err := c.Epsilon(delta)
	a.unit = c.unit // keep what the clone computed
	return eps, alpha, err
}

// accountantVersion is the version of the JSON form.
const accountantVersion = 1

type accountantJSON struct {
	Version int       `json:"version"`
	Orders  []float64 `json:"orders"`
	History []Entry   `json:"history"`
}

// MarshalJSON implements json.Marshaler: {"version": 1, "orders": [...],
// "history": [{"steps": n, "sampled_gaussian": {"q": q, "z": z}}, ...]}.
// Floats are written in the shortest form that reads back to the same bits.
func (a *Accountant) MarshalJSON() ([]byte, error) {
	h := a.history
	if h == nil {
		h = []Entry{}
	}
	return json.Marshal(accountantJSON{Version: accountantVersion, Orders: a.orders, History: h})
}

// UnmarshalJSON implements json.Unmarshaler. It accepts only what
// MarshalJSON writes and checks every order and entry as NewAccountant and
// Spend do; on error a is unchanged.
func (a *Accountant) UnmarshalJSON(data []byte) error {
	var w accountantJSON
	if err := strictJSON(data, &w); err != nil {
		return fmt.Errorf("dp: accountant: %w", err)
	}
	if w.Version != accountantVersion {
		return fmt.Errorf("dp: accountant: version %d, want %d", w.Version, accountantVersion)
	}
	if err := checkOrders(w.Orders); err != nil {
		return fmt.Errorf("dp: accountant: %w", err)
	}
	b := &Accountant{orders: w.Orders}
	for i, e := range w.History {
		if e.Mechanism == nil {
			return fmt.Errorf("dp: accountant: entry %d: no mechanism", i)
		}
		if err := e.Mechanism.Validate(); err != nil {
			return fmt.Errorf("dp: accountant: entry %d: %w", i, err)
		}
		if e.Steps < 1 {
			return fmt.Errorf("dp: accountant: entry %d: %d steps, want >= 1", i, e.Steps)
		}
		// Kept as written, not re-merged: the curve is then the same sum
		// the writer computed.
		b.history = append(b.history, e)
	}
	*a = *b
	return nil
}
