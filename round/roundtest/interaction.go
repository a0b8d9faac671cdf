package roundtest

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/globalbrain/globalbrain/round"
)

// InteractionEnv runs a data-driven script (testdata/*.txt) against an Env,
// in the style of etcd raft's rafttest.InteractionEnv. Every command's
// output is compared with the golden block under it.
//
// The Env's delivery order is seeded, but raft draws its randomized election
// timeouts from crypto/rand, so the trace of a run (who leads, at which
// tick a round closes, which updates a round includes) differs from run to
// run even for one seed. Commands therefore print only facts every run and
// every seed must agree on: the scenario's assertions ("ok" or what failed),
// outcome kinds and inclusion counts where the scenario fixes them, model
// digests where the included updates are fixed. The exception is
// process-ready before the first tick, which is a pure function of the seed
// (SeedSpecific): it is compared only for the seed the golden file was
// written with.
//
// Members are named by index, by "leader" (the live member that believes it
// leads; an error if none) or by a name bound with as=. Groups are
// parenthesised lists of indices and ranges, "(0-4)" or "(0,2,5-7)", or
// "live". Round and count arguments are integers, names bound with set, or
// name+integer.
type InteractionEnv struct {
	Env   *Env
	Seed  uint64
	names map[string]int    // bound with as=
	vars  map[string]uint64 // bound with set
}

// NewInteractionEnv returns an InteractionEnv whose add-members uses seed.
func NewInteractionEnv(seed uint64) *InteractionEnv {
	return &InteractionEnv{Seed: seed, names: map[string]int{}, vars: map[string]uint64{}}
}

// SeedSpecific reports whether a command's output depends on the seed (it
// is still reproducible for one seed).
func SeedSpecific(cmd string) bool { return cmd == "process-ready" }

// Handle runs one command and returns its output. Script errors (an unknown
// command, a malformed argument) fail t; failed assertions and harness
// errors, the invariant's included, are returned as output, so they show as
// a difference from the golden block.
func (ie *InteractionEnv) Handle(t *testing.T, d *datadriven.TestData) string {
	if ie.Env == nil && d.Cmd != "add-members" {
		d.Fatalf(t, "add-members must come first")
	}
	out, err := ie.handle(t, d)
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	if out == "" {
		out = "ok"
	}
	if !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return out
}

func (ie *InteractionEnv) handle(t *testing.T, d *datadriven.TestData) (string, error) {
	e := ie.Env
	switch d.Cmd {
	case "add-members":
		// add-members <n> voters=<v> [min-participants=] [deadline=] [strategy=] [retain-rounds=] [joiners=]
		return ie.addMembers(t, d)
	case "silent", "byzantine", "honest", "lazy", "ignore-transfer", "crash", "restart":
		// silent <member>...: never trains nor declines.
		// byzantine <member> [as=<name>]: as leader, proposes wrong result digests.
		// honest <member>: no longer byzantine, lazy nor ignoring transfers.
		// lazy <member> [as=<name>]: as leader, stops proposing.
		// ignore-transfer <member> [as=<name>]: drops leadership transfer
		// requests sent to it (a leader that will not step aside).
		// crash <member> [as=<name>]: stops; keeps what it persisted.
		// restart <member>: starts again from what it persisted.
		return "", ie.memberCmd(t, d)
	case "partition":
		// partition <group> <group>...: cut every link between the groups.
		var groups [][]int
		for _, a := range d.CmdArgs {
			g, err := ie.group(a.Key)
			if err != nil {
				d.Fatalf(t, "%v", err)
			}
			groups = append(groups, g)
		}
		e.Partition(groups...)
		return "", nil
	case "heal":
		e.Heal()
		return "", nil
	case "set":
		// set <name> round=<member>: the member's applied round.
		// set <name> decided: how many rounds are decided.
		return "", ie.set(t, d)
	case "step":
		// step <n> [per-seed=<k>]: n+seed*k steps (deliveries or ticks).
		n := ie.intArg(t, d, 0)
		k := 0
		if d.HasArg("per-seed") {
			d.ScanArgs(t, "per-seed", &k)
		}
		for range n + int(ie.Seed)*k {
			if err := e.Step(); err != nil {
				return "", err
			}
		}
		return "", nil
	case "run-ticks":
		// run-ticks <n>
		return "", e.RunTicks(ie.intArg(t, d, 0))
	case "run-until":
		// run-until <condition>... max-ticks=<n> [within=<n>]
		return "", ie.runUntil(t, d)
	case "expect":
		// expect <assertion>... [of=<group>]
		return ie.expect(t, d)
	case "propose-add-member":
		// propose-add-member <member> signers=(<member>, ...): on the leader.
		return "", ie.proposeAddMember(t, d)
	case "process-ready":
		// process-ready <member>: hand out, describe and carry out one Ready.
		if len(d.CmdArgs) != 1 {
			d.Fatalf(t, "process-ready <member>")
		}
		m := e.Members[ie.member(t, d, d.CmdArgs[0].Key)]
		if m.Down {
			return "", fmt.Errorf("member %d is down", m.Index)
		}
		rd := m.M.Ready()
		desc := round.DescribeReady(rd)
		if err := e.handle(m, rd); err != nil {
			return "", err
		}
		return desc, nil
	case "decided":
		// decided <rounds> [included]: each round's outcome kind (and
		// inclusion count), as the first member to apply it applied it.
		return ie.decided(t, d)
	case "digests":
		// digests <rounds>: each decided round's model digest.
		var b strings.Builder
		for _, r := range ie.rounds(t, d) {
			o, ok := e.Decided[r.n]
			if !ok {
				fmt.Fprintf(&b, "round %s: undecided\n", r.label)
				continue
			}
			fmt.Fprintf(&b, "round %s: %s", r.label, o.Model.String()[:8])
			if o.Model == e.Genesis() {
				b.WriteString(" (genesis)")
			}
			b.WriteByte('\n')
		}
		return b.String(), nil
	case "state":
		// state [of=<group>]: each member's applied round and model, runs of
		// members in the same state folded.
		return ie.state(t, d), nil
	case "same-model":
		// same-model [of=<group>]: the members are at one round with one model.
		g := ie.resolveGroup(ie.ofGroup(t, d))
		if err := ie.sameModel(g); err != nil {
			return "", err
		}
		return fmt.Sprintf("members %s: one round, one model", describeGroup(g)), nil
	case "model":
		// model <member>: the strategy and state vectors of its applied model.
		i := ie.member(t, d, d.CmdArgs[0].Key)
		g, err := e.Model(i)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("member %d: strategy %s, %d state vectors", i, g.State.Strategy, len(g.State.Vectors)), nil
	}
	d.Fatalf(t, "unknown command %q", d.Cmd)
	return "", nil
}

func (ie *InteractionEnv) addMembers(t *testing.T, d *datadriven.TestData) (string, error) {
	if ie.Env != nil {
		d.Fatalf(t, "add-members twice")
	}
	o := Options{Members: ie.intArg(t, d, 0), Seed: ie.Seed}
	o.Voters = o.Members
	for _, a := range d.CmdArgs[1:] {
		switch a.Key {
		case "voters":
			a.Scan(t, 0, &o.Voters)
		case "min-participants":
			a.Scan(t, 0, &o.MinParticipants)
		case "deadline":
			a.Scan(t, 0, &o.DeadlineTicks)
		case "strategy":
			a.Scan(t, 0, &o.Strategy)
		case "retain-rounds":
			a.Scan(t, 0, &o.RetainRounds)
		case "joiners":
			a.Scan(t, 0, &o.Joiners)
		default:
			d.Fatalf(t, "add-members: unknown argument %q", a.Key)
		}
	}
	e, err := New(o)
	if err != nil {
		return "", err
	}
	ie.Env = e
	p := e.Params
	var b strings.Builder
	fmt.Fprintf(&b, "members %s: voters %s", describeGroup(span(0, o.Members)), describeGroup(span(0, o.Voters)))
	if o.Voters < o.Members {
		fmt.Fprintf(&b, ", learners %s", describeGroup(span(o.Voters, o.Members)))
	}
	if o.Joiners > 0 {
		fmt.Fprintf(&b, "; joining %s", describeGroup(span(o.Members, o.Members+o.Joiners)))
	}
	fmt.Fprintf(&b, "\nmin_participants %d, deadline %d ticks, election %d ticks, %s", p.MinParticipants, p.DeadlineTicks,
		p.ElectionTicks, p.Aggregator)
	if p.RetainRounds > 0 {
		fmt.Fprintf(&b, ", snapshot every %d rounds", p.RetainRounds)
	}
	return b.String(), nil
}

func (ie *InteractionEnv) memberCmd(t *testing.T, d *datadriven.TestData) error {
	e := ie.Env
	var idx []int
	for _, a := range d.CmdArgs {
		if a.Key == "as" {
			continue
		}
		idx = append(idx, ie.member(t, d, a.Key))
	}
	if len(idx) == 0 {
		d.Fatalf(t, "%s: no member", d.Cmd)
	}
	if d.HasArg("as") {
		if len(idx) != 1 {
			d.Fatalf(t, "%s: as= names one member", d.Cmd)
		}
		var name string
		d.ScanArgs(t, "as", &name)
		ie.names[name] = idx[0]
	}
	for _, i := range idx {
		m := e.Members[i]
		switch d.Cmd {
		case "silent":
			m.Silent = true
		case "byzantine":
			m.Byzantine = true
		case "lazy":
			m.Lazy = true
		case "ignore-transfer":
			m.IgnoreTransfer = true
		case "honest":
			m.Byzantine, m.Lazy, m.IgnoreTransfer = false, false, false
		case "crash":
			e.Crash(i)
		case "restart":
			if err := e.Restart(i); err != nil {
				return err
			}
		}
	}
	return nil
}

func (ie *InteractionEnv) set(t *testing.T, d *datadriven.TestData) error {
	if len(d.CmdArgs) != 2 {
		d.Fatalf(t, "set <name> round=<member> | decided")
	}
	name, what := d.CmdArgs[0].Key, d.CmdArgs[1]
	switch what.Key {
	case "round":
		if len(what.Vals) != 1 {
			d.Fatalf(t, "set: round=<member>")
		}
		m := ie.Env.Members[ie.member(t, d, what.Vals[0])]
		if m.Down {
			return fmt.Errorf("member %d is down", m.Index)
		}
		ie.vars[name] = m.M.State().Round
	case "decided":
		ie.vars[name] = uint64(len(ie.Env.Decided))
	default:
		d.Fatalf(t, "set: unknown value %q", what.Key)
	}
	return nil
}

func (ie *InteractionEnv) runUntil(t *testing.T, d *datadriven.TestData) error {
	e := ie.Env
	maxTicks, within := -1, -1
	var conds []func() bool
	of := ie.ofGroup(t, d)
	for _, a := range d.CmdArgs {
		switch a.Key {
		case "max-ticks":
			a.Scan(t, 0, &maxTicks)
		case "within":
			a.Scan(t, 0, &within)
		case "of":
		case "applied":
			// every member of the group applied the round
			r := ie.value(t, d, a)
			conds = append(conds, func() bool { return e.AllApplied(r, ie.resolveGroup(of)...) })
		case "decided":
			// the round is decided
			r := ie.value(t, d, a)
			conds = append(conds, func() bool { _, ok := e.Decided[r]; return ok })
		case "leader":
			// a live member believes it leads
			conds = append(conds, func() bool { return e.Leader() >= 0 })
		case "leader-not":
			// a live member other than the named one believes it leads
			not := ie.member(t, d, ie.single(t, d, a))
			conds = append(conds, func() bool { l := e.Leader(); return l >= 0 && l != not })
		case "membership":
			// every member of the group applied a membership of this size
			n := int(ie.value(t, d, a))
			conds = append(conds, func() bool {
				for _, i := range ie.resolveGroup(of) {
					if m := e.Members[i]; m.Down || len(m.M.Members()) != n {
						return false
					}
				}
				return true
			})
		default:
			d.Fatalf(t, "run-until: unknown argument %q", a.Key)
		}
	}
	if maxTicks < 0 || len(conds) == 0 {
		d.Fatalf(t, "run-until needs a condition and max-ticks")
	}
	start := e.Ticks
	if err := e.Run(maxTicks, func() bool {
		for _, c := range conds {
			if !c() {
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}
	if within >= 0 && e.Ticks-start > within {
		return fmt.Errorf("reached after %d ticks, more than %d", e.Ticks-start, within)
	}
	return nil
}

func (ie *InteractionEnv) expect(t *testing.T, d *datadriven.TestData) (string, error) {
	e := ie.Env
	of := ie.ofGroup(t, d)
	var failed []string
	fail := func(format string, args ...any) { failed = append(failed, fmt.Sprintf(format, args...)) }
	for _, a := range d.CmdArgs {
		switch a.Key {
		case "of":
		case "leader-not":
			// the member that believes it leads is not the named one
			if not := ie.member(t, d, ie.single(t, d, a)); e.Leader() == not {
				fail("member %d still leads", not)
			}
		case "decided":
			// exactly this many rounds are decided
			if n := ie.value(t, d, a); uint64(len(e.Decided)) != n {
				fail("%d rounds decided, want %s", len(e.Decided), ie.single(t, d, a))
			}
		case "decided-at-most":
			if n := ie.value(t, d, a); uint64(len(e.Decided)) > n {
				fail("%d rounds decided, want at most %s", len(e.Decided), ie.single(t, d, a))
			}
		default:
			// per-member assertions over the group
			for _, i := range ie.resolveGroup(of) {
				m := e.Members[i]
				if m.Down {
					fail("member %d is down", i)
					continue
				}
				switch a.Key {
				case "round":
					if r := ie.value(t, d, a); m.M.State().Round != r {
						fail("member %d at round %d, want %s", i, m.M.State().Round, ie.single(t, d, a))
					}
				case "round-at-most":
					if r := ie.value(t, d, a); m.M.State().Round > r {
						fail("member %d at round %d, want at most %s", i, m.M.State().Round, ie.single(t, d, a))
					}
				case "membership":
					if n := int(ie.value(t, d, a)); len(m.M.Members()) != n {
						fail("member %d has %d members, want %d", i, len(m.M.Members()), n)
					}
				case "alarms":
					if len(m.Alarms) == 0 {
						fail("member %d raised no alarm", i)
					}
				case "invalid-entries":
					if m.M.Counters.InvalidEntries == 0 {
						fail("member %d skipped no invalid entry", i)
					}
				case "installed":
					if m.Installed == 0 {
						fail("member %d caught up without a snapshot", i)
					}
				default:
					d.Fatalf(t, "expect: unknown assertion %q", a.Key)
				}
			}
		}
	}
	if failed != nil {
		return "", errors.New(strings.Join(failed, "; "))
	}
	return "", nil
}

func (ie *InteractionEnv) proposeAddMember(t *testing.T, d *datadriven.TestData) error {
	e := ie.Env
	m := e.Members[ie.member(t, d, d.CmdArgs[0].Key)]
	req := round.NewAddMember(m.ID.ID)
	for _, a := range d.CmdArgs[1:] {
		if a.Key != "signers" {
			d.Fatalf(t, "propose-add-member: unknown argument %q", a.Key)
		}
		for _, v := range a.Vals {
			req.Sign(e.Params.Consortium, e.Members[ie.member(t, d, v)].ID)
		}
	}
	l := e.Leader()
	if l < 0 {
		return errors.New("no leader")
	}
	return e.Members[l].M.ProposeAddMember(req)
}

func (ie *InteractionEnv) decided(t *testing.T, d *datadriven.TestData) (string, error) {
	var b strings.Builder
	for _, r := range ie.rounds(t, d) {
		o, ok := ie.Env.Decided[r.n]
		if !ok {
			fmt.Fprintf(&b, "round %s: undecided\n", r.label)
			continue
		}
		fmt.Fprintf(&b, "round %s: %s", r.label, o.Kind)
		if d.HasArg("included") {
			fmt.Fprintf(&b, " included=%d", o.Included)
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}

func (ie *InteractionEnv) state(t *testing.T, d *datadriven.TestData) string {
	var b strings.Builder
	var run []int
	var last string
	flush := func() {
		if run != nil {
			fmt.Fprintf(&b, "%s: %s\n", describeGroup(run), last)
		}
	}
	for _, i := range ie.resolveGroup(ie.ofGroup(t, d)) {
		m := ie.Env.Members[i]
		s := "down"
		if !m.Down {
			st := m.M.State()
			s = fmt.Sprintf("round %d model %s", st.Round, st.Model.String()[:8])
		}
		if s != last || (run != nil && run[len(run)-1] != i-1) {
			flush()
			run, last = nil, s
		}
		run = append(run, i)
	}
	flush()
	return b.String()
}

// sameModel checks that every listed member holds one round and model digest.
func (ie *InteractionEnv) sameModel(idx []int) error {
	e := ie.Env
	want := e.Members[idx[0]]
	if want.Down {
		return fmt.Errorf("member %d is down", want.Index)
	}
	for _, i := range idx[1:] {
		m := e.Members[i]
		if m.Down {
			return fmt.Errorf("member %d is down", i)
		}
		w, got := want.M.State(), m.M.State()
		if w.Round != got.Round || w.Model != got.Model {
			return fmt.Errorf("member %d at round %d model %s, member %d at round %d model %s", want.Index, w.Round,
				w.Model.String()[:8], i, got.Round, got.Model.String()[:8])
		}
	}
	return nil
}

// groupSpec is a parsed group: explicit indices, or every (live) member.
type groupSpec struct {
	idx  []int
	live bool
}

func (ie *InteractionEnv) ofGroup(t *testing.T, d *datadriven.TestData) groupSpec {
	for _, a := range d.CmdArgs {
		if a.Key != "of" {
			continue
		}
		if len(a.Vals) == 1 && a.Vals[0] == "live" {
			return groupSpec{live: true}
		}
		g, err := ie.group("(" + strings.Join(a.Vals, ",") + ")")
		if err != nil {
			d.Fatalf(t, "%v", err)
		}
		return groupSpec{idx: g}
	}
	return groupSpec{} // every member
}

func (ie *InteractionEnv) resolveGroup(g groupSpec) []int {
	if g.idx != nil {
		return g.idx
	}
	var idx []int
	for i, m := range ie.Env.Members {
		if !g.live || !m.Down {
			idx = append(idx, i)
		}
	}
	return idx
}

// group parses "(0-4)" or "(0,2,5-7)".
func (ie *InteractionEnv) group(s string) ([]int, error) {
	if !strings.HasPrefix(s, "(") || !strings.HasSuffix(s, ")") {
		return nil, fmt.Errorf("group %q: want (a-b,c,...)", s)
	}
	var idx []int
	for _, part := range strings.Split(s[1:len(s)-1], ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := ie.index(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = ie.index(hi); err != nil {
				return nil, err
			}
		}
		for i := a; i <= b; i++ {
			idx = append(idx, i)
		}
	}
	return idx, nil
}

func (ie *InteractionEnv) index(s string) (int, error) {
	i, err := strconv.Atoi(s)
	if err != nil {
		if j, ok := ie.names[s]; ok {
			return j, nil
		}
		return 0, fmt.Errorf("member %q: not an index or a bound name", s)
	}
	if ie.Env != nil && (i < 0 || i >= len(ie.Env.Members)) {
		return 0, fmt.Errorf("member %d: out of range", i)
	}
	return i, nil
}

// member resolves a member reference: an index, "leader" or a bound name.
func (ie *InteractionEnv) member(t *testing.T, d *datadriven.TestData, s string) int {
	if s == "leader" {
		l := ie.Env.Leader()
		if l < 0 {
			d.Fatalf(t, "%s: no leader", d.Cmd)
		}
		return l
	}
	i, err := ie.index(s)
	if err != nil {
		d.Fatalf(t, "%s: %v", d.Cmd, err)
	}
	return i
}

func (ie *InteractionEnv) single(t *testing.T, d *datadriven.TestData, a datadriven.CmdArg) string {
	if len(a.Vals) != 1 {
		d.Fatalf(t, "%s: %s takes one value", d.Cmd, a.Key)
	}
	return a.Vals[0]
}

// value evaluates an argument: an integer, a name bound with set, or name+integer.
func (ie *InteractionEnv) value(t *testing.T, d *datadriven.TestData, a datadriven.CmdArg) uint64 {
	v, err := ie.eval(ie.single(t, d, a))
	if err != nil {
		d.Fatalf(t, "%s: %s: %v", d.Cmd, a.Key, err)
	}
	return v
}

func (ie *InteractionEnv) eval(s string) (uint64, error) {
	name, add, plus := strings.Cut(s, "+")
	var base uint64
	if n, err := strconv.ParseUint(name, 10, 64); err == nil {
		base = n
	} else if v, ok := ie.vars[name]; ok {
		base = v
	} else {
		return 0, fmt.Errorf("%q: not a number or a name bound with set", name)
	}
	if plus {
		n, err := strconv.ParseUint(add, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q: %v", s, err)
		}
		base += n
	}
	return base, nil
}

func (ie *InteractionEnv) intArg(t *testing.T, d *datadriven.TestData, i int) int {
	if len(d.CmdArgs) <= i || len(d.CmdArgs[i].Vals) > 0 {
		d.Fatalf(t, "%s: argument %d must be a number", d.Cmd, i+1)
	}
	n, err := strconv.Atoi(d.CmdArgs[i].Key)
	if err != nil {
		d.Fatalf(t, "%s: %v", d.Cmd, err)
	}
	return n
}

// roundRef is a round and how the script named it ("3", "r+2").
type roundRef struct {
	n     uint64
	label string
}

// rounds parses the first argument: a round expression or a range "1-3".
func (ie *InteractionEnv) rounds(t *testing.T, d *datadriven.TestData) []roundRef {
	if len(d.CmdArgs) == 0 {
		d.Fatalf(t, "%s: which rounds?", d.Cmd)
	}
	s := d.CmdArgs[0].Key
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := ie.eval(lo)
	if err != nil {
		d.Fatalf(t, "%s: %v", d.Cmd, err)
	}
	if !isRange {
		return []roundRef{{a, s}}
	}
	b, err := ie.eval(hi)
	if err != nil {
		d.Fatalf(t, "%s: %v", d.Cmd, err)
	}
	var out []roundRef
	for r := a; r <= b; r++ {
		out = append(out, roundRef{r, strconv.FormatUint(r, 10)})
	}
	return out
}

func span(lo, hi int) []int {
	var idx []int
	for i := lo; i < hi; i++ {
		idx = append(idx, i)
	}
	return idx
}

// describeGroup folds sorted indices into ranges: "0-4,7".
func describeGroup(idx []int) string {
	idx = slices.Clone(idx)
	slices.Sort(idx)
	var parts []string
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(idx[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", idx[i], idx[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
