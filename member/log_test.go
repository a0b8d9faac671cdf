package member

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStatusHandler(t *testing.T) {
	var buf bytes.Buffer
	rd, phase := uint64(3), "training"
	h := newStatusHandler(slog.NewJSONHandler(&buf, nil), "abc123", func() (uint64, string) { return rd, phase })
	log := slog.New(h)
	log.Info("plain")
	log.Info("own round", "round", 7)
	log.With("peer", "other").Info("own peer")
	log.WithGroup("g").Info("grouped", "k", 1)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 4)
	var recs []map[string]any
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		recs = append(recs, m)
		require.Equal(t, 1, strings.Count(l, `"round"`), l)
		require.Equal(t, 1, strings.Count(l, `"peer"`), l)
	}
	require.Equal(t, map[string]any{"peer": "abc123", "round": 3.0, "phase": "training"},
		map[string]any{"peer": recs[0]["peer"], "round": recs[0]["round"], "phase": recs[0]["phase"]})
	require.Equal(t, 7.0, recs[1]["round"])
	require.Equal(t, "other", recs[2]["peer"])
	require.Equal(t, "training", recs[2]["phase"])
}

func TestStatusHandlerGroups(t *testing.T) {
	var buf bytes.Buffer
	h := newStatusHandler(slog.NewJSONHandler(&buf, nil), "abc123", func() (uint64, string) { return 5, "closing" })
	slog.New(h).With("a", 1).WithGroup("g").With("b", 2).WithGroup("h").Info("deep", "c", 3)
	require.JSONEq(t, `{"a":1,"peer":"abc123","round":5,"phase":"closing","g":{"b":2,"h":{"c":3}}}`,
		regexpTimeLevelMsg.ReplaceAllString(strings.TrimSpace(buf.String()), "{"))
}

var regexpTimeLevelMsg = regexp.MustCompile(`^\{"time":"[^"]*","level":"INFO","msg":"deep",`)
