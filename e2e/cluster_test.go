package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clusterSpec describes a consortium of `globalbrain run` processes and,
// optionally, further listed members that run no process (the attackers).
type clusterSpec struct {
	honest          int // processes
	voters          int // the first voters of them are voters, the rest learners
	extras          []extraSpec
	rounds          int // training.rounds; 0 runs until stopped
	minParticipants int
	deadline        string // round.deadline
	retain          int    // round.retain_rounds
	privacy         string // the manifest's privacy section, one YAML line (empty: none)
}

// extraSpec is a listed member that the test itself plays.
type extraSpec struct {
	name  string
	voter bool
}

// newCluster inits every member as a user would, writes the manifest and
// the node configs (extras are in every address book) and returns the
// consortium of the honest processes and the extras' members (their
// directories hold the identity keys; nothing runs them).
func newCluster(t *testing.T, sp clusterSpec) (*consortium, []*member) {
	t.Helper()
	root := t.TempDir()
	if os.Getenv("E2E_KEEP") != "" {
		// Keep the members' directories (logs, stores) for a post-mortem.
		var err error
		if root, err = os.MkdirTemp("", "globalbrain-e2e-*"); err != nil {
			t.Fatal(err)
		}
		t.Logf("E2E_KEEP: the members' directories are kept in %s", root)
	}
	c := &consortium{t: t, root: root, rounds: sp.rounds}
	for i := range sp.honest {
		c.members = append(c.members, initMember(t, root, fmt.Sprintf("m%d", i)))
	}
	var extras []*member
	for _, e := range sp.extras {
		x := initMember(t, root, e.name)
		extras = append(extras, x)
		c.extraAddrs = append(c.extraAddrs, fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", x.p2pPort, x.id))
	}
	var b strings.Builder
	b.WriteString("name: e2e\nmembers:\n")
	for i, m := range c.members {
		fmt.Fprintf(&b, "  - id: %s\n    voter: %v\n", m.id, i < sp.voters)
	}
	for i, x := range extras {
		fmt.Fprintf(&b, "  - id: %s\n    voter: %v\n", x.id, sp.extras[i].voter)
	}
	fmt.Fprintf(&b, `model: {arch: logreg, height: 28, width: 28, channels: 1, classes: 10, init_seed: 1}
training: {rounds: %d, epochs: 1, batch_size: 10, lr: 0.05}
round: {fraction: 1, min_participants: %d, tick: 50ms, deadline: %s, election_ticks: 10, max_examples_per_member: 60000, retain_rounds: %d}
strategy: {name: fedavg}
`, sp.rounds, sp.minParticipants, sp.deadline, sp.retain)
	if sp.privacy != "" {
		fmt.Fprintf(&b, "privacy: %s\n", sp.privacy)
	}
	if err := os.WriteFile(filepath.Join(root, "consortium.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, m := range c.members {
		c.writeConfig(m, i, sp.honest)
	}
	return c, extras
}

// name is a member's short name (its directory), for reports.
func (m *member) name() string { return filepath.Base(m.dir) }

// statuses reads every member's status; a member that does not answer
// (down, or still starting) has ok false.
func (c *consortium) statuses() ([]status, []bool) {
	sts := make([]status, len(c.members))
	oks := make([]bool, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Go(func() {
			s, err := c.status(m)
			sts[i], oks[i] = s, err == nil && s.Phase != "starting"
		})
	}
	wg.Wait()
	return sts, oks
}

// leader returns the member whose status says it leads (one read of every
// member), or nil.
func (c *consortium) leader() *member {
	sts, oks := c.statuses()
	for i, s := range sts {
		if oks[i] && s.Leader {
			return c.members[i]
		}
	}
	return nil
}

// maxApplied is the highest applied round among the members that answer.
func (c *consortium) maxApplied() uint64 {
	sts, oks := c.statuses()
	var r uint64
	for i, s := range sts {
		if oks[i] {
			r = max(r, s.Applied)
		}
	}
	return r
}

// errDiverged marks an agree error where two members hold different
// models at the same applied round (the others are a member lagging or
// not answering).
var errDiverged = errors.New("divergence")

// agree waits, up to limit, for one read of every member to show the same
// applied round, and returns that round and digest; an error says which
// members disagree (errDiverged: different digests at the same round).
func (c *consortium) agree(limit time.Duration) (uint64, string, error) {
	deadline := time.Now().Add(limit)
	var last string
	for {
		sts, oks := c.statuses()
		same := true
		for i, s := range sts {
			if !oks[i] {
				same = false
				last = fmt.Sprintf("%s does not answer", c.members[i].name())
				break
			}
			if s.Applied != sts[0].Applied {
				same = false
				last = fmt.Sprintf("%s at round %d, %s at %d", c.members[0].name(), sts[0].Applied, c.members[i].name(), s.Applied)
				break
			}
		}
		if same {
			for i, s := range sts {
				if s.Model != sts[0].Model {
					return s.Applied, "", fmt.Errorf("%w: at applied round %d %s has model %s, %s has %s", errDiverged,
						s.Applied, c.members[0].name(), sts[0].Model, c.members[i].name(), s.Model)
				}
			}
			return sts[0].Applied, sts[0].Model, nil
		}
		if time.Now().After(deadline) {
			return 0, "", fmt.Errorf("no common applied round within %v: %s", limit, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watcher polls every member's status in the background and keeps, for
// each applied round, the first model digest a member reported: a second,
// different digest for a round is divergence, whichever members and
// whenever. It also notes a member whose applied round goes backwards
// within one run of its process, and members that halt.
type watcher struct {
	c    *consortium
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	digest    map[uint64]string // applied round -> model digest
	by        map[uint64]string // applied round -> the member that reported it first
	last      map[*member]uint64
	proc      map[*member]chan struct{} // the process run last seen
	conflicts []string
	halted    map[string]string
}

func startWatcher(c *consortium) *watcher {
	w := &watcher{c: c, stop: make(chan struct{}), done: make(chan struct{}),
		digest: map[uint64]string{}, by: map[uint64]string{}, last: map[*member]uint64{},
		proc: map[*member]chan struct{}{}, halted: map[string]string{}}
	go func() {
		defer close(w.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			w.poll()
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *watcher) poll() {
	for _, m := range w.c.members {
		run := m.run() // the process run this status belongs to
		s, err := w.c.status(m)
		if err != nil || s.Phase == "starting" || s.Model == "" {
			continue
		}
		w.mu.Lock()
		if d, ok := w.digest[s.Applied]; !ok {
			w.digest[s.Applied], w.by[s.Applied] = s.Model, m.name()
		} else if d != s.Model {
			w.conflicts = append(w.conflicts, fmt.Sprintf("divergence: round %d: %s reported %s, %s reports %s",
				s.Applied, w.by[s.Applied], d, m.name(), s.Model))
		}
		if w.proc[m] == run && s.Applied < w.last[m] {
			w.conflicts = append(w.conflicts, fmt.Sprintf("%s went back from applied round %d to %d without a restart", m.name(), w.last[m], s.Applied))
		}
		w.proc[m], w.last[m] = run, s.Applied
		if s.Halted != "" {
			w.halted[m.name()] = s.Halted
		}
		w.mu.Unlock()
	}
}

// problems returns the divergences, regressions and halts seen so far.
func (w *watcher) problems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := slices.Clone(w.conflicts)
	for name, why := range w.halted {
		out = append(out, fmt.Sprintf("%s halted: %s", name, why))
	}
	slices.Sort(out)
	return out
}

// reset forgets what was seen (after the consortium was rebuilt).
func (w *watcher) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.digest, w.by, w.last = map[uint64]string{}, map[uint64]string{}, map[*member]uint64{}
	w.proc, w.conflicts, w.halted = map[*member]chan struct{}{}, nil, map[string]string{}
}

func (w *watcher) close() {
	close(w.stop)
	<-w.done
}

// metrics reads m's /metrics as series name{label="value",...} -> value
// (labels as the exposition format prints them, sorted by name).
func (c *consortium) metrics(m *member) (map[string]float64, error) {
	cl := http.Client{Timeout: 3 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", m.httpPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// logExcerpt returns the lines of m's log that match one of words (all
// lines if none given), the last n of them.
func logExcerpt(m *member, n int, words ...string) string {
	f, err := os.Open(filepath.Join(m.dir, "run.log"))
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if len(words) == 0 || slices.ContainsFunc(words, func(w string) bool { return strings.Contains(line, w) }) {
			if len(line) > 400 {
				line = line[:400] + "..."
			}
			lines = append(lines, line)
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// envInt reads an integer from the environment, def when unset.
func envInt(t *testing.T, name string, def int64) int64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, s, err)
	}
	return v
}
