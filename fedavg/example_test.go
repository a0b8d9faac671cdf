package fedavg_test

import (
	"fmt"

	"github.com/globalbrain/globalbrain/fedavg"
)

func Example() {
	s, err := fedavg.New(fedavg.DefaultConfig()) // FedAvg
	if err != nil {
		panic(err)
	}
	g := fedavg.NewGlobal([]float32{1, 2, 3})
	updates := []fedavg.Update{
		{Peer: []byte("peer-b"), Delta: []float32{0.5, 0, -1}, Examples: 300},
		{Peer: []byte("peer-a"), Delta: []float32{-0.5, 1, 1}, Examples: 100},
	}
	for _, u := range updates {
		if err := fedavg.Validate(u, len(g.Weights), 1000); err != nil {
			panic(err)
		}
	}
	next, err := s.Aggregate(1, g, updates)
	if err != nil {
		panic(err)
	}
	fmt.Println(next.Weights, next.State.Strategy, next.State.Step)
	fmt.Println(len(next.Encode()), "bytes, digest", next.Digest().String()[:16])
	// Output:
	// [1.25 2.25 2.5] fedavg 1
	// 46 bytes, digest e3e18da585b07636
}
