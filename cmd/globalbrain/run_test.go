package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/api"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/member"
	"github.com/globalbrain/globalbrain/p2p"
)

// writeIDX writes a small MNIST-shaped data set (28x28 images, 10 classes)
// into dir: each class lights its own band of rows, plus noise, so a
// logistic regression learns it within a round.
func writeIDX(t *testing.T, dir string, nTrain, nTest int) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	write := func(prefix string, n int) {
		imgs := binary.BigEndian.AppendUint32(nil, 0x803)
		imgs = binary.BigEndian.AppendUint32(imgs, uint32(n))
		imgs = binary.BigEndian.AppendUint32(imgs, 28)
		imgs = binary.BigEndian.AppendUint32(imgs, 28)
		labels := binary.BigEndian.AppendUint32(nil, 0x801)
		labels = binary.BigEndian.AppendUint32(labels, uint32(n))
		for range n {
			c := r.IntN(10)
			labels = append(labels, byte(c))
			for row := range 28 {
				for range 28 {
					v := byte(r.IntN(40))
					if row/2 == c || row/2 == c+4 {
						v = 200 + byte(r.IntN(55))
					}
					imgs = append(imgs, v)
				}
			}
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, prefix+"-images-idx3-ubyte"), imgs, 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, prefix+"-labels-idx1-ubyte"), labels, 0o644))
	}
	write("train", nTrain)
	write("t10k", nTest)
}

// freePorts returns n TCP ports free on loopback a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// smokeConsortium lays out three labs as the README does: consortium.yaml,
// lab-N/{identity.key,node.yaml}, with a tiny model and data set.
func smokeConsortium(t *testing.T) (root string, configs []string) {
	t.Helper()
	root = t.TempDir()
	data := filepath.Join(root, "data")
	require.NoError(t, os.MkdirAll(data, 0o755))
	writeIDX(t, data, 900, 300)

	const n = 3
	ports := freePorts(t, n)
	var ids []identity.PeerID
	for i := range n {
		id, _, err := p2p.LoadOrCreateKey(filepath.Join(root, fmt.Sprintf("lab-%d", i), "identity.key"))
		require.NoError(t, err)
		ids = append(ids, id.ID)
	}
	man := fmt.Sprintf(`name: smoke
members:
  - {id: %s, voter: true}
  - {id: %s, voter: true}
  - {id: %s, voter: true}
model: {arch: logreg, height: 28, width: 28, channels: 1, classes: 10}
training: {rounds: 2, lr: 0.1}
round: {min_participants: 2, tick: 50ms, deadline: 5s, max_examples_per_member: 1000}
`, ids[0], ids[1], ids[2])
	require.NoError(t, os.WriteFile(filepath.Join(root, "consortium.yaml"), []byte(man), 0o644))
	for i := range n {
		var book strings.Builder
		for j := range n {
			if j != i {
				fmt.Fprintf(&book, "  - /ip4/127.0.0.1/tcp/%d/p2p/%s\n", ports[j], ids[j])
			}
		}
		cfg := fmt.Sprintf(`manifest: ../consortium.yaml
listen: [/ip4/127.0.0.1/tcp/%d]
address_book:
%shttp: 127.0.0.1:0
log_level: debug
data: {dataset: mnist, dir: ../data, members: %d, index: %d}
`, ports[i], book.String(), n, i)
		path := filepath.Join(root, fmt.Sprintf("lab-%d", i), "node.yaml")
		require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
		configs = append(configs, path)
	}
	return root, configs
}

// syncBuffer is a log sink safe for concurrent writes.
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

// running is a daemon serving in the background.
type running struct {
	d    *member.Member
	logs *syncBuffer
	stop context.CancelFunc
	done chan error
}

func start(t *testing.T, config string) *running {
	t.Helper()
	logs := &syncBuffer{}
	d, err := member.FromConfig(context.Background(), config, member.Flags{Logs: logs, NoSync: true})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{d: d, logs: logs, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
		if t.Failed() {
			t.Logf("logs of %s:\n%s", config, logs.String())
		}
	})
	return r
}

// getStatusDoc asks a daemon's HTTP API for /status.
func getStatusDoc(t *testing.T, r *running) api.Status {
	t.Helper()
	resp, err := http.Get("http://" + r.d.HTTPAddr() + "/status")
	require.NoError(t, err)
	defer resp.Body.Close()
	var st api.Status
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

// shutdown stops a daemon the way SIGTERM does and checks it stopped
// cleanly.
func shutdown(t *testing.T, r *running) {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		require.NoError(t, err)
		r.done <- nil // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("the node did not stop within 20s")
	}
}

// TestRunSmoke runs three members as `globalbrain run` does, over real
// loopback libp2p, until every one reports round 2 applied through its
// HTTP API; stops them as SIGTERM does; restarts one and checks it resumes
// from its store.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three libp2p hosts")
	}
	_, configs := smokeConsortium(t)
	var nodes []*running
	for _, c := range configs {
		nodes = append(nodes, start(t, c))
	}

	deadline := time.Now().Add(40 * time.Second)
	var sts []api.Status
	for {
		sts = sts[:0]
		done := 0
		for _, r := range nodes {
			st := getStatusDoc(t, r)
			sts = append(sts, st)
			if st.Applied >= 2 && st.Accuracy != nil && st.Accuracy.Round == 2 {
				done++
			}
		}
		if done == len(nodes) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every node applied round 2 and evaluated it within 40s: %+v", sts)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, st := range sts {
		require.Equal(t, uint64(2), st.Applied, "node %d", i)
		require.Equal(t, "done", st.Phase, "node %d", i)
		require.Equal(t, sts[0].Model, st.Model, "node %d ends on another model", i)
		require.Equal(t, st.Model, st.Accuracy.Model, "node %d evaluated another model", i)
		require.Greater(t, st.Accuracy.Accuracy, 0.5, "node %d", i)
		require.Len(t, st.Peers, 3)
		require.Equal(t, 2, st.PeersConnected, "node %d", i)
		require.NotEmpty(t, st.LeaderPeer, "node %d", i)
	}

	// /metrics on the same server.
	resp, err := http.Get("http://" + nodes[0].d.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"globalbrain_applied_round 2", "globalbrain_peers_connected 2", "globalbrain_rounds_applied_total{kind=",
		`globalbrain_updates_total{reason="",result="accepted"}`, "globalbrain_bytes_in_total", "globalbrain_accuracy "} {
		require.Contains(t, string(metrics), want)
	}

	for _, r := range nodes {
		shutdown(t, r)
	}
	// Every log line is JSON with the peer, round and phase.
	for i, r := range nodes {
		checkLogLines(t, r.logs.String(), i)
	}

	// A restarted member resumes from its store.
	again := start(t, configs[0])
	st := getStatusDoc(t, again)
	require.Equal(t, uint64(2), st.Applied)
	require.Equal(t, sts[0].Model, st.Model)
	require.Equal(t, "done", st.Phase)
	shutdown(t, again)
	require.Contains(t, again.logs.String(), `"msg":"node started"`)
	require.Contains(t, again.logs.String(), `"applied_round":2`)
}

// checkLogLines checks that every log line is a JSON object with peer,
// round and phase, and that the node logged its progress.
func checkLogLines(t *testing.T, logs string, i int) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	msgs := map[string]bool{}
	lines := 0
	for sc.Scan() {
		lines++
		var rec map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec), "node %d: %s", i, sc.Text())
		for _, key := range []string{"time", "level", "msg", "peer", "round", "phase"} {
			require.Contains(t, rec, key, "node %d: %s", i, sc.Text())
		}
		msgs[rec["msg"].(string)] = true
	}
	require.Greater(t, lines, 5)
	for _, m := range []string{"node started", "data loaded", "trained", "applied", "evaluated", "stopping", "stopped"} {
		require.True(t, msgs[m], "node %d never logged %q", i, m)
	}
}

func TestRunRefusesNonMember(t *testing.T) {
	root, configs := smokeConsortium(t)
	// A fourth lab that the manifest does not list.
	dir := filepath.Join(root, "lab-x")
	_, _, err := p2p.LoadOrCreateKey(filepath.Join(dir, "identity.key"))
	require.NoError(t, err)
	b, err := os.ReadFile(configs[0])
	require.NoError(t, err)
	cfg := filepath.Join(dir, "node.yaml")
	require.NoError(t, os.WriteFile(cfg, b, 0o644))
	_, err = member.FromConfig(context.Background(), cfg, member.Flags{Logs: io.Discard, NoSync: true})
	require.ErrorContains(t, err, "is not a member of \"smoke\"")
	require.ErrorContains(t, err, "run with --join")

	// A config whose key does not exist yet.
	require.NoError(t, os.Remove(filepath.Join(dir, "identity.key")))
	_, err = member.FromConfig(context.Background(), cfg, member.Flags{Logs: io.Discard, NoSync: true})
	require.ErrorContains(t, err, "create one with globalbrain init")

	// A manifest whose model does not fit the data.
	m, err := manifest.Load(filepath.Join(root, "consortium.yaml"))
	require.NoError(t, err)
	m.Model.Classes = 5
	out, err := m.Marshal()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, "consortium.yaml"), out, 0o644))
	_, err = member.FromConfig(context.Background(), configs[1], member.Flags{Logs: io.Discard, NoSync: true})
	require.ErrorContains(t, err, "the manifest's model 28x28x1 and 5 classes")
}
