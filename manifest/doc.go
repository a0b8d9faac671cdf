// Package manifest owns a consortium's genesis manifest: the YAML document,
// shared out of band, that fixes everything members must agree on before the
// first round. That is the consortium's name, its genesis members and which
// of them vote in Raft, the model (architecture, input shape, classes, init
// seed), local training, round parameters (sampling, deadline, protocol
// tick), the aggregation strategy and the privacy mode with its parameters
// (Privacy: which fields each mode uses, their defaults and ranges).
//
// Parse and Load read a manifest strictly, with the engine of package
// internal/strictyaml: unknown keys, duplicate keys, values of the wrong type
// (a fraction in an integer field included), aliases, merge keys, several
// documents and empty input are all rejected. Omitted
// fields take the defaults documented on each field, and the result is
// checked by Validate. Every error is a *FieldError that names the file, the
// line where it is known and the field in YAML's dotted form
// ("manifest.yaml:14: round.min_participants: 0, want >= 1"); Parse and
// Validate report all the problems they find at once, joined with
// errors.Join, and every one of them matches ErrInvalid under errors.Is.
//
// # Consortium ID
//
// ConsortiumID is the SHA-256 of Canonical, a JSON encoding of the whole
// manifest plus "protocol": ProtocolVersion. It is part of every protocol ID
// and topic name, so members of different consortia, or of one consortium
// under different protocol versions, never mix. The canonical form is:
//
//   - one JSON object, keys in sorted (byte) order at every level, no
//     whitespace, HTML characters not escaped;
//   - the keys are the YAML keys, every field present, defaults filled in;
//   - members sorted by the bytes of their peer IDs, each ID in libp2p's
//     base58 text form;
//   - integers in decimal; floats in the shortest form that reads back to the
//     same float64, as encoding/json writes them (exponent form below 1e-6
//     and from 1e21), with -0 written as 0; durations as integer nanoseconds.
//
// It therefore does not depend on YAML formatting, key order, quoting,
// comments, the order in which members are listed, or whether a default was
// written out or left implicit; any change of a value (a learning rate, a
// member, a voter flag) changes it.
//
// # What the manifest does not hold
//
// Addresses, display names, key files, data paths and the external trainer
// command belong to each node's own configuration, so editing them never
// changes the consortium ID and a manifest can never make a member run code.
// The manifest fixes the genesis membership only: after genesis, membership
// is Raft state, changed by majority-signed log entries.
package manifest
