// Package purity holds the test that guards the direction of dependencies:
// the pure packages (fedavg, round, privacy) reach neither libp2p, bbolt nor
// net through any import, and import neither os nor time directly.
package purity
