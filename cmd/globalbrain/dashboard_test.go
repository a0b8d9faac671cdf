package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// dashboardPanel is the part of a Grafana panel the test reads.
type dashboardPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// metricNames are the sample names a /metrics page exposes (a histogram's
// _bucket, _sum and _count included).
func metricNames(t *testing.T, addr string) map[string]bool {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	require.NoError(t, sc.Err())
	return names
}

// TestGrafanaDashboard checks that every metric configs/grafana-dashboard.json
// queries is exported by real nodes: three `globalbrain run` members over
// loopback libp2p, under privacy mode update (so the budget metrics exist),
// scraped after two rounds. A renamed or removed metric fails here.
func TestGrafanaDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three libp2p hosts")
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "configs", "grafana-dashboard.json"))
	require.NoError(t, err)
	var dash struct {
		Title      string           `json:"title"`
		Panels     []dashboardPanel `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(b, &dash), "configs/grafana-dashboard.json")
	require.Equal(t, "globalbrain", dash.Title)
	metric := regexp.MustCompile(`\bglobalbrain_[a-z_]+`)
	queried := map[string][]string{}
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, "panel %q queries nothing", p.Title)
		for _, tg := range p.Targets {
			names := metric.FindAllString(tg.Expr, -1)
			require.NotEmpty(t, names, "panel %q: %q names no globalbrain metric", p.Title, tg.Expr)
			for _, n := range names {
				queried[n] = append(queried[n], p.Title)
			}
		}
	}
	for _, v := range dash.Templating.List {
		for _, n := range metric.FindAllString(v.Definition, -1) {
			queried[n] = append(queried[n], "variable "+v.Definition)
		}
	}
	require.GreaterOrEqual(t, len(queried), 15)

	root, configs := smokeConsortium(t)
	man := filepath.Join(root, "consortium.yaml")
	mb, err := os.ReadFile(man)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(man, append(mb, []byte("privacy: {mode: update, dp: {z: 0.01, clip: 2, epsilon: 1000000}}\n")...), 0o644))
	var nodes []*running
	for _, c := range configs {
		nodes = append(nodes, start(t, c))
	}
	deadline := time.Now().Add(40 * time.Second)
	for {
		done := 0
		for _, r := range nodes {
			if st := getStatusDoc(t, r); st.Applied >= 2 && st.Accuracy != nil {
				done++
			}
		}
		if done == len(nodes) {
			break
		}
		require.False(t, time.Now().After(deadline), "the nodes did not apply round 2 within 40s")
		time.Sleep(100 * time.Millisecond)
	}
	exported := map[string]bool{}
	for _, r := range nodes {
		for n := range metricNames(t, r.d.HTTPAddr()) {
			exported[n] = true
		}
	}
	for n, panels := range queried {
		require.True(t, exported[n], "the dashboard queries %s (%s), which no node exports", n, strings.Join(panels, ", "))
	}
}
