package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/globalbrain/globalbrain/member"
)

// runNode is `globalbrain run`: the member's node until SIGINT or SIGTERM.
func runNode(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", configName, "the node's config (see globalbrain init)")
	join := fs.Bool("join", false, "run although this node is not a genesis member of the manifest (a member added since)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: globalbrain run --config node.yaml [--join]\n\n"+
			"Runs the member's node: JSON logs on stderr, the local API on the config's http address.\n"+
			"SIGINT or SIGTERM stops it cleanly; it resumes from its store when started again.\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("run: unexpected argument %q", pos[0])
	}
	m, err := member.FromConfig(ctx, *cfgPath, member.Flags{Join: *join, Logs: stderr})
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return m.Run(ctx)
}
