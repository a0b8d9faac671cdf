// Package sim owns the direct simulation loop: N members in one process, each
// training on its own partition of a real data set, and a fedavg.Strategy
// aggregating their updates every round.
//
// The loop is the reference the full node is compared against, so everything
// that decides the result is a pure function of the configuration and the
// seed: member i's identity is derived from (seed, i), member i's training
// randomness in round r is seeded from (seed, peer ID, r) and never drawn from
// a shared stream, an update is the float32 delta (local minus global) exactly
// as it would be published, and the strategy aggregates in peer-ID order.
// Members train in parallel; the result does not depend on scheduling. Local
// training itself is package train/local's, which every node uses too.
//
// RunNodes and RunLibp2p run every member as a full node, wired by package
// member exactly as `globalbrain run` wires one, over the in-memory network
// in virtual time or over real libp2p hosts on 127.0.0.1, with injected
// faults; they must end on the direct loop's digest.
package sim
