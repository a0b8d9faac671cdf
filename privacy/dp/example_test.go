package dp_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/globalbrain/globalbrain/privacy/dp"
)

// A node in `update` mode checks its budget before each round, charges the
// round before it publishes, and persists the accountant.
func Example() {
	const (
		delta  = 1e-5
		budget = 8.0 // the manifest's ceiling, or the node's own lower one
		dim    = 100_000
	)
	mode := dp.UpdateNoise{Z: 2, Clip: 1, Scale: 1 << 16}
	acct, _ := dp.NewAccountant(nil) // Opacus's orders
	round := 0
	for ; ; round++ {
		next, _, _ := acct.EpsilonAfter(delta, mode.Mechanism(dim), 1)
		if next > budget {
			break // decline the round: signed Decline{r}
		}
		_ = acct.Spend(mode.Mechanism(dim), 1) // charge and persist first...
		// ...then encode and publish: mode.Encode(update, source).
	}
	eps, alpha, _ := acct.Epsilon(delta)
	fmt.Printf("rounds: %d, epsilon %.3f at order %v\n", round, eps, alpha)

	saved, _ := json.Marshal(acct)
	var restored dp.Accountant
	_ = json.Unmarshal(saved, &restored)
	again, _, _ := restored.Epsilon(delta)
	fmt.Println("after a restart:", again == eps)
	// Output:
	// rounds: 9, epsilon 7.610 at order 4
	// after a restart: true
}

// Sampling the discrete Gaussian with a seeded source (in production the
// source reads crypto/rand).
func ExampleDiscreteGaussian() {
	g, _ := dp.NewDiscreteGaussian(dp.SquareOf(3)) // sigma = 3
	src := dp.NewSource(rand.NewChaCha8([32]byte{1}))
	for range 5 {
		y, _ := g.Sample(src)
		fmt.Print(y, " ")
	}
	fmt.Println()
}

// A DP-SGD participation of 2 epochs over 60,000 examples, batches of 256,
// noise multiplier 1.1.
func ExampleDPSGD() {
	p := dp.DPSGD{ExampleClip: 1, Z: 1.1, BatchSize: 256}
	acct, _ := dp.NewAccountant(nil)
	_ = acct.Spend(p.Mechanism(60_000), p.Steps(2, 60_000))
	eps, alpha, _ := acct.Epsilon(1e-5)
	fmt.Printf("%d steps at q=%.5f: epsilon %.4f at order %v\n", p.Steps(2, 60_000), p.SampleRate(60_000), eps, alpha)
	// Output:
	// 469 steps at q=0.00427: epsilon 0.8068 at order 12
}
