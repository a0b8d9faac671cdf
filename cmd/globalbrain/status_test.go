package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/api"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/round"
)

func TestStatusCommand(t *testing.T) {
	ids := []identity.PeerID{identity.Derive(3, 0).ID, identity.Derive(3, 1).ID, identity.Derive(3, 2).ID}
	srv := httptest.NewServer(api.New(api.Source{
		Status: func() node.Status {
			return node.Status{Peer: ids[0].String(), Round: 5, Phase: "collecting", Applied: 4, Model: "9f86d081884c7d65",
				Members: 3, Alarms: []string{"round 3: invalid entry at index 12: bad digest"},
				Counters: round.Counters{InvalidEntries: 1, Equivocations: 1, RaftRefused: map[string]uint64{round.RaftBadCommit: 2}},
				Evidence: []node.EvidenceSummary{{Round: 3, Author: ids[2].String(), First: "aaaaaaaaaaaaaaaa", Second: "bbbbbbbbbbbbbbbb"}},
				Privacy:  &node.PrivacyStatus{Mode: "update", Delta: 1e-5, Ceiling: 8, Spent: 7.25, Rounds: 12, Declines: 2, Exhausted: true}}
		},
		Members:   func() []identity.PeerID { return ids },
		Connected: func(id identity.PeerID) bool { return identity.Compare(id, ids[1]) == 0 },
		Leader:    func() identity.PeerID { return ids[1] },
		Accuracy:  func() *api.Accuracy { return &api.Accuracy{Round: 4, Accuracy: 0.9123, Loss: 0.31, Examples: 10000} },
	}, prometheus.NewRegistry(), nil))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	out, err := cli(t, "status", "--http", addr)
	require.NoError(t, err, out)
	for _, want := range []string{
		"peer      " + ids[0].String() + " (member)",
		"round     5, phase collecting",
		"applied   round 4, model 9f86d081884c7d65",
		"leader    " + ids[1].String(),
		"accuracy  0.9123 (loss 0.3100) of round 4's model on 10000 test examples",
		"members   3, 1 of 2 others connected",
		ids[0].String() + "  this node",
		ids[1].String() + "  connected",
		ids[2].String() + "  not connected",
		"invalid entries 1",
		"alarms    1",
		"round 3: invalid entry at index 12: bad digest",
		"refused   raft messages 2, excluded updates 0, equivocations 1",
		"evidence: " + ids[2].String() + " announced aaaaaaaaaaaa and bbbbbbbbbbbb for round 3",
		"privacy   update: epsilon 7.25 of 8 spent at delta 1e-05, 12 rounds charged",
		"! privacy budget exhausted: declining rounds (2 declined by this run)",
	} {
		require.Contains(t, out, want)
	}

	out, err = cli(t, "status", "--http", addr, "--json")
	require.NoError(t, err)
	var st api.Status
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Equal(t, uint64(5), st.Round)

	// --config asks the config's http address.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "node.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("manifest: m.yaml\nlisten: [/ip4/127.0.0.1/tcp/0]\nhttp: "+addr+"\n"), 0o644))
	out, err = cli(t, "status", "--config", cfg)
	require.NoError(t, err, out)
	require.Contains(t, out, "round     5, phase collecting")
}

func TestStatusUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = cli(t, "status", "--http", addr)
	require.ErrorContains(t, err, "cannot reach the node's API at http://"+addr+"/status (is `globalbrain run` running")

	_, err = cli(t, "status", "--http", addr, "--config", "node.yaml")
	require.ErrorContains(t, err, "not both")
}

// status --watch reprints the status every interval, keeps watching while
// the node cannot be reached, and stops cleanly when interrupted.
func TestStatusWatch(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if n == 2 {
			http.Error(w, "restarting", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(node.Status{Peer: identity.Derive(3, 0).ID.String(), Round: uint64(n), Phase: "collecting", Members: 1})
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	for _, asJSON := range []bool{false, true} {
		calls.Store(0)
		ctx, cancel := context.WithCancel(context.Background())
		var out syncBuffer
		done := make(chan error, 1)
		args := []string{"status", "--http", addr, "--watch", "--interval", "20ms"}
		if asJSON {
			args = append(args, "--json")
		}
		go func() { done <- run(ctx, args, &out, io.Discard) }()
		require.Eventually(t, func() bool { return calls.Load() >= 4 }, 10*time.Second, 5*time.Millisecond)
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, "an interrupted watch ends cleanly")
		case <-time.After(5 * time.Second):
			t.Fatal("status --watch did not stop when interrupted")
		}
		text := out.String()
		if !asJSON {
			require.Contains(t, text, "round     1, phase collecting")
			require.Contains(t, text, "503 Service Unavailable: restarting", "an unreachable node is said, and the watch goes on")
			require.Contains(t, text, "round     3, phase collecting")
			require.Less(t, strings.Index(text, "round     1,"), strings.Index(text, "round     3,"))
			require.GreaterOrEqual(t, strings.Count(text, "-- "), 3, "a header per print")
			continue
		}
		lines := strings.Split(strings.TrimSpace(text), "\n")
		require.GreaterOrEqual(t, len(lines), 3)
		var first api.Status
		require.NoError(t, json.Unmarshal([]byte(lines[0]), &first), "one JSON document per line")
		require.Equal(t, uint64(1), first.Round)
		require.Contains(t, lines[1], `"error"`)
		var third api.Status
		require.NoError(t, json.Unmarshal([]byte(lines[2]), &third))
		require.Equal(t, uint64(3), third.Round)
	}

	_, err := cli(t, "status", "--http", addr, "--watch", "--interval", "0s")
	require.ErrorContains(t, err, "--interval 0s: want a positive duration")
}
