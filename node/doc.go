// Package node owns a member's event loop: one goroutine that feeds network
// messages, ticks and task results into the round state machine and carries
// out its Ready work in order (persist, then publish, then train, fetch and
// apply). It defines the small interfaces it needs from the outside world
// (Network, Store, Trainer) and ships an in-memory Network, so a whole
// consortium can run in one process; the libp2p transport implements the
// same Network.
package node
