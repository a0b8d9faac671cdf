package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"

	"github.com/globalbrain/globalbrain/manifest"
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

// simOptions are the simulate flags that are not part of sim.Config.
type simOptions struct {
	preset, out string
	quiet       bool
	direct      bool
	transport   string
	faults      sim.Faults
	privacy     string // none, secagg, dp-update, dp-distributed, dp-sgd
	dp          manifest.DP
}

// privacyModes maps the simulate --privacy names to manifest modes.
var privacyModes = map[string]string{
	"none":           manifest.PrivacyNone,
	"dp-update":      manifest.PrivacyUpdate,
	"dp-sgd":         manifest.PrivacyDPSGD,
	"secagg":         manifest.PrivacySecAgg,
	"dp-distributed": manifest.PrivacyDistributed,
}

// privacyConfig turns --privacy and the --dp-* flags into the manifest's
// privacy section.
func (o *simOptions) privacyConfig() (manifest.Privacy, error) {
	mode, ok := privacyModes[o.privacy]
	if !ok {
		return manifest.Privacy{}, fmt.Errorf("simulate: -privacy %q, want none, dp-update, dp-sgd, secagg or dp-distributed", o.privacy)
	}
	d := o.dp
	switch mode {
	case manifest.PrivacyNone:
		if d != (manifest.DP{}) {
			return manifest.Privacy{}, fmt.Errorf("simulate: the -dp-* flags need -privacy dp-update, dp-distributed or dp-sgd")
		}
		return manifest.Privacy{Mode: mode}, nil
	case manifest.PrivacySecAgg:
		if d != (manifest.DP{}) {
			return manifest.Privacy{}, fmt.Errorf("simulate: -privacy secagg adds no noise: the -dp-* flags need -privacy dp-update, dp-distributed or dp-sgd")
		}
		return manifest.Privacy{Mode: mode}, nil
	case manifest.PrivacyUpdate, manifest.PrivacyDistributed:
		if d.ExampleClip != 0 {
			return manifest.Privacy{}, fmt.Errorf("simulate: -dp-example-clip is dp-sgd's; -privacy %s clips whole updates with -dp-clip", o.privacy)
		}
		if d.Z == 0 || d.Clip == 0 || d.Epsilon == 0 {
			return manifest.Privacy{}, fmt.Errorf("simulate: -privacy %s needs -dp-z, -dp-clip and -dp-epsilon", o.privacy)
		}
	case manifest.PrivacyDPSGD:
		if d.Clip != 0 {
			return manifest.Privacy{}, fmt.Errorf("simulate: -dp-clip is dp-update's; -privacy dp-sgd clips each example's gradient with -dp-example-clip")
		}
		if d.Z == 0 || d.ExampleClip == 0 || d.Epsilon == 0 {
			return manifest.Privacy{}, fmt.Errorf("simulate: -privacy dp-sgd needs -dp-z, -dp-example-clip and -dp-epsilon")
		}
	}
	return manifest.Privacy{Mode: mode, DP: d}, nil
}

func simulateFlags(c *sim.Config, o *simOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	preset, out, quiet := &o.preset, &o.out, &o.quiet
	fs.BoolVar(&o.direct, "direct", o.direct, "run the direct reference loop instead of full nodes (Raft, stores, network)")
	fs.StringVar(&o.transport, "transport", "memory", "how the nodes talk: memory (in-process, virtual time) or libp2p (real hosts on 127.0.0.1, real time)")
	fs.Float64Var(&o.faults.Drop, "drop", o.faults.Drop, "fraction of gossip and Raft messages dropped (nodes only)")
	fs.Func("crash", "crash member I once round R is decided and restart it T ticks later: I@R[:T] (repeatable; nodes only)", func(v string) error {
		cr, err := parseCrash(v)
		if err == nil {
			o.faults.Crashes = append(o.faults.Crashes, cr)
		}
		return err
	})
	fs.Func("drop-phase", "kill member I in secure aggregation phase PHASE (keys, shares, input, reveal) of round R, after it persisted and before it published, restarting it T ticks later (default 100): PHASE:I@R[:T] (repeatable; --privacy secagg)", func(v string) error {
		cp, err := parseDropPhase(v)
		if err == nil {
			o.faults.CrashPoints = append(o.faults.CrashPoints, cp)
		}
		return err
	})
	fs.Func("cut", "cut members I,J,... off once round R is decided, for T ticks: I,J,...@R:T (repeatable; nodes only)", func(v string) error {
		p, err := parsePartition(v)
		if err == nil {
			o.faults.Partitions = append(o.faults.Partitions, p)
		}
		return err
	})
	fs.StringVar(&o.privacy, "privacy", "none", "privacy mode: none, dp-update (each member clips and noises its update), dp-sgd (DP-SGD local training), secagg (secure aggregation: no member sees another's update), dp-distributed (secure aggregation of updates each carrying a share of the noise)")
	fs.Float64Var(&o.dp.Z, "dp-z", o.dp.Z, "noise multiplier z (dp-update, dp-distributed, dp-sgd)")
	fs.Float64Var(&o.dp.Clip, "dp-clip", o.dp.Clip, "L2 bound S of each update (dp-update, dp-distributed)")
	fs.Float64Var(&o.dp.ExampleClip, "dp-example-clip", o.dp.ExampleClip, "L2 bound of each example's gradient (dp-sgd)")
	fs.Float64Var(&o.dp.Delta, "dp-delta", o.dp.Delta, "delta of the reported (epsilon, delta) (0: 1e-5)")
	fs.Float64Var(&o.dp.Epsilon, "dp-epsilon", o.dp.Epsilon, "each member's privacy budget: past it a member declines rounds")
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
func parseSimulate(args []string, stderr io.Writer) (sim.Config, simOptions, error) {
	c := sim.DefaultConfig()
	c.Workers = runtime.GOMAXPROCS(0)
	o := simOptions{out: "out/simulate"}
	var probe simOptions
	pfs := simulateFlags(&sim.Config{}, &probe)
	pfs.SetOutput(io.Discard)
	if err := pfs.Parse(args); err == nil && probe.preset != "" {
		p, ok := presets[probe.preset]
		if !ok {
			return c, o, fmt.Errorf("simulate: preset %q unknown (want one of %s)", probe.preset, presetNames())
		}
		c = p()
		c.Workers = runtime.GOMAXPROCS(0)
		o.out = "out/" + probe.preset
	}
	fs := simulateFlags(&c, &o)
	fs.SetOutput(stderr)
	err := fs.Parse(args)
	if err != nil {
		return c, o, err
	}
	if fs.NArg() > 0 {
		return c, o, fmt.Errorf("simulate: unexpected argument %q", fs.Arg(0))
	}
	if c.Privacy, err = o.privacyConfig(); err != nil {
		return c, o, err
	}
	if o.direct && c.PrivacyOn() {
		return c, o, fmt.Errorf("simulate: -privacy needs the nodes (each keeps its own budget); drop -direct")
	}
	if o.direct && (o.faults.Drop > 0 || len(o.faults.Crashes) > 0 || len(o.faults.Partitions) > 0) {
		return c, o, fmt.Errorf("simulate: -drop, -crash and -cut need the nodes; drop -direct")
	}
	if o.transport != "memory" && o.transport != "libp2p" {
		return c, o, fmt.Errorf("simulate: -transport %q, want memory or libp2p", o.transport)
	}
	if o.transport == "libp2p" && (o.direct || o.faults.Drop > 0 || len(o.faults.Partitions) > 0) {
		return c, o, fmt.Errorf("simulate: -transport libp2p runs full nodes and takes only -crash faults")
	}
	if !(o.faults.Drop >= 0 && o.faults.Drop < 1) {
		return c, o, fmt.Errorf("simulate: -drop %v, want in [0, 1)", o.faults.Drop)
	}
	for _, cr := range o.faults.Crashes {
		if cr.Member >= c.Members {
			return c, o, fmt.Errorf("simulate: -crash: member %d of %d", cr.Member, c.Members)
		}
	}
	for _, p := range o.faults.Partitions {
		for _, m := range p.Members {
			if m >= c.Members {
				return c, o, fmt.Errorf("simulate: -cut: member %d of %d", m, c.Members)
			}
		}
	}
	return c, o, c.Validate()
}
