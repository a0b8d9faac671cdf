package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/sim"
)

// parseCrash parses I@R[:T].
func parseCrash(v string) (sim.Crash, error) {
	cr := sim.Crash{DownTicks: 50}
	who, rest, ok := strings.Cut(v, "@")
	if !ok {
		return cr, fmt.Errorf("want I@R[:T], got %q", v)
	}
	r, t, hasT := strings.Cut(rest, ":")
	var err error
	if cr.Member, err = strconv.Atoi(who); err != nil || cr.Member < 0 {
		return cr, fmt.Errorf("member %q: want a member index", who)
	}
	if cr.Round, err = strconv.ParseUint(r, 10, 64); err != nil {
		return cr, fmt.Errorf("round %q: want a round number", r)
	}
	if hasT {
		if cr.DownTicks, err = strconv.Atoi(t); err != nil || cr.DownTicks < 0 {
			return cr, fmt.Errorf("ticks %q: want a tick count", t)
		}
	}
	return cr, nil
}

// parseDropPhase parses PHASE:I@R[:T]: member I is killed in the secure
// aggregation phase PHASE (keys, shares, input, reveal) the R-th time it
// reaches it (round R when it took part in every round), right after it
// persisted its work and before it published it, and restarts T ticks
// later (default 100: it misses the phase and drops out of the round).
func parseDropPhase(v string) (sim.CrashPoint, error) {
	phase, rest, ok := strings.Cut(v, ":")
	switch phase {
	case "keys", "shares", "input", "reveal":
	default:
		return sim.CrashPoint{}, fmt.Errorf("phase %q: want keys, shares, input or reveal (PHASE:I@R[:T])", phase)
	}
	if !ok {
		return sim.CrashPoint{}, fmt.Errorf("want PHASE:I@R[:T], got %q", v)
	}
	who, r, ok := strings.Cut(rest, "@")
	if !ok {
		return sim.CrashPoint{}, fmt.Errorf("want PHASE:I@R[:T], got %q", v)
	}
	cr, err := parseCrash(who + "@" + r)
	if err != nil {
		return sim.CrashPoint{}, err
	}
	if cr.Round < 1 {
		return sim.CrashPoint{}, fmt.Errorf("round %d: want >= 1", cr.Round)
	}
	down := 100
	if _, _, hasT := strings.Cut(r, ":"); hasT {
		down = cr.DownTicks
	}
	return sim.CrashPoint{Member: cr.Member, Point: node.CrashSecAgg + phase, Hit: int(cr.Round), DownTicks: down}, nil
}

// parsePartition parses I,J,...@R:T.
func parsePartition(v string) (sim.Partition, error) {
	var p sim.Partition
	who, rest, ok := strings.Cut(v, "@")
	r, t, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return p, fmt.Errorf("want I,J,...@R:T, got %q", v)
	}
	for _, f := range strings.Split(who, ",") {
		m, err := strconv.Atoi(f)
		if err != nil || m < 0 {
			return p, fmt.Errorf("member %q: want a member index", f)
		}
		p.Members = append(p.Members, m)
	}
	var err error
	if p.Round, err = strconv.ParseUint(r, 10, 64); err != nil {
		return p, fmt.Errorf("round %q: want a round number", r)
	}
	if p.Ticks, err = strconv.Atoi(t); err != nil || p.Ticks < 1 {
		return p, fmt.Errorf("ticks %q: want a positive tick count", t)
	}
	return p, nil
}
