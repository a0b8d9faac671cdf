package main

import (
	"fmt"

	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/sim"
)

// secagg measures the secure-aggregation round (PRIVACY.md section 1: keys,
// shares, masked input, reveal, then the Commit every member verifies) next
// to the plain round, both measured here the same way: every member a full
// node over the in-memory network, all sampled, a fixed update returned at
// once, deadlines that never fire (a phase closes when its whole set has
// answered). Bytes are per member and round; the first round (start-up,
// election) is not timed.
func (r *benchRun) secagg() ([]benchRow, error) {
	arch := r.protoArch()
	runs := []struct {
		members, rounds int
		design          string
	}{{10, 5, "<= 2x plain"}, {50, 2, ""}} // 50: one timed round, ~2 min on 2 cores
	if r.quick {
		runs[0].members, runs[0].rounds, runs[1].members, runs[1].rounds = 5, 3, 10, 2
	}
	var rows []benchRow
	for _, sr := range runs {
		var cost [2]sim.RoundCost
		for i, mode := range []string{manifest.PrivacyNone, manifest.PrivacySecAgg} {
			if r.ctx.Err() != nil {
				return nil, r.ctx.Err()
			}
			c, err := sim.MeasureRound(r.ctx, arch, sr.members, sr.rounds, mode)
			if err != nil {
				return nil, fmt.Errorf("bench: %s round, %d members: %w", mode, sr.members, err)
			}
			cost[i] = c
		}
		plain, sa := cost[0], cost[1]
		timed := fmt.Sprintf("%d rounds timed", sr.rounds-1)
		if sr.rounds == 2 {
			timed = "1 round timed"
		}
		name := fmt.Sprintf("secagg %d participants (%s, fixed update, %s)", sr.members, arch, timed)
		rows = append(rows, benchRow{
			name: name, unit: "s/round", value: sa.Seconds,
			ceiling: plain.Seconds, ceilingName: "plain s/round", design: sr.design,
		}, benchRow{
			name: name, unit: "MB fetched/member/round", value: sa.FetchedBytes / 1e6,
			ceiling: plain.FetchedBytes / 1e6, ceilingName: "plain MB fetched",
		}, benchRow{
			name: name, unit: "MB published/member/round", value: sa.PublishedBytes / 1e6,
			ceiling: plain.PublishedBytes / 1e6, ceilingName: "plain MB published",
		}, benchRow{
			name: name, unit: "KB Raft log/member/round", value: sa.RaftBytes / 1e3,
			ceiling: plain.RaftBytes / 1e3, ceilingName: "plain KB Raft log",
		})
	}
	return rows, nil
}
