package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/audit"
	"github.com/globalbrain/globalbrain/member/membertest"
)

// `globalbrain audit` on a stopped member's store: the text and JSON
// reports, and a non-zero exit naming the round and the reason once a
// model blob is corrupted.
func TestAuditCommand(t *testing.T) {
	const rounds = 2
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: rounds})
	c.RunUntil(t, func() bool { return c.AllApplied(rounds) })
	for i := range c.Members {
		c.Stop(i)
	}
	dir := t.TempDir()
	man := filepath.Join(dir, "consortium.yaml")
	b, err := c.Manifest.Marshal()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(man, b, 0o644))

	out, err := cli(t, "audit", "--store", c.Dirs[1], "--manifest", man)
	require.NoError(t, err, out)
	require.Contains(t, out, "OK: the log verifies")
	require.Contains(t, out, "3 updates, 300 examples")
	require.Contains(t, out, "node        "+c.IDs[1].ID.String())

	// --config: the store and manifest a node config names.
	cfg := filepath.Join(dir, "node.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("manifest: consortium.yaml\nstore: "+c.Dirs[1]+"\nlisten: [/ip4/127.0.0.1/tcp/0]\n"), 0o644))
	out, err = cli(t, "audit", "--config", cfg, "--json")
	require.NoError(t, err, out)
	var rep audit.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.True(t, rep.OK)
	require.Len(t, rep.Rounds, rounds)
	require.Equal(t, int64(300), rep.Rounds[1].Examples)

	corrupt := t.TempDir()
	require.NoError(t, os.CopyFS(corrupt, os.DirFS(c.Dirs[1])))
	p := filepath.Join(corrupt, "blobs", rep.Rounds[0].Result)
	blob, err := os.ReadFile(p)
	require.NoError(t, err)
	blob[0] ^= 0xff
	require.NoError(t, os.WriteFile(p, blob, 0o600))
	out, err = cli(t, "audit", "--store", corrupt, "--manifest", man)
	require.ErrorContains(t, err, "audit: verification failed: round 1: model blob "+rep.Rounds[0].Result[:12]+" does not hash to its digest")
	require.Contains(t, out, "FAILED: 1 problems")

	_, err = cli(t, "audit", "--store", t.TempDir(), "--manifest", man)
	require.ErrorContains(t, err, "not a node's store directory")
}
