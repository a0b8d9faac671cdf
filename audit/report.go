package audit

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Report is what an audit found. Digests and peer IDs are in full.
type Report struct {
	Store        string `json:"store"`
	Consortium   string `json:"consortium"`
	Owner        string `json:"owner,omitempty"` // the peer ID the store belongs to
	Aggregator   string `json:"aggregator"`
	Privacy      string `json:"privacy_mode"`
	Genesis      string `json:"genesis_model"`
	AppliedRound uint64 `json:"applied_round"`
	AppliedIndex uint64 `json:"applied_index"`
	Model        string `json:"model"` // the applied model's digest

	Rounds   []Round        `json:"rounds"`
	Ledger   []Member       `json:"ledger"`
	Evidence []Equivocation `json:"evidence,omitempty"`
	Counts   Counts         `json:"verified"`
	Unknown  []string       `json:"cannot_know"`
	Failures []Failure      `json:"failures,omitempty"`
	OK       bool           `json:"ok"`
	byPeer   map[string]*Member
}

// Counts sums up what was checked.
type Counts struct {
	Rounds      int `json:"rounds"`       // rounds with an outcome record
	Chained     int `json:"chained"`      // outcome records whose chain link was checked
	Signatures  int `json:"signatures"`   // signatures verified
	Recomputed  int `json:"recomputed"`   // models recomputed from their base and the kept blobs
	BlobChecked int `json:"blob_checked"` // model blobs checked against their digest
	NotHeld     int `json:"not_held"`     // rounds whose model could be neither recomputed nor read
	Snapshots   int `json:"snapshots"`    // rounds installed from a snapshot (no entry in this store)
	Missing     int `json:"missing"`      // rounds before a snapshot with no record here
}

// Failure is a check that did not hold. Round 0 is the store as a whole.
type Failure struct {
	Round  uint64 `json:"round"`
	Reason string `json:"reason"`
}

func (f Failure) String() string {
	if f.Round == 0 {
		return f.Reason
	}
	return fmt.Sprintf("round %d: %s", f.Round, f.Reason)
}

// Round is one applied round.
type Round struct {
	Round      uint64 `json:"round"`
	Index      uint64 `json:"index"` // the raft index of its entry
	Kind       string `json:"kind"`  // commit, abandon, or snapshot (installed: no entry in this store)
	Base       string `json:"base,omitempty"`
	Result     string `json:"result"`
	Chain      string `json:"chain"`
	Aggregator string `json:"aggregator,omitempty"`
	Reason     string `json:"reason,omitempty"` // abandon: why
	// Sampled is sample(r) over the membership at the round's start; empty
	// when that membership is not known from this store.
	Sampled       []string       `json:"sampled,omitempty"`
	Contributions []Contribution `json:"contributions,omitempty"`
	// Examples is the round's total: the sum of the announcements, or under
	// secure aggregation the weight of the unmasked sum (known only when it
	// was recomputed; -1 otherwise).
	Examples  int64    `json:"examples"`
	Dropped   []string `json:"dropped,omitempty"`   // secure aggregation: in U2, not in U3
	Revealers []string `json:"revealers,omitempty"` // secure aggregation: the t members whose reveals unmasked the sum
	// Model says how the result was checked: recomputed, blob (the stored
	// blob hashes to it), or not held.
	Model string   `json:"model"`
	Notes []string `json:"notes,omitempty"`
}

// Contribution is one member's part in a round.
type Contribution struct {
	Peer string `json:"peer"`
	// Examples is the example count its signed announcement claims; 0 for
	// a masked input, whose count only the sum reveals.
	Examples int64  `json:"examples,omitempty"`
	Update   string `json:"update"` // the digest of the update blob, or of the masked input
	Masked   bool   `json:"masked,omitempty"`
}

// Member is one member's ledger across the rounds this store holds.
type Member struct {
	Peer  string `json:"peer"`
	Voter bool   `json:"voter"`
	// Sampled counts the rounds it was sampled in (where the membership
	// is known); Included the rounds its update or masked input is in.
	Sampled  int   `json:"sampled"`
	Included int   `json:"included"`
	Examples int64 `json:"examples"` // claimed in its included announcements (plain rounds)
	Masked   int   `json:"masked_inputs,omitempty"`
	// NotIncluded counts rounds it was sampled in and is not included in:
	// it declined, was late, or its update was excluded (the log does not
	// say which).
	NotIncluded   int    `json:"sampled_not_included"`
	Dropped       int    `json:"dropped,omitempty"` // secure aggregation: shared, then gave no input
	Reveals       int    `json:"reveals,omitempty"`
	Haves         int    `json:"haves"`         // signed Haves of included blobs it gave (voters)
	Equivocations int    `json:"equivocations"` // verified evidence held against it
	LastRound     uint64 `json:"last_round,omitempty"`
}

// Equivocation is verified evidence in the store's evidence bucket.
type Equivocation struct {
	Round  uint64 `json:"round"`
	Author string `json:"author"`
	First  string `json:"first_digest"`
	Second string `json:"second_digest"`
}

func (r *Report) fail(round uint64, format string, args ...any) {
	r.Failures = append(r.Failures, Failure{Round: round, Reason: fmt.Sprintf(format, args...)})
}

func (r *Report) member(peer string) *Member {
	if m := r.byPeer[peer]; m != nil {
		return m
	}
	m := &Member{Peer: peer}
	r.byPeer[peer] = m
	return m
}

// short cuts a digest or peer ID for the text report.
func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// WriteText writes the report for a reader.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "audit of %s\n", r.Store)
	if r.Owner != "" {
		fmt.Fprintf(&b, "node        %s\n", r.Owner)
	}
	fmt.Fprintf(&b, "consortium  %s\n", r.Consortium)
	fmt.Fprintf(&b, "aggregator  %s, privacy %s, genesis model %s\n", r.Aggregator, r.Privacy, short(r.Genesis))
	fmt.Fprintf(&b, "applied     round %d (raft index %d), model %s\n\n", r.AppliedRound, r.AppliedIndex, short(r.Model))

	row := "%-6v %-9s %-12s %-12s %-11s %s\n"
	fmt.Fprintf(&b, row, "round", "kind", "base", "result", "model", "contributions")
	for _, rd := range r.Rounds {
		what := ""
		switch {
		case rd.Kind == "abandon":
			what = "none: " + rd.Reason
		case rd.Kind == "snapshot":
			what = "installed from a snapshot"
		case len(rd.Contributions) > 0 && rd.Contributions[0].Masked:
			what = fmt.Sprintf("%d masked inputs", len(rd.Contributions))
			if rd.Examples >= 0 {
				what += fmt.Sprintf(", %d examples in the sum", rd.Examples)
			}
		default:
			what = fmt.Sprintf("%d updates, %d examples", len(rd.Contributions), rd.Examples)
		}
		fmt.Fprintf(&b, row, rd.Round, rd.Kind, short(rd.Base), short(rd.Result), rd.Model, what)
		for _, c := range rd.Contributions {
			if c.Masked {
				fmt.Fprintf(&b, "         %s  masked input %s\n", c.Peer, short(c.Update))
			} else {
				fmt.Fprintf(&b, "         %s  %d examples, update %s\n", c.Peer, c.Examples, short(c.Update))
			}
		}
		if len(rd.Dropped) > 0 {
			fmt.Fprintf(&b, "         dropped: %s\n", strings.Join(rd.Dropped, " "))
		}
		for _, n := range rd.Notes {
			fmt.Fprintf(&b, "         note: %s\n", n)
		}
	}

	b.WriteString("\nledger\n")
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "peer\tvoter\tsampled\tincluded\texamples\tmasked\tnot included\tdropped\treveals\thaves\tequivocations")
	for _, m := range r.Ledger {
		voter := "no"
		if m.Voter {
			voter = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", m.Peer, voter, m.Sampled, m.Included, m.Examples, m.Masked,
			m.NotIncluded, m.Dropped, m.Reveals, m.Haves, m.Equivocations)
	}
	tw.Flush()
	for _, e := range r.Evidence {
		fmt.Fprintf(&b, "  evidence: %s announced %s and %s for round %d (both signatures verified)\n", e.Author, short(e.First), short(e.Second), e.Round)
	}

	b.WriteString("\nwhat this store cannot tell\n")
	for _, u := range r.Unknown {
		fmt.Fprintf(&b, "  - %s\n", u)
	}
	c := r.Counts
	fmt.Fprintf(&b, "\nchecked %d rounds: %d chain links, %d signatures, %d models recomputed, %d model blobs hashed, %d not held, %d from a snapshot, %d before it\n",
		c.Rounds, c.Chained, c.Signatures, c.Recomputed, c.BlobChecked, c.NotHeld, c.Snapshots, c.Missing)
	if r.OK {
		b.WriteString("OK: the log verifies\n")
	} else {
		fmt.Fprintf(&b, "FAILED: %d problems\n", len(r.Failures))
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "  %s\n", f)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
