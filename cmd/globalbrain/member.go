package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/nodeconfig"
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

// memberCommand is `globalbrain member add|sign|submit`.
func memberCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
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
