// Package strictyaml is the strict-YAML engine that package manifest (the
// consortium's genesis manifest) and package nodeconfig (a node's own
// node.yaml) read their files with. Those packages keep their Go types, their
// defaults and their validation; this package owns everything between the
// bytes and a validated value:
//
//   - the document rules: empty input, a document that is null or not a
//     mapping, and a second document are rejected; syntax errors keep the
//     line package yaml gives;
//   - the walker, which checks the document's node tree against the Go type
//     before anything is decoded: unknown keys (against the struct's yaml
//     tags), duplicate keys, aliases, anchors (unless the Dialect allows
//     them) and merge keys (<<) are all rejected, and so are values of the
//     wrong type, either by the walker itself (WalkerTypes) or by package
//     yaml's decoder, whose errors are traced back to their fields
//     (DecoderTypes);
//   - the line index, which gives a validation error the line of its field,
//     or of the closest ancestor the document has;
//   - FieldError, one problem as "source:line: field: problem", and Join,
//     which reports all of them at once.
//
// A Dialect holds what differs between the two kinds of document: the name
// errors carry without a source, the sentinel they match under errors.Is,
// the wording of a few messages and the two choices above. Dialect.Parse is
// the whole pipeline: document, walk, decode, then (on a clean document) the
// caller's validation, whose errors get their lines from the index.
package strictyaml
