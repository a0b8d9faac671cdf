package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/globalbrain/globalbrain/sim"
)

// presets reproduce the FedAvg paper's MNIST 2NN experiments (McMahan et
// al. 2017, Table 2: C=0.1, E=1, B=10). The learning rate is fixed here.
var presets = map[string]func() sim.Config{
	"mcmahan-2nn-iid": func() sim.Config {
		c := mcmahan()
		c.Partition = "iid"
		c.Rounds = 300
		return c
	},
	"mcmahan-2nn-noniid": func() sim.Config {
		c := mcmahan()
		c.Partition = "shards"
		c.ShardsPerMember = 2
		c.Rounds = 1000
		return c
	},
}

// presetLR is the learning rate both presets use.
const presetLR = 0.1

func mcmahan() sim.Config {
	c := sim.DefaultConfig()
	c.Members = 100
	c.Model = "2nn"
	c.Fraction = 0.1
	c.Strategy.Train.Epochs = 1
	c.Strategy.Train.BatchSize = 10
	c.Strategy.Train.LR = presetLR
	c.Target = 0.97
	c.StopAtTarget = true
	return c
}

func presetNames() string {
	var names []string
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func simulateFlags(c *sim.Config, preset, out *string, quiet *bool) *flag.FlagSet {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.StringVar(preset, "preset", "", "start from a preset: "+presetNames())
	fs.StringVar(&c.Dataset, "dataset", c.Dataset, "data set: mnist or fashion-mnist")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "directory holding the data set's IDX files (default: MNIST from the Go module cache, Fashion-MNIST from /usr/share/datasets/fashion-mnist)")
	fs.StringVar(&c.Partition, "partition", c.Partition, "how the training set is split: iid, shards or dirichlet")
	fs.Float64Var(&c.Alpha, "alpha", c.Alpha, "Dirichlet concentration for -partition dirichlet")
	fs.IntVar(&c.ShardsPerMember, "shards", c.ShardsPerMember, "shards per member for -partition shards")
	fs.IntVar(&c.Members, "members", c.Members, "number of members")
	fs.StringVar(&c.Model, "model", c.Model, "model: logreg, 2nn or cnn")
	fs.IntVar(&c.Rounds, "rounds", c.Rounds, "rounds to run")
	fs.Float64Var(&c.Fraction, "fraction", c.Fraction, "fraction of members sampled per round (C)")
	fs.IntVar(&c.MinParticipants, "min-participants", c.MinParticipants, "fewest members sampled per round")
	fs.Int64Var(&c.MaxExamples, "max-examples", c.MaxExamples, "cap on a member's example count (0: none)")
	fs.IntVar(&c.Strategy.Train.Epochs, "epochs", c.Strategy.Train.Epochs, "local epochs per round (E)")
	fs.IntVar(&c.Strategy.Train.BatchSize, "batch", c.Strategy.Train.BatchSize, "local minibatch size (B)")
	fs.Float64Var(&c.Strategy.Train.LR, "lr", c.Strategy.Train.LR, "local learning rate")
	fs.Float64Var(&c.Strategy.Train.ProxMu, "mu", c.Strategy.Train.ProxMu, "FedProx proximal term (0: off)")
	fs.StringVar(&c.Strategy.Strategy, "strategy", c.Strategy.Strategy, "fedavg, fedavgm, fedadam, fedyogi, fedadagrad, median, trimmedmean, krum or multikrum")
	fs.Float64Var(&c.Strategy.ServerLR, "server-lr", c.Strategy.ServerLR, "server learning rate (fedavgm and the adaptive strategies)")
	fs.Float64Var(&c.Strategy.Momentum, "momentum", c.Strategy.Momentum, "server momentum (fedavgm)")
	fs.Float64Var(&c.Strategy.TrimFraction, "trim", c.Strategy.TrimFraction, "fraction trimmed at each end (trimmedmean)")
	fs.IntVar(&c.Strategy.Byzantine, "byzantine", c.Strategy.Byzantine, "Byzantine members tolerated (krum, multikrum)")
	fs.Float64Var(&c.Strategy.ClipNorm, "clip", c.Strategy.ClipNorm, "clip each update to this L2 norm (0: off)")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "seed for identities, partition, initial model and training")
	fs.Float64Var(&c.Target, "target", c.Target, "test accuracy whose first round is reported")
	fs.BoolVar(&c.StopAtTarget, "stop-at-target", c.StopAtTarget, "stop at the first round reaching -target")
	fs.IntVar(&c.Workers, "workers", c.Workers, "members trained at once")
	fs.StringVar(out, "out", *out, "directory for report.jsonl and accuracy.png")
	fs.BoolVar(quiet, "quiet", *quiet, "print no per-round table")
	return fs
}

// parseSimulate applies a preset first, then every flag given on the command line.
func parseSimulate(args []string, stderr io.Writer) (c sim.Config, out string, quiet bool, preset string, err error) {
	c = sim.DefaultConfig()
	c.Workers = runtime.GOMAXPROCS(0)
	out = "out/simulate"
	probe := simulateFlags(&sim.Config{}, &preset, new(string), new(bool))
	probe.SetOutput(io.Discard)
	if err := probe.Parse(args); err == nil && preset != "" {
		p, ok := presets[preset]
		if !ok {
			return c, "", false, "", fmt.Errorf("simulate: preset %q unknown (want one of %s)", preset, presetNames())
		}
		c = p()
		c.Workers = runtime.GOMAXPROCS(0)
		out = "out/" + preset
	}
	fs := simulateFlags(&c, &preset, &out, &quiet)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return c, "", false, "", err
	}
	if fs.NArg() > 0 {
		return c, "", false, "", fmt.Errorf("simulate: unexpected argument %q", fs.Arg(0))
	}
	return c, out, quiet, preset, c.Validate()
}

func simulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	start := time.Now()
	c, out, quiet, preset, err := parseSimulate(args, stderr)
	if err != nil {
		return err
	}
	data, err := sim.LoadData(c)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "simulating %d members on %s (%s), model %s, strategy %s, C=%g E=%d B=%d lr=%g, seed %d\n",
		c.Members, c.Dataset, c.Partition, c.Model, c.Strategy.Strategy, c.Fraction, c.Strategy.Train.Epochs,
		c.Strategy.Train.BatchSize, c.Strategy.Train.LR, c.Seed)
	if !quiet {
		fmt.Fprintf(stdout, "%6s %12s %11s %10s %9s %8s  %s\n", "round", "participants", "train_loss", "test_loss", "test_acc", "seconds", "digest")
	}
	progress := isTerminal(stderr)
	obs := sim.Observer{
		Round: func(rr sim.RoundResult) {
			if progress {
				fmt.Fprint(stderr, "\r\033[K")
			}
			if !quiet {
				fmt.Fprintf(stdout, "%6d %12s %11.4f %10.4f %9.4f %8.2f  %s\n", rr.Round,
					fmt.Sprintf("%d/%d", rr.Participants, rr.Sampled), rr.TrainLoss, rr.TestLoss, rr.TestAccuracy, rr.Seconds, rr.Digest[:12])
			}
		},
	}
	if progress {
		obs.Trained = func(round, done, total int) {
			fmt.Fprintf(stderr, "\r\033[Kround %d/%d: %d/%d members trained", round, c.Rounds, done, total)
		}
	}
	res, err := sim.Run(ctx, c, data, obs)
	if err != nil {
		return err
	}
	jsonl, chart, err := res.WriteReport(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "report %s\nchart %s\nmodel digest %s\n", jsonl, chart, res.Final.Digest())
	fmt.Fprintf(stdout, "final accuracy %.4f\n", res.Metrics.Accuracy)
	fmt.Fprintf(stdout, "elapsed %.1fs\n", time.Since(start).Seconds())
	if preset != "" {
		pct := fmt.Sprintf("%g%%", c.Target*100)
		if res.TargetRound > 0 {
			fmt.Fprintf(stdout, "%s reached at round %d\n", pct, res.TargetRound)
		} else {
			fmt.Fprintf(stdout, "%s not reached in %d rounds\n", pct, len(res.Rounds))
		}
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
