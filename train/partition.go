package train

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// ErrBadPartition reports partitioner arguments that cannot be satisfied.
var ErrBadPartition = errors.New("invalid partition arguments")

// Second words of the PCG seeds, one per partitioner, so that the same seed
// drives unrelated streams in different partitioners.
const (
	seedIID       = 0x676c6f62616c6969 // "globalii"
	seedShards    = 0x676c6f6273686172 // "globshar"
	seedDirichlet = 0x676c6f6264697269 // "globdiri"
)

// dirichletTries is how many times PartitionDirichlet draws the whole
// partition before repairing empty clients.
const dirichletTries = 100

// The partitioners split the examples of a data set among clients. Each
// returns, for every client, the indices of its examples in ascending order;
// every index appears in at most one client's list. They are deterministic:
// the same arguments and seed give the same partition (PartitionIID and
// PartitionShards use integer arithmetic only, so on every platform too).

// PartitionIID shuffles the n example indices with the seed and deals them
// out evenly: every client gets n/clients examples, and the first
// n%clients clients one more, so no example is dropped and sizes differ by
// at most one.
func PartitionIID(n, clients int, seed uint64) ([][]int, error) {
	if err := checkClients(n, clients); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, seedIID))
	perm := rng.Perm(n)
	parts := make([][]int, clients)
	size, extra := n/clients, n%clients
	off := 0
	for c := range parts {
		k := size
		if c < extra {
			k++
		}
		parts[c] = slices.Sorted(slices.Values(perm[off : off+k]))
		off += k
	}
	return parts, nil
}

// PartitionShards is the pathological non-IID partition of the FedAvg paper
// (McMahan et al. 2017): the example indices are sorted by label (stably, so
// by index within a label), cut into clients*shardsPerClient shards of
// equal size, and each client gets shardsPerClient shards drawn at random
// without replacement. Most clients thus see only a few labels: with 60,000
// MNIST examples, 100 clients and 2 shards each, 200 shards of 300, and at
// most 4 labels per client (a shard may straddle a label boundary).
//
// The number of examples must be a multiple of the number of shards, so
// that no example is dropped silently.
func PartitionShards(labels []uint8, clients, shardsPerClient int, seed uint64) ([][]int, error) {
	n := len(labels)
	if err := checkClients(n, clients); err != nil {
		return nil, err
	}
	if shardsPerClient <= 0 || shardsPerClient > n {
		return nil, fmt.Errorf("train: partition: %w: %d shards per client, want 1..%d", ErrBadPartition, shardsPerClient, n)
	}
	shards := clients * shardsPerClient
	if shards > n || n%shards != 0 {
		return nil, fmt.Errorf("train: partition: %w: %d examples do not divide into %d shards (%d clients x %d shards); choose counts whose product divides %d", ErrBadPartition, n, shards, clients, shardsPerClient, n)
	}
	size := n / shards

	// Counting sort by label: stable, O(n).
	var start [257]int
	for _, y := range labels {
		start[int(y)+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	sorted := make([]int, n)
	for i, y := range labels {
		sorted[start[y]] = i
		start[y]++
	}

	rng := rand.New(rand.NewPCG(seed, seedShards))
	order := rng.Perm(shards)
	parts := make([][]int, clients)
	for c := range parts {
		part := make([]int, 0, shardsPerClient*size)
		for _, s := range order[c*shardsPerClient : (c+1)*shardsPerClient] {
			part = append(part, sorted[s*size:(s+1)*size]...)
		}
		slices.Sort(part)
		parts[c] = part
	}
	return parts, nil
}

// PartitionDirichlet gives every client a label mix drawn from a Dirichlet
// distribution, as in Hsu et al. 2019 and later non-IID benchmarks: for each
// class, the proportions going to the clients are drawn from
// Dirichlet(alpha, ..., alpha), and the class's examples, shuffled, are
// split in those proportions. A small alpha (0.1) makes most clients hold a
// few classes; a large one (100) approaches an IID split.
//
// No client is left empty: if a draw leaves one empty, the whole partition
// is drawn again, up to 100 times; if every draw does (tiny alpha with many
// clients), each empty client then takes one example, chosen at random,
// from the client that currently holds the most. Every example is used.
func PartitionDirichlet(labels []uint8, classes, clients int, alpha float64, seed uint64) ([][]int, error) {
	n := len(labels)
	if err := checkClients(n, clients); err != nil {
		return nil, err
	}
	if classes < 1 || classes > 256 {
		return nil, fmt.Errorf("train: partition: %w: %d classes, want 1..256", ErrBadPartition, classes)
	}
	if !(alpha > 0) || math.IsInf(alpha, 0) {
		return nil, fmt.Errorf("train: partition: %w: alpha %v, want a finite value > 0", ErrBadPartition, alpha)
	}
	byClass := make([][]int, classes)
	for i, y := range labels {
		if int(y) >= classes {
			return nil, fmt.Errorf("train: partition: %w: example %d has label %d, want < %d", ErrLabelRange, i, y, classes)
		}
		byClass[y] = append(byClass[y], i)
	}

	rng := rand.New(rand.NewPCG(seed, seedDirichlet))
	var parts [][]int
	for range dirichletTries {
		parts = dirichletDraw(rng, byClass, clients, alpha)
		if !slices.ContainsFunc(parts, func(p []int) bool { return len(p) == 0 }) {
			break
		}
	}
	fillEmptyClients(rng, parts)
	for _, p := range parts {
		slices.Sort(p)
	}
	return parts, nil
}

// dirichletDraw draws one Dirichlet partition of the examples in byClass.
func dirichletDraw(rng *rand.Rand, byClass [][]int, clients int, alpha float64) [][]int {
	parts := make([][]int, clients)
	logg := make([]float64, clients)
	for _, idx := range byClass {
		if len(idx) == 0 {
			continue
		}
		idx = slices.Clone(idx)
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })

		// Proportions g_c / sum(g), g_c ~ Gamma(alpha, 1), computed from
		// log g so that tiny alphas do not underflow every g_c to 0.
		top := math.Inf(-1)
		for c := range logg {
			logg[c] = logGamma(rng, alpha)
			top = max(top, logg[c])
		}
		sum := 0.0
		for c, l := range logg {
			logg[c] = math.Exp(l - top)
			sum += logg[c]
		}
		cum, prev := 0.0, 0
		for c, g := range logg {
			cum += g / sum
			cut := int(cum * float64(len(idx)))
			if c == clients-1 || cut > len(idx) {
				cut = len(idx)
			}
			cut = max(cut, prev)
			parts[c] = append(parts[c], idx[prev:cut]...)
			prev = cut
		}
	}
	return parts
}

// fillEmptyClients gives each empty client one example taken at random from
// the largest client (the lowest-numbered among equals).
func fillEmptyClients(rng *rand.Rand, parts [][]int) {
	for c := range parts {
		if len(parts[c]) > 0 {
			continue
		}
		big := 0
		for i, p := range parts {
			if len(p) > len(parts[big]) {
				big = i
			}
		}
		p := parts[big]
		k := rng.IntN(len(p))
		parts[c] = []int{p[k]}
		parts[big] = slices.Delete(p, k, k+1)
	}
}

// logGamma returns the logarithm of a Gamma(alpha, 1) variate, drawn with
// the method of Marsaglia and Tsang (2000). For alpha < 1 it uses their
// boost Gamma(alpha) = Gamma(alpha+1) * U^(1/alpha), in log form.
func logGamma(rng *rand.Rand, alpha float64) float64 {
	boost := 0.0
	if alpha < 1 {
		u := 1 - rng.Float64() // in (0, 1]
		boost = math.Log(u) / alpha
		alpha++
	}
	d := alpha - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := 1 - rng.Float64()
		x2 := x * x
		if u < 1-0.0331*x2*x2 || math.Log(u) < 0.5*x2+d*(1-v+math.Log(v)) {
			return math.Log(d*v) + boost
		}
	}
}

// checkClients validates a client count against n examples.
func checkClients(n, clients int) error {
	switch {
	case clients <= 0:
		return fmt.Errorf("train: partition: %w: %d clients, want at least 1", ErrBadPartition, clients)
	case n <= 0:
		return fmt.Errorf("train: partition: %w: no examples", ErrBadPartition)
	case clients > n:
		return fmt.Errorf("train: partition: %w: %d clients for %d examples, want at most one client per example", ErrBadPartition, clients, n)
	}
	return nil
}
