package local

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/train"
)

// Spec is the model a manifest names.
func Spec(m *manifest.Manifest) train.Spec {
	return train.Spec{Arch: m.Model.Arch, Height: m.Model.Height, Width: m.Model.Width, Channels: m.Model.Channels, Classes: m.Model.Classes}
}

// Genesis is G(0): the model's weights initialised from seed and the
// strategy's empty state.
func Genesis(spec train.Spec, seed uint64) (*fedavg.Global, error) {
	m, err := train.NewModel(spec)
	if err != nil {
		return nil, err
	}
	w := make([]float32, m.NumParams())
	m.Init(w, seed)
	return fedavg.NewGlobal(w), nil
}

// Partition splits d's training examples among members by scheme ("iid",
// "shards" with shards per member, "dirichlet" with alpha), seeded: every
// member computes the same split and takes its own part.
func Partition(d *train.Dataset, scheme string, members, shards int, alpha float64, seed uint64) ([][]int, error) {
	switch scheme {
	case "iid":
		return train.PartitionIID(d.N, members, seed)
	case "shards":
		return train.PartitionShards(d.Y, members, shards, seed)
	case "dirichlet":
		return train.PartitionDirichlet(d.Y, d.Classes, members, alpha, seed)
	}
	return nil, fmt.Errorf("partition %q unknown", scheme)
}

// Seed seeds member id's training randomness in round r; it depends on
// nothing else, so members can train in any order or in any process.
func Seed(seed uint64, id identity.PeerID, r uint64) *rand.Rand {
	var buf [16]byte
	binary.BigEndian.PutUint64(buf[:8], seed)
	binary.BigEndian.PutUint64(buf[8:], r)
	h := sha256.New()
	h.Write([]byte("globalbrain/train-seed/1"))
	h.Write(buf[:8])
	h.Write(id)
	h.Write(buf[8:])
	s := h.Sum(nil)
	return rand.New(rand.NewPCG(binary.BigEndian.Uint64(s[:8]), binary.BigEndian.Uint64(s[8:16])))
}

// SGD is the local optimiser's configuration for a strategy's TrainConfig.
func SGD(t fedavg.TrainConfig) train.SGDConfig {
	return train.SGDConfig{Epochs: t.Epochs, BatchSize: t.BatchSize, LR: t.LR, ProxMu: t.ProxMu}
}

// Update trains member id on its part of d from global g for round r and
// returns its update: the float32 delta (local minus global) and its
// example count, capped at maxExamples (0: no cap) as an honest member
// reports it.
func Update(model *train.Model, g *fedavg.Global, d *train.Dataset, part []int, id identity.PeerID, tc fedavg.TrainConfig, seed, r uint64, maxExamples int64) (fedavg.Update, train.TrainStats, error) {
	local := slices.Clone(g.Weights)
	st, err := model.Train(local, g.Weights, d, part, SGD(tc), Seed(seed, id, r))
	if err != nil {
		return fedavg.Update{}, st, fmt.Errorf("member %s round %d: %w", id.Short(), r, err)
	}
	for i, w := range g.Weights {
		local[i] -= w
	}
	n := int64(len(part))
	if maxExamples > 0 {
		n = min(n, maxExamples)
	}
	return fedavg.Update{Peer: id, Delta: local, Examples: n}, st, nil
}
