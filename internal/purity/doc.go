// Package purity holds the tests that pin the architecture: the pure
// packages (fedavg, round, privacy) reach neither libp2p, bbolt nor net
// through any import and import neither os nor time directly; and a table
// of packages with what each may not depend on and why (node: no bbolt,
// gonum, libp2p, p2p or store; p2p: no node, store or round; the
// production path: no sim), which fails when a listed package is gone.
package purity
