// Package api owns a node's local HTTP API, the operator's view of a running
// member:
//
//	GET  /status         the node's state as JSON (Status): round, phase,
//	                     applied round and model digest, leadership, alarms,
//	                     the round machine's counters, every member with
//	                     whether it is connected, the last evaluated accuracy
//	GET  /metrics        Prometheus metrics (see NewMetrics), served from the
//	                     registry the node was given, never the default one
//	POST /member/submit  an AddMember request (round.AddMember as JSON) signed
//	                     by the new member and a majority of members: proposed
//	                     to the Raft log (200), or refused as 409 "not the
//	                     leader (leader is <peer>)" on a member that does not
//	                     lead (409 too if the peer is already a member), or
//	                     400 for a request that is malformed or lacks a
//	                     majority
//
// The API reads the node through a Source of plain functions, so it runs
// against a real node or a test double alike. It has no authentication: a
// node serves it on a loopback address unless its configuration says
// otherwise (package nodeconfig).
package api
