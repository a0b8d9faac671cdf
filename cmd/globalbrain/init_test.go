package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/nodeconfig"
	"github.com/globalbrain/globalbrain/p2p"
)

var peerIDLine = regexp.MustCompile(`(?m)^peer ID (12D3KooW\S+)$`)

// initLab runs globalbrain init and returns the printed peer ID.
func initLab(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	require.NoError(t, run(context.Background(), append([]string{"init"}, args...), &out, &errOut), errOut.String())
	m := peerIDLine.FindStringSubmatch(out.String())
	require.NotNil(t, m, "no peer ID line in:\n%s", out.String())
	return m[1]
}

func TestInit(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "lab-a")
	printed := initLab(t, "--dir", dir, "--listen", "/ip4/127.0.0.1/tcp/4001", "--http", "127.0.0.1:9470")

	// The key is private and is the printed peer ID.
	fi, err := os.Stat(filepath.Join(dir, "identity.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	id, created, err := p2p.LoadOrCreateKey(filepath.Join(dir, "identity.key"))
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, id.ID.String(), printed)
	_, err = identity.ParsePeerID(printed)
	require.NoError(t, err)

	// The config is valid and says what was asked.
	c, err := nodeconfig.Load(filepath.Join(dir, "node.yaml"))
	require.NoError(t, err)
	require.Equal(t, []string{"/ip4/127.0.0.1/tcp/4001"}, c.Listen)
	require.Equal(t, "127.0.0.1:9470", c.HTTP)
	require.Equal(t, filepath.Join(dir, "identity.key"), c.IdentityKey)
	require.Equal(t, filepath.Join(dir, "consortium.yaml"), c.Manifest)
	require.Equal(t, filepath.Join(dir, "store"), c.Store)

	// A second init never overwrites the config (nor the key).
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"init", "--dir", dir}, &out, &errOut)
	require.ErrorContains(t, err, "node.yaml exists; init never overwrites a node config")
	id2, _, err := p2p.LoadOrCreateKey(filepath.Join(dir, "identity.key"))
	require.NoError(t, err)
	require.Equal(t, id.ID, id2.ID)
}

func TestInitManifestPath(t *testing.T) {
	root := t.TempDir()
	t.Chdir(root)
	require.NoError(t, os.WriteFile("consortium.yaml", []byte("name: x\n"), 0o644))
	// A manifest that exists from the current directory is written relative
	// to the config, so the config finds it.
	initLab(t, "--dir", "labs/lab-b", "--manifest", "consortium.yaml")
	c, err := nodeconfig.Load(filepath.Join("labs", "lab-b", "node.yaml"))
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "consortium.yaml"), c.Manifest)
	b, err := os.ReadFile(filepath.Join("labs", "lab-b", "node.yaml"))
	require.NoError(t, err)
	require.Contains(t, string(b), "manifest: ../../consortium.yaml\n")

	// One that does not exist yet is relative to the config.
	initLab(t, "--dir", "lab-c", "--manifest", "../shared/consortium.yaml")
	c, err = nodeconfig.Load(filepath.Join("lab-c", "node.yaml"))
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "shared", "consortium.yaml"), c.Manifest)
}

func TestInitErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--dir is required"},
		{[]string{"--dir", dir, "--listen", "127.0.0.1:4001"}, "listen[0]"},
		{[]string{"--dir", dir, "--http", "0.0.0.0:9464"}, "is not a loopback address"},
		{[]string{"--dir", dir, "extra"}, `unexpected argument "extra"`},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"init"}, tc.args...), &out, &errOut)
		require.ErrorContains(t, err, tc.want, tc.args)
		// Nothing is written for a config that would not load.
		_, statErr := os.Stat(filepath.Join(dir, "identity.key"))
		require.True(t, os.IsNotExist(statErr), "identity key written for %v", tc.args)
	}
	// Several listen addresses, comma-separated.
	initLab(t, "--dir", dir, "--listen", "/ip4/0.0.0.0/tcp/4001, /ip4/0.0.0.0/udp/4001/quic-v1")
	c, err := nodeconfig.Load(filepath.Join(dir, "node.yaml"))
	require.NoError(t, err)
	require.Len(t, c.Listen, 2)
	require.True(t, strings.HasSuffix(c.Listen[1], "quic-v1"))
}
