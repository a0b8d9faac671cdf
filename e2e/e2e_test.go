package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "globalbrain-e2e-bin-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "globalbrain")
	build := exec.Command("go", "build", "-o", bin, "github.com/globalbrain/globalbrain/cmd/globalbrain")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building globalbrain:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type member struct {
	dir, cfg, id string
	p2pPort      int
	httpPort     int
	cmd          *exec.Cmd
	log          *os.File
	done         chan struct{} // closed when cmd has exited and been reaped
	waitErr      error         // cmd.Wait's result, once done is closed
	mu           sync.Mutex    // guards cmd and done against the watcher's reads
}

type consortium struct {
	t       *testing.T
	root    string
	members []*member
	rounds  int
	// extraAddrs are added to every member's address book (the attackers'
	// hosts, which run no node.yaml of their own).
	extraAddrs []string
}

var peerIDLine = regexp.MustCompile(`(?m)^peer ID (12D3KooW\w+)$`)

// initMember runs `globalbrain init` as a user would and returns the member.
func initMember(t *testing.T, root, name string) *member {
	t.Helper()
	m := &member{dir: filepath.Join(root, name), p2pPort: freePort(t), httpPort: freePort(t)}
	out, err := exec.Command(bin, "init", "--dir", m.dir,
		"--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", m.p2pPort),
		"--http", fmt.Sprintf("127.0.0.1:%d", m.httpPort),
		"--manifest", filepath.Join(root, "consortium.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("init %s: %v\n%s", name, err, out)
	}
	sub := peerIDLine.FindSubmatch(out)
	if sub == nil {
		t.Fatalf("init %s printed no peer ID:\n%s", name, out)
	}
	m.id, m.cfg = string(sub[1]), filepath.Join(m.dir, "node.yaml")
	return m
}

func newConsortium(t *testing.T, n, rounds int) *consortium {
	root := t.TempDir()
	c := &consortium{t: t, root: root, rounds: rounds}
	for i := range n {
		c.members = append(c.members, initMember(t, root, fmt.Sprintf("m%d", i)))
	}
	var b strings.Builder
	b.WriteString("name: e2e\nmembers:\n")
	for _, m := range c.members {
		fmt.Fprintf(&b, "  - id: %s\n    voter: true\n", m.id)
	}
	fmt.Fprintf(&b, `model: {arch: logreg, height: 28, width: 28, channels: 1, classes: 10, init_seed: 1}
training: {rounds: %d, epochs: 1, batch_size: 10, lr: 0.05}
round: {fraction: 1, min_participants: %d, tick: 50ms, deadline: 4s, election_ticks: 10, max_examples_per_member: 60000, retain_rounds: 3}
strategy: {name: fedavg}
`, rounds, n-1)
	if err := os.WriteFile(filepath.Join(root, "consortium.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, m := range c.members {
		c.writeConfig(m, i, n)
	}
	return c
}

func (c *consortium) writeConfig(m *member, i, n int) {
	var b strings.Builder
	level := "info"
	if l := os.Getenv("E2E_LOG_LEVEL"); l != "" {
		level = l // debug, for a post-mortem with E2E_KEEP
	}
	fmt.Fprintf(&b, "identity_key: identity.key\nmanifest: %s\nlisten: [/ip4/127.0.0.1/tcp/%d]\nstore: store\nhttp: 127.0.0.1:%d\nlog_level: %s\naddress_book:\n",
		filepath.Join(c.root, "consortium.yaml"), m.p2pPort, m.httpPort, level)
	for _, o := range c.members {
		if o != m {
			fmt.Fprintf(&b, "  - /ip4/127.0.0.1/tcp/%d/p2p/%s\n", o.p2pPort, o.id)
		}
	}
	for _, a := range c.extraAddrs {
		fmt.Fprintf(&b, "  - %s\n", a)
	}
	fmt.Fprintf(&b, "data: {dataset: mnist, partition: iid, members: %d, index: %d, seed: 1}\n", n, i)
	if err := os.WriteFile(m.cfg, []byte(b.String()), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

func (c *consortium) start(m *member, extra ...string) {
	c.t.Helper()
	f, err := os.OpenFile(filepath.Join(m.dir, "run.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	m.log = f
	cmd := exec.Command(bin, append([]string{"run", "--config", m.cfg}, extra...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	// One goroutine reaps the process, so a member that dies on its own
	// is seen at once (alive) and kill and stop only wait for done.
	done := make(chan struct{})
	m.mu.Lock()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()
	go func() {
		err := cmd.Wait()
		m.waitErr = err
		close(done)
	}()
	c.t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
}

// alive reports whether m's process is running: started and not exited.
func (m *member) alive() bool {
	done := m.run()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// run returns the done channel of m's current process (nil before the
// first start): it identifies one run of the process.
func (m *member) run() chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}

func (c *consortium) kill(m *member) {
	c.t.Helper()
	if err := m.cmd.Process.Signal(syscall.SIGKILL); err != nil && m.alive() {
		c.t.Fatal(err)
	}
	<-m.done
	m.log.Close()
}

func (c *consortium) stop(m *member) {
	c.t.Helper()
	if !m.alive() {
		c.t.Errorf("%s had exited before SIGTERM: %v", m.id, m.waitErr)
		m.log.Close()
		return
	}
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-m.done:
		if m.waitErr != nil {
			c.t.Errorf("%s: exit after SIGTERM: %v", m.id, m.waitErr)
		}
	case <-time.After(20 * time.Second):
		c.t.Errorf("%s did not stop within 20 s of SIGTERM", m.id)
		m.cmd.Process.Kill()
		<-m.done
	}
	m.log.Close()
}

type status struct {
	Round    uint64            `json:"round"`
	Phase    string            `json:"phase"`
	Applied  uint64            `json:"applied_round"`
	Model    string            `json:"model_digest"`
	Leader   bool              `json:"leader"`
	LeaderID string            `json:"leader_id"`
	Halted   string            `json:"halted"`
	Alarms   []string          `json:"alarms"`
	Evidence []json.RawMessage `json:"evidence"`
	Counters struct {
		RejectedMessages uint64            `json:"RejectedMessages"`
		ExcludedUpdates  uint64            `json:"ExcludedUpdates"`
		Equivocations    uint64            `json:"Equivocations"`
		RaftRefused      map[string]uint64 `json:"raft_refused"`
	} `json:"counters"`
}

func (c *consortium) status(m *member) (status, error) {
	var s status
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/status", m.httpPort))
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// waitFor polls every member's status until cond holds for the listed members.
func (c *consortium) waitFor(what string, limit time.Duration, ms []*member, cond func(status) bool) {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok := true
		for _, m := range ms {
			s, err := c.status(m)
			if err != nil || !cond(s) {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			for _, m := range ms {
				s, err := c.status(m)
				c.t.Logf("%s: %+v %v", m.id, s, err)
			}
			c.dumpLogs()
			c.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *consortium) dumpLogs() {
	for _, m := range c.members {
		b, _ := os.ReadFile(filepath.Join(m.dir, "run.log"))
		lines := strings.Split(string(b), "\n")
		c.t.Logf("--- %s (last lines)\n%s", m.dir, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
}

// crashTest runs 4 members for c.rounds rounds, SIGKILLs one (the leader or
// a follower) in the middle of round 2 or later, restarts it, and checks
// that all members end on one model digest.
func crashTest(t *testing.T, killLeader bool) {
	c := newConsortium(t, 4, 6)
	for _, m := range c.members {
		c.start(m)
	}
	c.waitFor("round 2 applied", 3*time.Minute, c.members, func(s status) bool { return s.Applied >= 2 })
	var victim *member
	c.waitFor("a round in progress with a known leader", time.Minute, c.members, func(s status) bool { return s.Phase != "done" })
	for _, m := range c.members {
		s, err := c.status(m)
		if err == nil && s.Leader == killLeader {
			victim = m
			break
		}
	}
	if victim == nil {
		t.Fatal("no member to kill")
	}
	before, _ := c.status(victim)
	t.Logf("SIGKILL %s (leader %v) in round %d, phase %s", victim.id, before.Leader, before.Round, before.Phase)
	c.kill(victim)
	time.Sleep(time.Second)
	c.start(victim)
	c.waitFor("every member done", 4*time.Minute, c.members, func(s status) bool { return s.Applied >= uint64(c.rounds) })
	var digest string
	for _, m := range c.members {
		s, err := c.status(m)
		if err != nil {
			t.Fatal(err)
		}
		if digest == "" {
			digest = s.Model
		}
		if s.Model != digest {
			c.dumpLogs()
			t.Fatalf("%s ended on %s, another member on %s", m.id, s.Model, digest)
		}
	}
	after, _ := c.status(victim)
	if after.Applied < before.Applied {
		t.Fatalf("the restarted member went back from round %d to %d", before.Applied, after.Applied)
	}
	for _, m := range c.members {
		c.stop(m)
	}
}

func TestKillLeaderMidRound(t *testing.T)   { crashTest(t, true) }
func TestKillFollowerMidRound(t *testing.T) { crashTest(t, false) }

// TestNonMemberRefused starts a fifth process that is not in the manifest:
// the members refuse its connections and log the refusal.
func TestNonMemberRefused(t *testing.T) {
	c := newConsortium(t, 3, 2)
	for _, m := range c.members {
		c.start(m)
	}
	c.waitFor("round 1 applied", 3*time.Minute, c.members, func(s status) bool { return s.Applied >= 1 })
	out := initMember(t, c.root, "outsider")
	c.writeConfig(out, 0, 3)
	// Without --join the binary itself refuses to run a non-member.
	if b, err := exec.Command(bin, "run", "--config", out.cfg).CombinedOutput(); err == nil || !strings.Contains(string(b), "not a member") {
		t.Fatalf("a non-member ran: %v\n%s", err, b)
	}
	c.start(out, "--join")
	deadline := time.Now().Add(time.Minute)
	for {
		refused := false
		for _, m := range c.members {
			if logMentions(t, m, out.id, "not_member", "not a member", "refus") {
				refused = true
			}
		}
		if refused {
			break
		}
		if time.Now().After(deadline) {
			c.members = append(c.members, out)
			c.dumpLogs()
			t.Fatal("no member logged refusing the outsider")
		}
		time.Sleep(300 * time.Millisecond)
	}
	c.kill(out)
	for _, m := range c.members {
		c.stop(m)
	}
}

// logMentions reports whether a line of m's log names id and one of words.
func logMentions(t *testing.T, m *member, id string, words ...string) bool {
	t.Helper()
	f, err := os.Open(filepath.Join(m.dir, "run.log"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, id) {
			continue
		}
		for _, w := range words {
			if strings.Contains(line, w) {
				return true
			}
		}
	}
	return false
}
