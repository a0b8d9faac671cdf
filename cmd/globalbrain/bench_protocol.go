package main

import (
	"fmt"

	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/sim"
)

// protocol measures rounds of the protocol in one process with a fixed
// update, next to the direct loop, at 10 members C=1 and 100 members C=0.1.
func (r *benchRun) protocol() ([]benchRow, error) {
	var rows []benchRow
	protoArch, protoRuns := r.protoArch(), []struct {
		members  int
		fraction float64
		rounds   int
	}{{10, 1, 5}, {100, 0.1, 3}}
	if r.quick {
		protoRuns[0].rounds, protoRuns[1].members, protoRuns[1].fraction, protoRuns[1].rounds = 2, 20, 0.5, 2
	}
	for _, pr := range protoRuns {
		if r.ctx.Err() != nil {
			return nil, r.ctx.Err()
		}
		pc, err := sim.MeasureProtocol(r.ctx, protoArch, pr.members, pr.fraction, pr.rounds)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("protocol %d members C=%g (%s, fixed update)", pr.members, pr.fraction, protoArch)
		rows = append(rows, benchRow{
			name: name, unit: "s/round", value: pc.NodeSeconds,
			ceiling: pc.DirectSeconds, ceilingName: "direct loop s/round", design: "",
		}, benchRow{
			name: name, unit: "MB written/round", value: pc.BytesPerRound / 1e6,
			ceiling: float64(pc.UpdateBytes) * pc.ParticipantsAvg / 1e6, ceilingName: "MB of updates/round",
		})
	}
	return rows, nil
}

// transport measures a 100 MB update to 9 peers over the blob protocol next
// to raw TCP on loopback, then the protocol over libp2p at 10 peers.
func (r *benchRun) transport() ([]benchRow, error) {
	protoArch := r.protoArch()
	blobSize, blobPeers, lpMembers, lpRounds := int64(100<<20), 9, 10, 4
	if r.quick {
		blobSize, blobPeers, lpMembers, lpRounds = 4<<20, 3, 4, 2
	}
	if r.ctx.Err() != nil {
		return nil, r.ctx.Err()
	}
	blob, tcp, err := p2p.MeasureBlobVsTCP(r.ctx, blobSize, blobPeers)
	if err != nil {
		return nil, err
	}
	rows := []benchRow{{
		name: fmt.Sprintf("blob protocol %d MB to %d peers", blobSize>>20, blobPeers), unit: "MB/s", value: blob,
		ceiling: tcp, ceilingName: "raw TCP MB/s (loopback)",
	}}
	lp, err := sim.MeasureProtocolLibp2p(r.ctx, protoArch, lpMembers, lpRounds)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("libp2p %d peers (%s, fixed update)", lpMembers, protoArch)
	rows = append(rows, benchRow{
		name: name, unit: "non-training s/round", value: lp.NodeSeconds,
		ceiling: lp.DirectSeconds, ceilingName: "direct loop s/round",
	}, benchRow{
		name: name, unit: "gossip MB/round", value: lp.GossipBytesPerRound / 1e6,
		ceiling: lp.BlobBytesPerRound / 1e6, ceilingName: "blob payload MB/round",
	})
	return rows, nil
}
