package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/globalbrain/globalbrain/api"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/nodeconfig"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/round"
)

const memberUsage = `Usage:
  globalbrain member add PEERID [--config node.yaml] [--out REQUEST]
      write an unsigned request to add PEERID (default REQUEST: add-<peer>.json)
  globalbrain member sign REQUEST [--config node.yaml]
      add this node's signature: the new member signs its own record, each
      current member signs its agreement
  globalbrain member submit REQUEST [--config node.yaml] [--http ADDR]
      check that a majority of members signed, then hand the request to the
      node, which proposes it (run it on the leader's machine)
`

// member is `globalbrain member add|sign|submit`.
func member(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, memberUsage)
		return errors.New("member: add, sign or submit?")
	}
	switch args[0] {
	case "add":
		return memberAdd(args[1:], stdout, stderr)
	case "sign":
		return memberSign(args[1:], stdout, stderr)
	case "submit":
		return memberSubmit(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, memberUsage)
		return nil
	}
	fmt.Fprint(stderr, memberUsage)
	return fmt.Errorf("member: unknown command %q", args[0])
}

// memberFlags parses a member subcommand's flags and its one positional
// argument.
func memberFlags(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (pos string, cfgPath string, err error) {
	fs := flag.NewFlagSet("member "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", configName, "this node's config")
	if extra != nil {
		extra(fs)
	}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), memberUsage+"\n")
		fs.PrintDefaults()
	}
	args2, err := parseFlags(fs, args)
	if err != nil {
		return "", "", err
	}
	what := map[string]string{"add": "PEERID", "sign": "REQUEST", "submit": "REQUEST"}[name]
	switch len(args2) {
	case 0:
		return "", "", fmt.Errorf("member %s: %s is required", name, what)
	case 1:
	default:
		return "", "", fmt.Errorf("member %s: unexpected argument %q", name, args2[1])
	}
	return args2[0], *cfg, nil
}

// loadNode reads a node config and its manifest.
func loadNode(cfgPath string) (*nodeconfig.Config, *manifest.Manifest, error) {
	c, err := nodeconfig.Load(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	m, err := manifest.Load(c.Manifest)
	if err != nil {
		return nil, nil, err
	}
	return c, m, nil
}

func isMember(ids []identity.PeerID, id identity.PeerID) bool {
	return slices.ContainsFunc(ids, func(x identity.PeerID) bool { return identity.Compare(x, id) == 0 })
}

func memberAdd(args []string, stdout, stderr io.Writer) error {
	var out string
	arg, cfgPath, err := memberFlags("add", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&out, "out", "", "where to write the request (default add-<peer>.json)")
	})
	if err != nil {
		return err
	}
	id, err := identity.ParsePeerID(arg)
	if err != nil {
		return fmt.Errorf("member add: %w", err)
	}
	_, m, err := loadNode(cfgPath)
	if err != nil {
		return fmt.Errorf("member add: %w", err)
	}
	if isMember(m.MemberIDs(), id) {
		return fmt.Errorf("member add: %s is already a genesis member of %s", id, m.Name)
	}
	if out == "" {
		out = "add-" + id.Short() + ".json"
	}
	if err := writeRequest(out, round.NewAddMember(id), false); err != nil {
		return fmt.Errorf("member add: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s: a request to add %s to %s\n", out, id, m.Name)
	fmt.Fprintf(stdout, "next: the new member and a majority (%d of %d) of the members each run\n  globalbrain member sign %s --config node.yaml\n",
		len(m.Members)/2+1, len(m.Members), out)
	return nil
}

func memberSign(args []string, stdout, stderr io.Writer) error {
	path, cfgPath, err := memberFlags("sign", args, stderr, nil)
	if err != nil {
		return err
	}
	c, m, err := loadNode(cfgPath)
	if err != nil {
		return fmt.Errorf("member sign: %w", err)
	}
	req, err := readRequest(path)
	if err != nil {
		return fmt.Errorf("member sign: %w", err)
	}
	if _, err := os.Stat(c.IdentityKey); err != nil {
		return fmt.Errorf("member sign: identity key: %w (run globalbrain init first)", err)
	}
	id, _, err := p2p.LoadOrCreateKey(c.IdentityKey)
	if err != nil {
		return fmt.Errorf("member sign: %w", err)
	}
	self := identity.Compare(id.ID, req.Member) == 0
	members := m.MemberIDs()
	if !self && !isMember(members, id.ID) {
		fmt.Fprintf(stderr, "note: this node (%s) is not a genesis member: its signature counts only if it was added since\n", id.ID)
	}
	cid := m.ConsortiumID()
	req.Sign(cid, id)
	if err := writeRequest(path, req, true); err != nil {
		return fmt.Errorf("member sign: %w", err)
	}
	what := "its agreement"
	if self {
		what = "its own record (the new member)"
	}
	s := api.CountSignatures(req, cid, members)
	fmt.Fprintf(stdout, "signed %s as %s: %s\n", path, id.ID, what)
	fmt.Fprintf(stdout, "%s\n", signatureSummary(s))
	return nil
}

// signatureSummary says where a request stands.
func signatureSummary(s api.Signatures) string {
	record := "not yet signed"
	if s.Record {
		record = "signed"
	}
	line := fmt.Sprintf("the new member's record: %s; %d of %d members signed (a majority is %d)", record, len(s.Signed), s.Members, s.Needed())
	if s.Err() == nil {
		line += "; ready: globalbrain member submit"
	}
	return line
}

func memberSubmit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var httpAddr string
	path, cfgPath, err := memberFlags("submit", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&httpAddr, "http", "", "host:port of the node's API (default: the http of --config)")
	})
	if err != nil {
		return err
	}
	_, m, err := loadNode(cfgPath)
	if err != nil {
		return fmt.Errorf("member submit: %w", err)
	}
	req, err := readRequest(path)
	if err != nil {
		return fmt.Errorf("member submit: %w", err)
	}
	if err := api.CountSignatures(req, m.ConsortiumID(), m.MemberIDs()).Err(); err != nil {
		return fmt.Errorf("member submit: %s: %w", path, err)
	}
	if httpAddr == "" {
		if httpAddr, err = apiAddr("", cfgPath); err != nil {
			return fmt.Errorf("member submit: %w", err)
		}
	}
	resp, code, err := postSubmit(ctx, httpAddr, req.Encode())
	if err != nil {
		return fmt.Errorf("member submit: %w", err)
	}
	switch code {
	case http.StatusOK:
		fmt.Fprintf(stdout, "proposed adding %s; every member validates it when it commits (see globalbrain status)\n", req.Member)
		return nil
	case http.StatusConflict:
		if strings.HasPrefix(resp.Error, "not the leader") {
			return fmt.Errorf("member submit: %s; submit it on the leader's node", resp.Error)
		}
		return fmt.Errorf("member submit: %s", resp.Error)
	}
	return fmt.Errorf("member submit: the node refused the request (%d): %s", code, resp.Error)
}

func postSubmit(ctx context.Context, addr string, body []byte) (api.SubmitResponse, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	url := "http://" + addr + "/member/submit"
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return api.SubmitResponse{}, 0, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return api.SubmitResponse{}, 0, fmt.Errorf("cannot reach the node's API at %s (is `globalbrain run` running?): %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return api.SubmitResponse{}, 0, err
	}
	var out api.SubmitResponse
	if err := json.Unmarshal(b, &out); err != nil {
		out.Error = strings.TrimSpace(string(b))
	}
	return out, resp.StatusCode, nil
}

func readRequest(path string) (*round.AddMember, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	req, err := round.DecodeAddMember(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := req.Member.PublicKey(); err != nil {
		return nil, fmt.Errorf("%s: member: %w", path, err)
	}
	return req, nil
}

// writeRequest writes a request through a temporary file; unless replace,
// an existing file is left alone.
func writeRequest(path string, req *round.AddMember, replace bool) error {
	if !replace {
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("%s exists (pick another --out, or remove it)", path)
		}
	}
	var b bytes.Buffer
	if err := json.Indent(&b, req.Encode(), "", "  "); err != nil {
		return err
	}
	b.WriteByte('\n')
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
