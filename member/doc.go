// Package member wires one consortium member and runs it: the store, the
// gossip gate, the transport (a libp2p host, or the in-memory network of a
// simulation), the trainer and evaluator, the HTTP API and the node, built
// in that order from a node config and manifest (FromConfig) or from
// Options, and run as supervised actors that stop in a stated order: ticks,
// the event loop, HTTP, the host, the store.
//
// It is the only place that knows every subsystem. `globalbrain run`, the
// simulator's node modes and the tests' clusters all go through Open, so a
// member is assembled the same way everywhere. It depends on the world
// (bbolt, libp2p, the data sets); packages that want to stay small (round,
// node, fedavg) must not import it.
package member
