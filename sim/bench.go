package sim

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/local"
)

// ProtocolCost is what the round protocol itself costs per round, measured
// with a trainer that returns a fixed update at once.
type ProtocolCost struct {
	Members         int
	Fraction        float64
	Rounds          int
	NodeSeconds     float64 // per round, all members as full nodes
	BytesPerRound   float64 // handed to the members' stores per round, all members together
	DirectSeconds   float64 // per round, the direct loop aggregating the same updates
	UpdateBytes     int     // one update
	ParticipantsAvg float64
	// Over libp2p: bytes sent per round by all members on the gossip topic
	// and on the blob protocol (the payload).
	GossipBytesPerRound, BlobBytesPerRound float64
}

func memberIDs(ms []Member) []identity.PeerID {
	ids := make([]identity.PeerID, len(ms))
	for i, m := range ms {
		ids[i] = m.Identity.ID
	}
	return ids
}

// fixedTrainer returns the same small update at once.
type fixedTrainer struct {
	member   int
	dim      int
	examples int64
}

func (t fixedTrainer) Train(_ context.Context, r uint64, _ *fedavg.Global, _ fedavg.TrainConfig) ([]float32, int64, error) {
	return fixedDelta(t.dim, t.member, r), t.examples, nil
}

// fixedDelta is member m's update in round r: its own, so blobs never coincide.
func fixedDelta(dim, m int, r uint64) []float32 {
	d := make([]float32, dim)
	for i := range d {
		d[i] = float32((i%13+1)*(m+1))*1e-6 + float32(r)*1e-3
	}
	return d
}

// countingStore counts the bytes handed to a store.
type countingStore struct {
	*store.DB
	n *atomic.Int64
}

func (c countingStore) PutBlob(b []byte) (fedavg.Digest, error) {
	if !c.DB.HasBlob(fedavg.DigestBytes(b)) {
		c.n.Add(int64(len(b)))
	}
	return c.DB.PutBlob(b)
}

func (c countingStore) PutBlobVerified(d fedavg.Digest, b []byte) error {
	if !c.DB.HasBlob(d) {
		c.n.Add(int64(len(b)))
	}
	return c.DB.PutBlobVerified(d, b)
}

func (c countingStore) SaveRaft(hs *pb.HardState, ents []*pb.Entry, snap *pb.Snapshot) error {
	n := proto.Size(hs) + proto.Size(snap)
	for _, e := range ents {
		n += proto.Size(e)
	}
	c.n.Add(int64(n))
	return c.DB.SaveRaft(hs, ents, snap)
}

func (c countingStore) Apply(a store.Applied) error {
	c.n.Add(int64(len(a.Record) + 2*32 + 16))
	return c.DB.Apply(a)
}

// MeasureProtocol runs members full nodes for rounds rounds of the given
// architecture with a fixed update, then the direct loop on the same
// updates, and returns the cost per round of each.
func MeasureProtocol(ctx context.Context, arch string, members int, fraction float64, rounds int) (ProtocolCost, error) {
	return measureProtocol(ctx, arch, members, fraction, rounds, false)
}

// MeasureProtocolLibp2p is MeasureProtocol over real libp2p hosts on
// 127.0.0.1; it also reports the gossip and blob bytes per round.
func MeasureProtocolLibp2p(ctx context.Context, arch string, members int, rounds int) (ProtocolCost, error) {
	return measureProtocol(ctx, arch, members, 1, rounds, true)
}

func measureProtocol(ctx context.Context, arch string, members int, fraction float64, rounds int, libp2p bool) (ProtocolCost, error) {
	c := DefaultConfig()
	c.Members, c.Fraction, c.Rounds, c.Model, c.Workers = members, fraction, rounds, arch, 1
	// A data set of the right shape: the fixed trainer never reads it.
	d := &train.Dataset{Name: "shape-only", N: members * 10, Dim: 784, Height: 28, Width: 28, Channels: 1, Classes: 10}
	d.X, d.Y = make([]float32, d.N*d.Dim), make([]uint8, d.N)
	for i := range d.Y {
		d.Y[i] = uint8(i % 10)
	}
	g, err := local.Genesis(ModelSpec(c, d), c.Seed)
	if err != nil {
		return ProtocolCost{}, err
	}
	var written atomic.Int64
	opts := nodeOptions{
		trainer: func(m Member) node.Trainer {
			return fixedTrainer{member: m.Index, dim: len(g.Weights), examples: int64(len(m.Partition))}
		},
		store:  func(db *store.DB) node.Store { return countingStore{DB: db, n: &written} },
		noEval: true,
		libp2p: libp2p,
	}
	res, err := runNodes(ctx, c, Data{Train: d, Test: d}, Faults{}, Observer{}, opts)
	if err != nil {
		return ProtocolCost{}, err
	}
	pc := ProtocolCost{Members: members, Fraction: fraction, Rounds: rounds, UpdateBytes: 4 * len(g.Weights),
		BytesPerRound: float64(written.Load()) / float64(rounds)}
	// Seconds per round in steady state: round 1 also holds the start-up
	// and the first election, so it is left out when there are others.
	steady := res.Rounds
	if len(steady) > 1 {
		steady = steady[1:]
	}
	for _, rr := range steady {
		pc.NodeSeconds += rr.Seconds / float64(len(steady))
	}
	for _, rr := range res.Rounds {
		pc.ParticipantsAvg += float64(rr.Participants) / float64(len(res.Rounds))
	}
	pc.GossipBytesPerRound = float64(res.Traffic["gossip"].Out) / float64(rounds)
	pc.BlobBytesPerRound = float64(res.Traffic["blob"].Out) / float64(rounds)
	// The direct loop on the same updates: aggregation and digest only.
	strategy, err := fedavg.New(c.Strategy)
	if err != nil {
		return pc, err
	}
	ms, err := Members(c, d)
	if err != nil {
		return pc, err
	}
	man, err := c.Manifest(ms, d)
	if err != nil {
		return pc, err
	}
	cid := man.ConsortiumID()
	start := time.Now()
	for r := uint64(1); r <= uint64(rounds); r++ {
		var ups []fedavg.Update
		for _, i := range sampleIndices(cid[:], r, memberIDs(ms), c.SampleSize()) {
			ups = append(ups, fedavg.Update{Peer: ms[i].Identity.ID, Delta: fixedDelta(len(g.Weights), i, r), Examples: int64(len(ms[i].Partition))})
		}
		next, err := strategy.Aggregate(r, g, ups)
		if err != nil {
			return pc, err
		}
		g = next
		_ = g.Digest()
	}
	pc.DirectSeconds = time.Since(start).Seconds() / float64(rounds)
	if res.Final.Digest() != g.Digest() {
		return pc, fmt.Errorf("sim: protocol run ended on %s, direct loop on %s", res.Final.Digest(), g.Digest())
	}
	return pc, nil
}
