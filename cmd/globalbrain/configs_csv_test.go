package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/nodeconfig"
)

// TestExampleCSVConfigs reads the own-data examples of configs/ laid out as
// the README's "Joining with your own data (CSV)" lays them out: the
// tabular manifest as consortium.yaml, node-csv.yaml as lab-a/node.yaml.
func TestExampleCSVConfigs(t *testing.T) {
	src := filepath.Join("..", "..", "configs")
	ids := map[string]identity.PeerID{}
	for i, lab := range []string{"A", "B", "C"} {
		ids[lab] = identity.Derive(98, i).ID
	}
	fill := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(src, name))
		require.NoError(t, err)
		out := placeholder.ReplaceAllStringFunc(string(b), func(s string) string {
			return ids[placeholder.FindStringSubmatch(s)[1]].String()
		})
		require.NotRegexp(t, placeholder, out)
		return []byte(out)
	}
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "lab-a"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "consortium.yaml"), fill("consortium-csv.example.yaml"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "lab-a", "node.yaml"), fill("node-csv.yaml"), 0o644))

	m, err := manifest.Load(filepath.Join(root, "consortium.yaml"))
	require.NoError(t, err)
	require.Equal(t, [4]int{784, 1, 1, 10}, [4]int{m.Model.Height, m.Model.Width, m.Model.Channels, m.Model.Classes})
	c, err := nodeconfig.Load(filepath.Join(root, "lab-a", "node.yaml"))
	require.NoError(t, err)
	require.NoError(t, c.CheckManifest(m))
	require.Equal(t, "csv", c.Data.Dataset)
	require.Equal(t, filepath.Join(root, "lab-a", "mnist.csv"), c.Data.CSV.File)
	require.Equal(t, nodeconfig.Column{Name: "label"}, c.Data.CSV.Label)
	require.Equal(t, "scale", c.Data.CSV.Normalize.Method)
	require.Equal(t, 255.0, c.Data.CSV.Normalize.Divisor)
	require.Equal(t, 0.2, c.Data.ValidationFraction())
}
