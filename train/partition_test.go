package train

import (
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// mnistLikeLabels returns 60,000 shuffled labels with MNIST's training
// class counts.
func mnistLikeLabels(seed uint64) []uint8 {
	counts := []int{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}
	var labels []uint8
	for y, c := range counts {
		for range c {
			labels = append(labels, uint8(y))
		}
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	rng.Shuffle(len(labels), func(i, j int) { labels[i], labels[j] = labels[j], labels[i] })
	return labels
}

// balancedLabels returns n labels cycling through classes.
func balancedLabels(n, classes int) []uint8 {
	labels := make([]uint8, n)
	for i := range labels {
		labels[i] = uint8(i % classes)
	}
	return labels
}

// checkPartition checks that parts has the given number of non-empty,
// ascending lists of indices in [0, n), that no index is used twice, and
// returns how many indices are used.
func checkPartition(t *testing.T, parts [][]int, clients, n int) int {
	t.Helper()
	if len(parts) != clients {
		t.Fatalf("%d clients, want %d", len(parts), clients)
	}
	seen := make([]bool, n)
	used := 0
	for c, p := range parts {
		if len(p) == 0 {
			t.Errorf("client %d is empty", c)
		}
		if !slices.IsSorted(p) {
			t.Errorf("client %d: indices not in ascending order", c)
		}
		for _, i := range p {
			if i < 0 || i >= n {
				t.Fatalf("client %d: index %d out of [0, %d)", c, i, n)
			}
			if seen[i] {
				t.Fatalf("index %d used twice", i)
			}
			seen[i] = true
			used++
		}
	}
	return used
}

// requireDeterministic checks that part gives equal results for equal
// seeds and different results for different seeds.
func requireDeterministic(t *testing.T, part func(seed uint64) ([][]int, error)) {
	t.Helper()
	a, errA := part(7)
	b, errB := part(7)
	c, errC := part(8)
	if errA != nil || errB != nil || errC != nil {
		t.Fatal(errA, errB, errC)
	}
	if !reflect.DeepEqual(a, b) {
		t.Error("same seed, different partitions")
	}
	if reflect.DeepEqual(a, c) {
		t.Error("different seeds, same partition")
	}
}

func TestPartitionIID(t *testing.T) {
	for _, tc := range []struct{ n, clients int }{
		{60000, 100}, {10, 3}, {7, 7}, {5, 1}, {1001, 10},
	} {
		parts, err := PartitionIID(tc.n, tc.clients, 1)
		if err != nil {
			t.Fatal(err)
		}
		if used := checkPartition(t, parts, tc.clients, tc.n); used != tc.n {
			t.Errorf("n=%d clients=%d: %d indices used, want all", tc.n, tc.clients, used)
		}
		for c, p := range parts {
			want := tc.n / tc.clients
			if c < tc.n%tc.clients {
				want++
			}
			if len(p) != want {
				t.Errorf("n=%d clients=%d: client %d has %d, want %d", tc.n, tc.clients, c, len(p), want)
			}
		}
	}
	requireDeterministic(t, func(seed uint64) ([][]int, error) { return PartitionIID(1000, 10, seed) })

	// The split is random: the first client does not get a contiguous run.
	parts, _ := PartitionIID(1000, 10, 3)
	if parts[0][len(parts[0])-1]-parts[0][0] == len(parts[0])-1 {
		t.Error("client 0 got a contiguous block")
	}
}

// TestPartitionShardsFedAvg checks the FedAvg paper's setting: 60,000
// examples, 100 clients, 2 shards of 300 each.
func TestPartitionShardsFedAvg(t *testing.T) {
	labels := mnistLikeLabels(1)
	parts, err := PartitionShards(labels, 100, 2, 42)
	if err != nil {
		t.Fatal(err)
	}
	if used := checkPartition(t, parts, 100, len(labels)); used != len(labels) {
		t.Errorf("%d indices used, want %d", used, len(labels))
	}

	// Recompute each index's shard: its position in the stable label sort,
	// divided by the shard size.
	order := make([]int, len(labels))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return int(labels[a]) - int(labels[b]) })
	shardOf := make([]int, len(labels))
	for pos, i := range order {
		shardOf[i] = pos / 300
	}

	manyLabels := 0
	for c, p := range parts {
		if len(p) != 600 {
			t.Errorf("client %d has %d examples, want 600", c, len(p))
		}
		shards := map[int]int{}
		classes := map[uint8]bool{}
		for _, i := range p {
			shards[shardOf[i]]++
			classes[labels[i]] = true
		}
		if len(shards) != 2 {
			t.Errorf("client %d has %d shards, want 2", c, len(shards))
		}
		for s, k := range shards {
			if k != 300 {
				t.Errorf("client %d has %d examples of shard %d, want 300", c, k, s)
			}
		}
		if len(classes) > 4 {
			t.Errorf("client %d has %d labels, want at most 4", c, len(classes))
		}
		if len(classes) > 2 {
			manyLabels++
		}
	}
	// Only shards straddling one of the 9 label boundaries add labels.
	if manyLabels > 9 {
		t.Errorf("%d clients have more than 2 labels, want at most 9", manyLabels)
	}
	requireDeterministic(t, func(seed uint64) ([][]int, error) { return PartitionShards(labels, 100, 2, seed) })
}

func TestPartitionShardsSmall(t *testing.T) {
	labels := []uint8{1, 0, 1, 0, 2, 2}
	parts, err := PartitionShards(labels, 3, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Shards are the label-sorted pairs {1,3}, {0,2}, {4,5}.
	got := slices.Clone(parts)
	slices.SortFunc(got, func(a, b []int) int { return a[0] - b[0] })
	if want := [][]int{{0, 2}, {1, 3}, {4, 5}}; !reflect.DeepEqual(got, want) {
		t.Errorf("shards %v, want %v in some order", got, want)
	}
}

func TestPartitionDirichlet(t *testing.T) {
	labels := mnistLikeLabels(2)
	for _, alpha := range []float64{0.05, 0.1, 0.5, 1, 100} {
		parts, err := PartitionDirichlet(labels, 10, 100, alpha, 5)
		if err != nil {
			t.Fatal(err)
		}
		if used := checkPartition(t, parts, 100, len(labels)); used != len(labels) {
			t.Errorf("alpha %v: %d indices used, want %d", alpha, used, len(labels))
		}
	}
	requireDeterministic(t, func(seed uint64) ([][]int, error) {
		return PartitionDirichlet(labels, 10, 100, 0.5, seed)
	})
}

// meanMaxClassFraction measures label skew: the mean over clients of the
// fraction of a client's examples in its most common class.
func meanMaxClassFraction(parts [][]int, labels []uint8, classes int) float64 {
	sum := 0.0
	for _, p := range parts {
		counts := make([]int, classes)
		for _, i := range p {
			counts[labels[i]]++
		}
		sum += float64(slices.Max(counts)) / float64(len(p))
	}
	return sum / float64(len(parts))
}

func TestPartitionDirichletSkew(t *testing.T) {
	labels := balancedLabels(20000, 10)
	skew := map[float64]float64{}
	for _, alpha := range []float64{0.1, 1, 100} {
		parts, err := PartitionDirichlet(labels, 10, 20, alpha, 11)
		if err != nil {
			t.Fatal(err)
		}
		checkPartition(t, parts, 20, len(labels))
		skew[alpha] = meanMaxClassFraction(parts, labels, 10)
	}
	t.Logf("mean max-class fraction by alpha: %v", skew)
	if skew[0.1] < 0.5 {
		t.Errorf("alpha 0.1: mean max-class fraction %.3f, want > 0.5", skew[0.1])
	}
	if skew[100] > 0.2 {
		t.Errorf("alpha 100: mean max-class fraction %.3f, want < 0.2 (IID is 0.1)", skew[100])
	}
	if !(skew[0.1] > skew[1] && skew[1] > skew[100]) {
		t.Errorf("skew not decreasing with alpha: %v", skew)
	}
}

// TestPartitionDirichletNoEmptyClient forces the repair rule: with a tiny
// alpha nearly all examples go to one client in every draw.
func TestPartitionDirichletNoEmptyClient(t *testing.T) {
	labels := balancedLabels(30, 3)
	for seed := range uint64(20) {
		parts, err := PartitionDirichlet(labels, 3, 25, 1e-4, seed)
		if err != nil {
			t.Fatal(err)
		}
		if used := checkPartition(t, parts, 25, len(labels)); used != len(labels) {
			t.Errorf("seed %d: %d indices used, want %d", seed, used, len(labels))
		}
	}
	// Every example its own client.
	parts, err := PartitionDirichlet(labels, 3, 30, 0.5, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, parts, 30, 30)
}

func TestPartitionErrors(t *testing.T) {
	labels := balancedLabels(100, 10)
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"iid-no-clients", partitionErr(PartitionIID(100, 0, 1)), "0 clients"},
		{"iid-negative-clients", partitionErr(PartitionIID(100, -3, 1)), "-3 clients"},
		{"iid-too-many-clients", partitionErr(PartitionIID(100, 101, 1)), "101 clients for 100 examples"},
		{"iid-no-examples", partitionErr(PartitionIID(0, 1, 1)), "no examples"},
		{"shards-no-clients", partitionErr(PartitionShards(labels, 0, 2, 1)), "0 clients"},
		{"shards-too-many-clients", partitionErr(PartitionShards(labels, 101, 1, 1)), "101 clients for 100 examples"},
		{"shards-zero-per-client", partitionErr(PartitionShards(labels, 10, 0, 1)), "0 shards per client"},
		{"shards-huge-per-client", partitionErr(PartitionShards(labels, 10, math.MaxInt, 1)), "shards per client"},
		{"shards-not-dividing", partitionErr(PartitionShards(labels, 3, 2, 1)), "100 examples do not divide into 6 shards"},
		{"shards-too-many", partitionErr(PartitionShards(labels, 60, 2, 1)), "do not divide into 120 shards"},
		{"shards-no-labels", partitionErr(PartitionShards(nil, 1, 1, 1)), "no examples"},
		{"dirichlet-no-clients", partitionErr(PartitionDirichlet(labels, 10, 0, 1, 1)), "0 clients"},
		{"dirichlet-too-many-clients", partitionErr(PartitionDirichlet(labels, 10, 101, 1, 1)), "101 clients"},
		{"dirichlet-zero-alpha", partitionErr(PartitionDirichlet(labels, 10, 5, 0, 1)), "alpha 0"},
		{"dirichlet-negative-alpha", partitionErr(PartitionDirichlet(labels, 10, 5, -1, 1)), "alpha -1"},
		{"dirichlet-nan-alpha", partitionErr(PartitionDirichlet(labels, 10, 5, math.NaN(), 1)), "alpha NaN"},
		{"dirichlet-inf-alpha", partitionErr(PartitionDirichlet(labels, 10, 5, math.Inf(1), 1)), "alpha +Inf"},
		{"dirichlet-no-classes", partitionErr(PartitionDirichlet(labels, 0, 5, 1, 1)), "0 classes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireDataErr(t, tc.err, ErrBadPartition, "", "partition", tc.want)
		})
	}
	_, err := PartitionDirichlet(labels, 5, 5, 1, 1)
	requireDataErr(t, err, ErrLabelRange, "", "example 5 has label 5, want < 5")
}

// partitionErr returns the error of a partitioner's results.
func partitionErr(_ [][]int, err error) error { return err }

// TestPartitionGammaSampler checks the Marsaglia-Tsang sampler's mean and
// variance (both alpha for Gamma(alpha, 1)), including the alpha < 1 boost.
func TestPartitionGammaSampler(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 200000
	for _, alpha := range []float64{0.1, 0.5, 1, 2.5, 10, 100} {
		var sum, sum2 float64
		for range n {
			g := math.Exp(logGamma(rng, alpha))
			sum += g
			sum2 += g * g
		}
		mean := sum / n
		variance := sum2/n - mean*mean
		// The sample mean's standard error is sqrt(alpha/n).
		if se := math.Sqrt(alpha / n); math.Abs(mean-alpha) > 5*se {
			t.Errorf("alpha %v: mean %v, want %v ± %v", alpha, mean, alpha, 5*se)
		}
		if math.Abs(variance-alpha)/alpha > 0.1 {
			t.Errorf("alpha %v: variance %v, want about %v", alpha, variance, alpha)
		}
	}
	// Tiny alphas underflow Gamma variates to 0 but not their logarithms.
	for range 1000 {
		if l := logGamma(rng, 1e-3); math.IsNaN(l) || math.IsInf(l, 0) {
			t.Fatalf("logGamma(1e-3) = %v", l)
		}
	}
}
