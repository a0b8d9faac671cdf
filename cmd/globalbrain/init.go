package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/globalbrain/globalbrain/nodeconfig"
	"github.com/globalbrain/globalbrain/p2p"
)

// Defaults of globalbrain init.
const (
	defaultListen   = "/ip4/0.0.0.0/tcp/4001"
	defaultManifest = "consortium.yaml"
	configName      = "node.yaml"
)

// parseFlags parses args with fs, allowing positional arguments between and
// before flags ("member add PEERID --config node.yaml"), and returns the
// positional ones.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// initNode is `globalbrain init`: an identity key and a node config in a
// directory, and the peer ID to hand to the consortium.
func initNode(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory for the identity key and node.yaml (created if missing; required)")
	listen := fs.String("listen", defaultListen, "multiaddr to listen on (several separated by commas)")
	httpAddr := fs.String("http", nodeconfig.DefaultHTTP, "host:port of the local HTTP API (/status, /metrics)")
	man := fs.String("manifest", defaultManifest, "the consortium's genesis manifest (a path relative to --dir, or to the current directory if it exists there)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: globalbrain init --dir DIR [--listen ADDR] [--http ADDR] [--manifest PATH]\n\n"+
			"Creates DIR/identity.key (mode 0600) and DIR/node.yaml and prints the node's peer ID,\n"+
			"which the consortium lists in its manifest.\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("init: unexpected argument %q", pos[0])
	}
	if *dir == "" {
		fs.Usage()
		return errors.New("init: --dir is required")
	}
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	cfgPath := filepath.Join(*dir, configName)
	if _, err := os.Stat(cfgPath); err == nil {
		return fmt.Errorf("init: %s exists; init never overwrites a node config (remove it, or pick another --dir)", cfgPath)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("init: %w", err)
	}

	manifestPath := *man
	if !filepath.IsAbs(manifestPath) {
		// A path that exists from here is meant from here; otherwise it is
		// relative to the config, as the config file reads it.
		if _, err := os.Stat(manifestPath); err == nil {
			abs, _ := filepath.Abs(manifestPath)
			if rel, err := filepath.Rel(absDir, abs); err == nil {
				manifestPath = rel
			}
		}
	}
	var listens []string
	for _, l := range strings.Split(*listen, ",") {
		if l = strings.TrimSpace(l); l != "" {
			listens = append(listens, l)
		}
	}
	text := nodeYAML(manifestPath, listens, *httpAddr)
	if _, err := nodeconfig.Parse([]byte(text), cfgPath, absDir); err != nil {
		return fmt.Errorf("init: %w", err)
	}

	keyPath := filepath.Join(*dir, nodeconfig.DefaultIdentityKey)
	id, created, err := p2p.LoadOrCreateKey(keyPath)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	f, err := os.OpenFile(cfgPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("init: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if created {
		fmt.Fprintf(stdout, "identity key %s (new, mode 0600: keep it secret, back it up)\n", keyPath)
	} else {
		fmt.Fprintf(stdout, "identity key %s (existing)\n", keyPath)
	}
	fmt.Fprintf(stdout, "node config  %s\n", cfgPath)
	fmt.Fprintf(stdout, "peer ID %s\n", id.ID)
	fmt.Fprintf(stdout, "\nHand the peer ID to the consortium (it goes into the manifest's members), put the\n"+
		"manifest at %s, add the other members to address_book, then:\n  globalbrain run --config %s\n",
		filepath.Join(*dir, manifestPath), cfgPath)
	return nil
}

// nodeYAML is the node config init writes: the chosen values, and the
// defaults written out with a word on each.
func nodeYAML(manifestPath string, listen []string, httpAddr string) string {
	var b strings.Builder
	b.WriteString("# globalbrain node config (written by globalbrain init). Relative paths are\n")
	b.WriteString("# relative to this file's directory.\n\n")
	b.WriteString("# This node's Ed25519 identity key (mode 0600). Its peer ID is in the manifest.\n")
	fmt.Fprintf(&b, "identity_key: %s\n", nodeconfig.DefaultIdentityKey)
	b.WriteString("# The consortium's genesis manifest, shared by every member.\n")
	fmt.Fprintf(&b, "manifest: %s\n", quoteYAML(manifestPath))
	b.WriteString("# Where other members reach this node (open this TCP port in the firewall).\n")
	b.WriteString("listen:\n")
	for _, l := range listen {
		fmt.Fprintf(&b, "  - %s\n", quoteYAML(l))
	}
	b.WriteString("# The other members: /ip4/<ip>/tcp/<port>/p2p/<peer ID>, one per member.\n")
	b.WriteString("address_book: []\n")
	b.WriteString("# The crash-safe store (Raft log, models, updates).\n")
	fmt.Fprintf(&b, "store: %s\n", nodeconfig.DefaultStore)
	b.WriteString("# The local API: /status, /metrics, POST /member/submit. Loopback only unless\n")
	b.WriteString("# http_public: true (the API has no authentication).\n")
	fmt.Fprintf(&b, "http: %s\n", quoteYAML(httpAddr))
	b.WriteString("# Optional pre-shared key file (libp2p swarm.key): a private network, TCP only.\n")
	b.WriteString("# psk_file: swarm.key\n")
	b.WriteString("log_level: info\n")
	b.WriteString("# The built-in trainer trains on part `index` of `members` parts of the data\n")
	b.WriteString("# set's training set (a stand-in for the institution's own data) and evaluates\n")
	b.WriteString("# every global model on the test set.\n")
	b.WriteString("data:\n")
	fmt.Fprintf(&b, "  dataset: %s          # mnist or fashion-mnist\n", nodeconfig.DefaultDataset)
	fmt.Fprintf(&b, "  partition: %s          # iid, shards or dirichlet (alpha)\n", nodeconfig.DefaultPartition)
	b.WriteString("  members: 1\n")
	b.WriteString("  index: 0\n")
	fmt.Fprintf(&b, "  seed: %d\n", nodeconfig.DefaultSeed)
	b.WriteString("# Cap on the example count this node claims; 0: the manifest's cap.\n")
	b.WriteString("max_examples: 0\n")
	return b.String()
}

// quoteYAML quotes s if YAML would read it as anything but the same string.
func quoteYAML(s string) string {
	if s == "" || strings.ContainsAny(s, ":#[]{},&*!|>'\"%@`") || strings.TrimSpace(s) != s {
		return fmt.Sprintf("%q", s)
	}
	return s
}
