package round

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/privacy/dp"
)

type chachaReader struct{ *rand.ChaCha8 }

func (r chachaReader) Read(p []byte) (int, error) { return r.ChaCha8.Read(p) }

// The distributed mode's decoding: the unmasked sum of honest DDG
// encodings decodes to their mean (rotated back, off the grid), within the
// noise; a sum that honest inputs cannot reach (one participant sent
// garbage) is scaled down onto the bound, so it moves the model at most
// that far, and every member computes the same bits.
func TestDecodeDistributed(t *testing.T) {
	const dim, n = 300, 5
	var consortium [32]byte
	consortium[0] = 7
	p := &SecAggParams{Distributed: &dp.DistributedNoise{Z: 0.5, Clip: 1, Scale: 1 << 16, Beta: dp.DefaultBeta}}
	noise := p.NoiseFor(4, 1)
	v := &SecAggView{Round: 3, Base: Digest{1}, T: 4, Noise: noise, Inputs: make([]*Message, n)}
	rot := dp.NewRotation(RotationSeed(consortium, v.Round, v.Base), dim)
	src := dp.NewSource(chachaReader{rand.NewChaCha8([32]byte{3})})
	sum := make([]uint64, p.InputWords(dim))
	require.Len(t, sum, 512)
	want := make([]float64, dim)
	for i := range n {
		x := make([]float32, dim)
		for j := range x {
			x[j] = float32(i+1) * 0.002 * float32(j%7-3)
			want[j] += float64(x[j]) / n
		}
		enc, err := noise.Encode(x, rot, src)
		require.NoError(t, err)
		for j := range sum {
			sum[j] += enc[j]
		}
	}
	mean, examples := decodeDistributed(v, consortium, sum, dim)
	require.Equal(t, int64(n), examples)
	// Per coordinate the mean carries noise of sd z*S/sqrt(honest*n).
	sd := 0.5 / math.Sqrt(3*n)
	var sq float64
	for j := range mean {
		r := float64(mean[j]) - want[j]
		sq += r * r
	}
	got := math.Sqrt(sq / dim)
	require.InDelta(t, sd, got, 0.2*sd, "residual sd")
	again, _ := decodeDistributed(v, consortium, sum, dim)
	require.Equal(t, mean, again)

	// Garbage in one input: far past the bound, scaled onto it.
	bad := append([]uint64(nil), sum...)
	bad[17] += 1 << 60
	m2, _ := decodeDistributed(v, consortium, bad, dim)
	var norm float64
	for _, f := range m2 {
		norm += float64(f) * float64(f)
	}
	bound := noise.SumBound(dim, n) / n
	require.LessOrEqual(t, math.Sqrt(norm), bound*(1+1e-6))
	require.Greater(t, math.Sqrt(norm), 0.9*bound, "the sum is scaled onto the bound, not zeroed")
}

// Under the distributed mode a masked input is PaddedDim words, and the
// edge refuses any other length.
func TestCheckBlobDistributedInput(t *testing.T) {
	p := &Params{UpdateBytes: 4 * 300, SecAgg: &SecAggParams{Distributed: &dp.DistributedNoise{Z: 1, Clip: 1, Scale: 1 << 16, Beta: dp.DefaultBeta}}}
	require.NoError(t, p.CheckBlob(KindInput, 1, make([]byte, 8*512)))
	require.ErrorContains(t, p.CheckBlob(KindInput, 1, make([]byte, 8*301)), "want 4096")
	p.SecAgg.Distributed = nil
	require.NoError(t, p.CheckBlob(KindInput, 1, make([]byte, 8*301)))
	require.Error(t, p.CheckBlob(KindInput, 1, make([]byte, 8*512)))
}
