package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/sim"
)

// presets reproduce the FedAvg paper's MNIST 2NN experiments (McMahan et
// al. 2017, Table 2: C=0.1, E=1, B=10). The learning rate is fixed here.
func simulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	start := time.Now()
	c, o, err := parseSimulate(args, stderr)
	if err != nil {
		return err
	}
	out, quiet, preset := o.out, o.quiet, o.preset
	data, err := sim.LoadData(c)
	if err != nil {
		return err
	}
	mode := "full nodes (Raft, stores, in-memory network)"
	switch {
	case o.direct:
		mode = "the direct loop"
	case o.transport == "libp2p":
		mode = "full nodes over libp2p on 127.0.0.1"
	}
	fmt.Fprintf(stdout, "simulating %d members as %s on %s (%s), model %s, strategy %s, C=%g E=%d B=%d lr=%g, seed %d\n",
		c.Members, mode, c.Dataset, c.Partition, c.Model, c.Strategy.Strategy, c.Fraction, c.Strategy.Train.Epochs,
		c.Strategy.Train.BatchSize, c.Strategy.Train.LR, c.Seed)
	priv := c.PrivacyOn() && c.Privacy.Mode != manifest.PrivacySecAgg // a mode with a budget
	if c.Privacy.Mode == manifest.PrivacySecAgg {
		fmt.Fprintln(stdout, "privacy secagg: no member sees another's update, only each round's sum")
	}
	if priv {
		p := c.Privacy
		fmt.Fprintf(stdout, "privacy %s: z %g, ", o.privacy, p.DP.Z)
		if p.DP.ExampleClip > 0 {
			fmt.Fprintf(stdout, "example clip %g, ", p.DP.ExampleClip)
		} else {
			fmt.Fprintf(stdout, "clip %g, ", p.DP.Clip)
		}
		fmt.Fprintf(stdout, "each member's budget epsilon %g\n", p.DP.Epsilon)
	}
	if !quiet {
		fmt.Fprintf(stdout, "%6s %12s %11s %10s %9s %8s  %s", "round", "participants", "train_loss", "test_loss", "test_acc", "seconds", "digest")
		if priv {
			fmt.Fprintf(stdout, "  %8s", "epsilon")
		}
		fmt.Fprintln(stdout)
	}
	progress := isTerminal(stderr)
	obs := sim.Observer{
		Round: func(rr sim.RoundResult) {
			if progress {
				fmt.Fprint(stderr, "\r\033[K")
			}
			if !quiet {
				fmt.Fprintf(stdout, "%6d %12s %11.4f %10.4f %9.4f %8.2f  %s", rr.Round,
					fmt.Sprintf("%d/%d", rr.Participants, rr.Sampled), rr.TrainLoss, rr.TestLoss, rr.TestAccuracy, rr.Seconds, rr.Digest[:12])
				if priv {
					fmt.Fprintf(stdout, "  %8.4f", rr.Epsilon)
				}
				fmt.Fprintln(stdout)
			}
		},
		Exhausted: func(b sim.MemberBudget) {
			fmt.Fprintf(stdout, "member %d reached its privacy budget (epsilon %.4f spent, ceiling %g): it declines from round %d on\n",
				b.Member, b.Spent, c.Privacy.DP.Epsilon, b.Round)
		},
	}
	if progress {
		obs.Trained = func(round, done, total int) {
			fmt.Fprintf(stderr, "\r\033[Kround %d/%d: %d/%d members trained", round, c.Rounds, done, total)
		}
	}
	var res *sim.Result
	switch {
	case o.direct:
		res, err = sim.Run(ctx, c, data, obs)
	case o.transport == "libp2p":
		res, err = sim.RunLibp2p(ctx, c, data, o.faults, obs)
	default:
		res, err = sim.RunNodes(ctx, c, data, o.faults, obs)
	}
	if err != nil {
		return err
	}
	jsonl, chart, err := res.WriteReport(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "report %s\nchart %s\nmodel digest %s\n", jsonl, chart, res.Final.Digest())
	fmt.Fprintf(stdout, "final accuracy %.4f\n", res.Metrics.Accuracy)
	if p := res.Privacy; p != nil {
		fmt.Fprintf(stdout, "epsilon %.4f at delta %g (the most any member spent; budget %g)\n", p.Epsilon, p.Delta, p.Ceiling)
		if n := len(p.Exhausted); n > 0 {
			fmt.Fprintf(stdout, "%d of %d members reached their privacy budget and stopped participating\n", n, c.Members)
		}
	}
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
