package local

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/train"
)

func TestSeedDependsOnEveryInput(t *testing.T) {
	a, b := identity.Derive(1, 0).ID, identity.Derive(1, 1).ID
	x := Seed(1, a, 1).Uint64()
	require.Equal(t, x, Seed(1, a, 1).Uint64())
	require.NotEqual(t, x, Seed(2, a, 1).Uint64())
	require.NotEqual(t, x, Seed(1, b, 1).Uint64())
	require.NotEqual(t, x, Seed(1, a, 2).Uint64())
}

func TestPartitionSchemes(t *testing.T) {
	d := tinyDataset(200)
	for _, scheme := range []string{"iid", "shards", "dirichlet"} {
		parts, err := Partition(d, scheme, 4, 2, 0.5, 7)
		require.NoError(t, err, scheme)
		require.Len(t, parts, 4, scheme)
		again, err := Partition(d, scheme, 4, 2, 0.5, 7)
		require.NoError(t, err)
		require.Equal(t, parts, again, "%s is seeded", scheme)
	}
	_, err := Partition(d, "random", 4, 2, 0.5, 7)
	require.ErrorContains(t, err, `partition "random" unknown`)
}

// tinyDataset is a synthetic 4x4 two-class set: which half of the image is
// bright decides the label. It exercises the code paths, not learning.
func tinyDataset(n int) *train.Dataset {
	d := &train.Dataset{Name: "tiny", N: n, Dim: 16, Height: 4, Width: 4, Channels: 1, Classes: 2,
		X: make([]float32, n*16), Y: make([]uint8, n)}
	for i := range n {
		d.Y[i] = uint8(i % 2)
		for j := range 16 {
			if (j < 8) == (i%2 == 0) {
				d.X[i*16+j] = 1
			}
		}
	}
	return d
}

func TestTrainerEqualsUpdate(t *testing.T) {
	d := tinyDataset(64)
	spec := train.Spec{Arch: "logreg", Height: 4, Width: 4, Channels: 1, Classes: 2}
	g, err := Genesis(spec, 3)
	require.NoError(t, err)
	id := identity.Derive(1, 0).ID
	part := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	tc := fedavg.TrainConfig{Epochs: 1, BatchSize: 5, LR: 0.1}
	model, err := train.NewModel(spec)
	require.NoError(t, err)
	want, _, err := Update(model, g, d, part, id, tc, 9, 2, 8)
	require.NoError(t, err)
	require.Equal(t, int64(8), want.Examples, "the count is capped")

	tr, err := NewTrainer(spec, d, part, id, 9, 8)
	require.NoError(t, err)
	var observed uint64
	tr.Observe = func(r uint64, _ fedavg.Update, _ train.TrainStats, _ time.Duration) { observed = r }
	delta, n, err := tr.Train(context.Background(), 2, g, tc)
	require.NoError(t, err)
	require.Equal(t, want.Delta, delta)
	require.Equal(t, want.Examples, n)
	require.Equal(t, uint64(2), observed)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err = tr.Train(ctx, 3, g, tc)
	require.ErrorIs(t, err, context.Canceled)
}
