package manifest

import (
	"errors"
	"reflect"

	"github.com/globalbrain/globalbrain/internal/strictyaml"
)

// ErrInvalid matches, under errors.Is, every error that reports a problem in
// a manifest's content (as opposed to, say, a file that cannot be read).
var ErrInvalid = errors.New("manifest: invalid")

// FieldError is one problem in a manifest: its Source (the name Parse was
// given; empty for errors from Validate), Line (1-based, 0 if unknown),
// Field (the field's path in YAML's terms, "round.min_participants",
// "members[2].id"; empty for a problem with the document as a whole) and
// Err. It formats as "source:line: field: problem", leaving out what is
// unknown; without a source the prefix is "manifest". It matches
// ErrInvalid under errors.Is and unwraps to Err.
type FieldError = strictyaml.FieldError

// dialect is how package strictyaml reads a manifest. Types are checked by
// package yaml's decoder, whose conversions a manifest has always accepted
// (yes for true, a number in a string field); anchors are harmless without
// aliases.
var dialect = &strictyaml.Dialect{
	Name:         "manifest",
	ErrInvalid:   ErrInvalid,
	Fields:       "name, members, model, ...",
	Where:        " in a manifest",
	AllowAnchors: true,
	Types:        strictyaml.DecoderTypes,
	Want: map[reflect.Type]string{
		reflect.TypeFor[Duration](): `a duration such as "100ms" or "1m30s"`,
		reflect.TypeFor[[]Member](): "a list of members",
		reflect.TypeFor[Member]():   "a member (a mapping with id and voter)",
	},
}
