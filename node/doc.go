// Package node owns a member's event loop: one goroutine that feeds what
// arrives (the network's Inbox, ticks, the results of tasks, operator
// requests) into the round state machine and carries out the machine's
// Ready in order: persist, then send and publish, then hand the tasks
// (train, fetch, aggregate, apply, install, sync) to goroutines whose
// results come back as inputs. The loop itself never waits on the network,
// the disk beyond the Raft log, or an aggregation.
//
// The node decides nothing about the protocol: every fetch, retry and
// outcome is the round machine's call. It defines the small interfaces it
// needs from the world (Network, Store, Trainer), speaks round and fedavg
// types through them, and ships an in-memory Network (MemNet) so a whole
// consortium can run in one process; the libp2p transport (package p2p) and
// the bbolt store (package store) implement the same interfaces, and
// package member wires them together.
package node
