// Package fedavg owns aggregation: the global model G, its canonical
// encoding and digest, the strategies that turn a round's updates into the
// next G, and the validation of updates at the edge.
//
// G (Global) is the weights plus the strategy's state, such as FedAvgM's
// momentum or FedAdam's moments. Both are in the canonical encoding
// (Encode, Decode) and therefore in the Digest members agree on, so a member
// that installs G from a snapshot continues exactly where the others are.
//
// An Update is one member's float32 delta (local minus global weights) and
// its example count. Validate checks it once, where it enters the node:
// dimension, NaN and Inf, and the example count against the consortium's
// cap (a count above the cap is an *ExamplesError, never clamped).
//
// A Strategy aggregates: FedAvg; the server optimizers FedAvgM, FedAdam,
// FedYogi and FedAdagrad (Reddi et al. 2021); the robust rules Median,
// TrimmedMean, Krum and MultiKrum; and Clip, which wraps any of them to bound
// each update's L2 norm. New builds one from a Config. Aggregate sorts a copy
// of the updates by peer ID, rejects duplicates, and computes with float64
// accumulation, only + - * / and math.Sqrt, and an explicit conversion around
// every product so that no compiler fuses a multiply-add: the same updates
// give the same G to the bit on every CPU and build. Golden digests in the
// tests hold this.
//
// The package does not choose participants, decide when a round closes or
// agree on the set of updates: that is the round's job. It has no
// goroutines, no clock and no I/O.
package fedavg
