package local

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/privacy/dp"
	"github.com/globalbrain/globalbrain/train"
)

// The trainer reports training in progress through Progress, at most once
// per ProgressEvery, and never changes the update by doing so.
func TestTrainerProgress(t *testing.T) {
	d := tinyDataset(64)
	g, err := Genesis(tinySpec, 3)
	require.NoError(t, err)
	id := identity.Derive(1, 0).ID
	part := make([]int, 40)
	for i := range part {
		part[i] = i
	}
	tc := fedavg.TrainConfig{Epochs: 3, BatchSize: 5, LR: 0.1}
	plain, err := NewTrainer(tinySpec, d, part, id, 9, 0)
	require.NoError(t, err)
	want, _, err := plain.Train(context.Background(), 2, g, tc)
	require.NoError(t, err)

	for _, dpsgd := range []bool{false, true} {
		tr, err := NewTrainer(tinySpec, d, part, id, 9, 0)
		require.NoError(t, err)
		if dpsgd {
			tr.DPSGD = &dp.DPSGD{ExampleClip: 1, Z: 1, BatchSize: 5}
			tr.DPKey = []byte("a member's secret, 32 bytes long")
		}
		var got []train.Progress
		tr.Progress = func(r uint64, p train.Progress, took time.Duration) {
			require.Equal(t, uint64(2), r)
			require.Positive(t, took)
			got = append(got, p)
		}
		tr.ProgressEvery = time.Nanosecond // every step
		delta, _, err := tr.Train(context.Background(), 2, g, tc)
		require.NoError(t, err)
		if !dpsgd {
			require.Equal(t, want, delta, "reporting progress changes nothing")
		}
		require.NotEmpty(t, got)
		last := got[len(got)-1]
		require.Equal(t, 3, last.Epochs)
		require.Equal(t, 3, last.Epoch)
		require.Equal(t, last.Steps, last.Step, "the last step is reported")
		if !dpsgd {
			require.Len(t, got, 3*8, "3 epochs of 8 steps of 5")
			require.Equal(t, 3*40, last.Examples)
		}
		for i, p := range got {
			require.False(t, math.IsNaN(p.Loss) || p.Loss <= 0, "step %d loss %v", p.Step, p.Loss)
			if i > 0 {
				require.Greater(t, p.Step, got[i-1].Step)
				require.GreaterOrEqual(t, p.Epoch, got[i-1].Epoch)
			}
		}

		// The rate is bounded: a training shorter than the interval is
		// never reported.
		got = nil
		tr.ProgressEvery = time.Hour
		_, _, err = tr.Train(context.Background(), 2, g, tc)
		require.NoError(t, err)
		require.Empty(t, got)
	}
}

func TestProgressEveryBoundsTheRate(t *testing.T) {
	start := time.Unix(1000, 0)
	clock := start
	now := func() time.Time { return clock }
	var at []time.Duration
	f := progressEvery(1, start, 20*time.Millisecond, now, func(_ uint64, _ train.Progress, took time.Duration) { at = append(at, took) })
	for clock.Sub(start) < 110*time.Millisecond { // a step every 7 ms for 110 ms
		clock = clock.Add(7 * time.Millisecond)
		f(train.Progress{})
	}
	require.Equal(t, []time.Duration{21 * time.Millisecond, 42 * time.Millisecond, 63 * time.Millisecond, 84 * time.Millisecond, 105 * time.Millisecond}, at,
		"none in the first interval, then at most one per interval")
}
