// Command globalbrain is the globalbrain node and its tools: simulate a
// consortium in one process and measure the engine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `globalbrain: a node for decentralized federated learning

Usage:
  globalbrain init --dir DIR     create an identity key and a node config; print the peer ID
  globalbrain run --config FILE  run a member's node until SIGINT or SIGTERM
  globalbrain status             summarise a running node (its local /status)
  globalbrain audit              verify a stopped node's log offline; who contributed what
  globalbrain member add|sign|submit
                                 add a member: write, sign and submit the request
  globalbrain export --config FILE [--round N] [--format safetensors|npz]
                                 write a round's global model for PyTorch or NumPy
  globalbrain simulate [flags]   simulate a consortium in one process (see -h)
  globalbrain bench [flags]      measure aggregation and training speed
  globalbrain version            print the version

Run "globalbrain COMMAND -h" for a command's flags.
`

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	default:
		fmt.Fprintln(os.Stderr, "globalbrain:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "init":
		return initNode(ctx, args[1:], stdout, stderr)
	case "run":
		return runNode(ctx, args[1:], stdout, stderr)
	case "status":
		return status(ctx, args[1:], stdout, stderr)
	case "audit":
		return auditCommand(ctx, args[1:], stdout, stderr)
	case "member":
		return memberCommand(ctx, args[1:], stdout, stderr)
	case "export":
		return export(ctx, args[1:], stdout, stderr)
	case "simulate":
		return simulate(ctx, args[1:], stdout, stderr)
	case "bench":
		return bench(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "globalbrain", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
