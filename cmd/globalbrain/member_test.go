package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/api"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/round"
)

// consortiumDir makes n labs (lab-0 ...) and a newcomer under one
// directory: identity keys, node configs and a manifest listing the labs.
// It returns the directory, the labs' identities and the newcomer's.
func consortiumDir(t *testing.T, n int) (string, []identity.Identity, identity.Identity) {
	t.Helper()
	root := t.TempDir()
	var ids []identity.Identity
	var newcomer identity.Identity
	for i := 0; i <= n; i++ {
		name := "lab-" + string(rune('0'+i))
		if i == n {
			name = "newcomer"
		}
		dir := filepath.Join(root, name)
		id, _, err := p2p.LoadOrCreateKey(filepath.Join(dir, "identity.key"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "node.yaml"),
			[]byte("manifest: ../consortium.yaml\nlisten: [/ip4/127.0.0.1/tcp/0]\n"), 0o644))
		if i == n {
			newcomer = id
		} else {
			ids = append(ids, id)
		}
	}
	var pids []identity.PeerID
	for _, id := range ids {
		pids = append(pids, id.ID)
	}
	b, err := manifest.Example(pids).Marshal()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, "consortium.yaml"), b, 0o644))
	return root, ids, newcomer
}

func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String() + errOut.String(), err
}

func labConfig(root string, i int) string {
	return filepath.Join(root, "lab-"+string(rune('0'+i)), "node.yaml")
}

func TestMemberAddSignSubmit(t *testing.T) {
	root, ids, newcomer := consortiumDir(t, 5)
	req := filepath.Join(root, "req.json")

	// The API the request is submitted to, over a node that leads.
	var proposed []*round.AddMember
	man, err := manifest.Load(filepath.Join(root, "consortium.yaml"))
	require.NoError(t, err)
	srv := httptest.NewServer(api.New(api.Source{
		Status:  func() node.Status { return node.Status{Peer: ids[0].ID.String(), Leader: true} },
		Members: man.MemberIDs,
		ProposeAddMember: func(_ context.Context, r *round.AddMember) error {
			proposed = append(proposed, r)
			return nil
		},
		Consortium: man.ConsortiumID(),
	}, prometheus.NewRegistry(), nil))
	defer srv.Close()
	httpAddr := strings.TrimPrefix(srv.URL, "http://")

	out, err := cli(t, "member", "add", newcomer.ID.String(), "--config", labConfig(root, 0), "--out", req)
	require.NoError(t, err, out)
	require.Contains(t, out, "a majority (3 of 5)")
	_, err = cli(t, "member", "add", newcomer.ID.String(), "--config", labConfig(root, 0), "--out", req)
	require.ErrorContains(t, err, "exists")
	_, err = cli(t, "member", "add", ids[1].ID.String(), "--config", labConfig(root, 0), "--out", filepath.Join(root, "x.json"))
	require.ErrorContains(t, err, "already a genesis member")

	// The new member's record and two members: refused locally.
	out, err = cli(t, "member", "sign", req, "--config", filepath.Join(root, "newcomer", "node.yaml"))
	require.NoError(t, err, out)
	require.Contains(t, out, "its own record")
	for _, i := range []int{3, 1} {
		out, err = cli(t, "member", "sign", req, "--config", labConfig(root, i))
		require.NoError(t, err, out)
	}
	require.Contains(t, out, "2 of 5 members signed (a majority is 3)")
	_, err = cli(t, "member", "submit", req, "--config", labConfig(root, 0), "--http", httpAddr)
	require.ErrorContains(t, err, "2 of 5 members signed; a majority (3) is needed")
	require.Empty(t, proposed)

	// Signing again counts once.
	_, err = cli(t, "member", "sign", req, "--config", labConfig(root, 1))
	require.NoError(t, err)
	_, err = cli(t, "member", "submit", req, "--config", labConfig(root, 0), "--http", httpAddr)
	require.ErrorContains(t, err, "2 of 5 members signed")

	// A third member: the local check passes and the node proposes it.
	out, err = cli(t, "member", "sign", req, "--config", labConfig(root, 4))
	require.NoError(t, err, out)
	require.Contains(t, out, "3 of 5 members signed (a majority is 3); ready")
	out, err = cli(t, "member", "submit", req, "--config", labConfig(root, 0), "--http", httpAddr)
	require.NoError(t, err, out)
	require.Contains(t, out, "proposed adding "+newcomer.ID.String())
	require.Len(t, proposed, 1)
	require.Equal(t, newcomer.ID, proposed[0].Member)
	s := api.CountSignatures(proposed[0], man.ConsortiumID(), man.MemberIDs())
	require.NoError(t, s.Err())
	require.Len(t, s.Signed, 3)
}

func TestMemberSubmitNotLeader(t *testing.T) {
	root, ids, newcomer := consortiumDir(t, 3)
	man, err := manifest.Load(filepath.Join(root, "consortium.yaml"))
	require.NoError(t, err)
	srv := httptest.NewServer(api.New(api.Source{
		Status:           func() node.Status { return node.Status{Peer: ids[0].ID.String()} },
		Members:          man.MemberIDs,
		Leader:           func() identity.PeerID { return ids[2].ID },
		ProposeAddMember: func(context.Context, *round.AddMember) error { return round.ErrNotLeader },
		Consortium:       man.ConsortiumID(),
	}, prometheus.NewRegistry(), nil))
	defer srv.Close()

	req := filepath.Join(root, "req.json")
	_, err = cli(t, "member", "add", newcomer.ID.String(), "--config", labConfig(root, 0), "--out", req)
	require.NoError(t, err)
	_, err = cli(t, "member", "sign", req, "--config", filepath.Join(root, "newcomer", "node.yaml"))
	require.NoError(t, err)
	for i := range 2 {
		_, err = cli(t, "member", "sign", req, "--config", labConfig(root, i))
		require.NoError(t, err)
	}
	_, err = cli(t, "member", "submit", req, "--config", labConfig(root, 0), "--http", strings.TrimPrefix(srv.URL, "http://"))
	require.ErrorContains(t, err, "not the leader (leader is "+ids[2].ID.String()+"); submit it on the leader's node")

	// Without the new member's own record the request is refused locally.
	req2 := filepath.Join(root, "req2.json")
	_, err = cli(t, "member", "add", newcomer.ID.String(), "--config", labConfig(root, 0), "--out", req2)
	require.NoError(t, err)
	for i := range 3 {
		_, err = cli(t, "member", "sign", req2, "--config", labConfig(root, i))
		require.NoError(t, err)
	}
	_, err = cli(t, "member", "submit", req2, "--config", labConfig(root, 0), "--http", strings.TrimPrefix(srv.URL, "http://"))
	require.ErrorContains(t, err, "has not signed its own record")
}

func TestMemberErrors(t *testing.T) {
	root, _, _ := consortiumDir(t, 3)
	cfg := labConfig(root, 0)
	garbage := filepath.Join(root, "garbage.json")
	require.NoError(t, os.WriteFile(garbage, []byte(`{"member": 1}`), 0o644))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"member"}, "add, sign or submit?"},
		{[]string{"member", "remove"}, `unknown command "remove"`},
		{[]string{"member", "add", "--config", cfg}, "PEERID is required"},
		{[]string{"member", "add", "QmNotAPeer", "--config", cfg}, "identity: peer ID"},
		{[]string{"member", "add", "a", "b", "--config", cfg}, `unexpected argument "b"`},
		{[]string{"member", "sign", filepath.Join(root, "missing.json"), "--config", cfg}, "no such file"},
		{[]string{"member", "sign", garbage, "--config", cfg}, "add-member request"},
		{[]string{"member", "submit", garbage, "--config", cfg}, "add-member request"},
		{[]string{"member", "sign", garbage, "--config", filepath.Join(root, "nope.yaml")}, "no such file"},
	} {
		_, err := cli(t, tc.args...)
		require.ErrorContains(t, err, tc.want, tc.args)
	}
}
