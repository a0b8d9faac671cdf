package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/nodeconfig"
)

// placeholder is how configs/ marks a peer ID to fill in.
var placeholder = regexp.MustCompile(`PEER_ID_OF_LAB_([A-Z])`)

// TestExampleConfigs reads every file under configs/ with its placeholders
// replaced by real peer IDs, laid out as the README's walkthrough lays them
// out (consortium.yaml, lab-a/node.yaml, ...), so the examples never rot.
func TestExampleConfigs(t *testing.T) {
	src := filepath.Join("..", "..", "configs")
	files, err := os.ReadDir(src)
	require.NoError(t, err)
	ids := map[string]identity.PeerID{}
	for i, lab := range []string{"A", "B", "C"} {
		ids[lab] = identity.Derive(99, i).ID
	}
	fill := func(t *testing.T, text string) string {
		out := placeholder.ReplaceAllStringFunc(text, func(s string) string {
			id, ok := ids[placeholder.FindStringSubmatch(s)[1]]
			require.True(t, ok, "unknown placeholder %s", s)
			return id.String()
		})
		require.NotRegexp(t, placeholder, out)
		return out
	}

	root := t.TempDir()
	seen := map[string]bool{}
	for _, f := range files {
		name := f.Name()
		require.False(t, f.IsDir(), "configs/%s: a directory (keys and stores never belong in configs/)", name)
		require.False(t, strings.HasSuffix(name, ".key"), "configs/%s: a key file", name)
		if name == "grafana-dashboard.json" {
			continue // TestGrafanaDashboard
		}
		b, err := os.ReadFile(filepath.Join(src, name))
		require.NoError(t, err)
		require.Regexp(t, placeholder, string(b), "configs/%s: the examples carry placeholders, not real peer IDs", name)
		require.NotRegexp(t, `12D3KooW\w{40,}`, string(b), "configs/%s: a real peer ID", name)
		switch {
		case name == "consortium.example.yaml":
			require.NoError(t, os.WriteFile(filepath.Join(root, "consortium.yaml"), []byte(fill(t, string(b))), 0o644))
		case regexp.MustCompile(`^node-[a-z]\.yaml$`).MatchString(name):
			dir := filepath.Join(root, "lab-"+name[5:6])
			require.NoError(t, os.MkdirAll(dir, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "node.yaml"), []byte(fill(t, string(b))), 0o644))
		case name == "consortium-csv.example.yaml" || name == "node-csv.yaml":
			// TestExampleCSVConfigs.
		default:
			t.Fatalf("configs/%s: not covered by this test", name)
		}
		seen[name] = true
	}
	require.True(t, seen["consortium.example.yaml"] && seen["node-a.yaml"] && seen["node-b.yaml"] && seen["node-c.yaml"])

	m, err := manifest.Load(filepath.Join(root, "consortium.yaml"))
	require.NoError(t, err)
	require.Len(t, m.Voters(), 3)
	require.Equal(t, manifest.Arch2NN, m.Model.Arch)
	require.Equal(t, [4]int{28, 28, 1, 10}, [4]int{m.Model.Height, m.Model.Width, m.Model.Channels, m.Model.Classes})
	require.Equal(t, 100*time.Millisecond, time.Duration(m.Round.Tick))
	require.Equal(t, 30*time.Second, time.Duration(m.Round.Deadline))
	require.Equal(t, int64(20000), m.Round.MaxExamplesPerMember)
	require.Equal(t, 20, m.Training.Rounds)
	require.Equal(t, 2, m.Round.MinParticipants)

	ports, https := map[string]string{}, map[string]bool{}
	for i, lab := range []string{"a", "b", "c"} {
		c, err := nodeconfig.Load(filepath.Join(root, "lab-"+lab, "node.yaml"))
		require.NoError(t, err, lab)
		require.Equal(t, filepath.Join(root, "consortium.yaml"), c.Manifest)
		require.Equal(t, filepath.Join(root, "lab-"+lab, "identity.key"), c.IdentityKey)
		require.NoError(t, c.CheckManifest(m))
		require.Equal(t, 3, c.Data.Members)
		require.Equal(t, i, c.Data.Index)
		require.Len(t, c.Listen, 1)
		ports[c.Listen[0]] = lab
		https[c.HTTP] = true
		// The address book names the two other labs, at their listen addresses.
		self := ids[strings.ToUpper(lab)]
		require.Len(t, c.Peers(), 2)
		for _, p := range c.Peers() {
			require.True(t, isMember(m.MemberIDs(), p.ID))
			require.NotEqual(t, self, p.ID)
		}
	}
	require.Len(t, ports, 3)
	require.Len(t, https, 3)
	for _, lab := range []string{"a", "b", "c"} {
		c, _ := nodeconfig.Load(filepath.Join(root, "lab-"+lab, "node.yaml"))
		for _, p := range c.Peers() {
			other, ok := ports[p.Addr.String()]
			require.True(t, ok, "lab %s: %s is nobody's listen address", lab, p.Addr)
			require.Equal(t, ids[strings.ToUpper(other)], p.ID, "lab %s: %s is lab %s's address", lab, p.Addr, other)
		}
	}
}
