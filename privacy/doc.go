// Package privacy is the home of the privacy mechanisms of PRIVACY.md:
// secure aggregation (package privacy/secagg) and differential privacy
// (package privacy/dp). Both are pure: standard library only, no I/O, no
// clock, no goroutines, and every source of randomness is an io.Reader the
// caller passes in, so a seeded reader replays a run to the bit. The
// internal/purity test holds them to it.
package privacy
