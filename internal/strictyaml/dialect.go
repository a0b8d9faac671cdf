package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Types says what checks a value's type against the Go field it goes into.
type Types int

const (
	// WalkerTypes: the walker checks every value before anything is decoded.
	// A scalar needs the tag of its field's kind (a string field takes only
	// !!str, an integer field only an !!int that fits, a float field !!int
	// or !!float but not NaN), a struct a mapping, a slice a list; null
	// leaves the field as it was. The decoder runs only on a document the
	// walker found nothing wrong with. Values are described with their tag
	// and quoted: got !!str "maybe", want true or false.
	WalkerTypes Types = iota
	// DecoderTypes: package yaml's decoder checks the types, with its
	// conversions (a number into a string field, yes into a bool), and its
	// errors are traced back to their fields; the walker adds what the
	// decoder lets through, a fraction in an integer field. Values are
	// described as the decoder does (got !!str `lots`, want a number), and
	// a document that is a scalar by its quoted value.
	DecoderTypes
)

// A Dialect is one kind of document the engine reads, with what differs
// between the kinds: names, a few words of the messages and two rules.
type Dialect struct {
	// Name prefixes the errors that have no source ("manifest").
	Name string
	// ErrInvalid is matched under errors.Is by every FieldError of the
	// dialect: the package's sentinel for invalid content.
	ErrInvalid error
	// Fields are the fields named when the document is not a mapping:
	// "empty, want a mapping of fields (name, members, model, ...)".
	Fields string
	// Where is put after "aliases are not supported" (and the same of
	// anchors and merge keys): " in a manifest", or "".
	Where string
	// AllowAnchors accepts anchors (&name) that no alias refers to; aliases
	// are always rejected.
	AllowAnchors bool
	// Types is what checks the values' types.
	Types Types
	// Want overrides how a Go type is described in "want ..." ("a list of
	// members" for []Member); a type not in it is described by its kind
	// ("a string", "an integer", "a list", "a mapping", ...).
	Want map[reflect.Type]string
	// LineOrder sorts the validation errors by line, as the parse errors
	// always are; without it they keep the order validate reported them in.
	LineOrder bool
}

// Parse reads data, the YAML document named source, into out, a pointer to
// a struct whose fields have yaml tags: it checks the document (see the
// package documentation), decodes it with package yaml (known fields only,
// so out's UnmarshalYAML may fill in defaults first) and, if nothing was
// wrong, calls validate, which reports out's invalid fields by their path.
// All the problems are returned at once, as Join does, each naming source,
// its line where it is known and its field. out may be partly filled on an
// error.
func (d *Dialect) Parse(data []byte, source string, out any, validate func() []*FieldError) error {
	ix, errs := d.decode(data, out)
	if len(errs) == 0 && validate != nil {
		errs = validate()
		for _, fe := range errs {
			fe.Line = ix.lineOf(fe.Field)
		}
		if d.LineOrder {
			sortByLine(errs)
		}
	}
	for _, fe := range errs {
		fe.Source = source
	}
	return Join(errs)
}

// decode checks data, decodes it into out and returns the index of the
// document's fields and the problems found, in line order.
func (d *Dialect) decode(data []byte, out any) (*index, []*FieldError) {
	root, ferr := d.document(data)
	if ferr != nil {
		return nil, []*FieldError{ferr}
	}
	w := walker{d: d, ix: newIndex(), flagged: map[int]bool{}}
	t := reflect.TypeOf(out).Elem()
	w.walk(root, t, "")
	errs := w.errs

	if d.Types == WalkerTypes && len(errs) > 0 {
		sortByLine(errs)
		return w.ix, errs
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		var te *yaml.TypeError
		switch {
		case d.Types == WalkerTypes:
			// The walker checks keys and types first; what is left is rare.
			errs = append(errs, d.at(lineOf(err), "", errors.New(strings.TrimPrefix(err.Error(), "yaml: "))))
		case !errors.As(err, &te):
			return w.ix, []*FieldError{d.Wrap("", err)}
		default:
			types := typesOf(t, map[string]reflect.Type{})
			for _, msg := range te.Errors {
				if fe := w.decodeError(msg, types); fe != nil {
					errs = append(errs, fe)
				}
			}
		}
	}
	sortByLine(errs)
	return w.ix, errs
}

var (
	// syntaxRE matches the syntax errors of package yaml.
	syntaxRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	// lineRE finds the line in another error of package yaml.
	lineRE = regexp.MustCompile(`line (\d+)`)
)

// lineOf returns the first line number err's message names, or 0.
func lineOf(err error) int {
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// document checks that data is a single YAML document whose top level is a
// mapping and returns that mapping.
func (d *Dialect) document(data []byte) (*yaml.Node, *FieldError) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, d.Errorf("", "empty, want a mapping of fields (%s)", d.Fields)
		}
		return nil, d.syntaxError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == io.EOF:
	case err != nil:
		return nil, d.syntaxError(err)
	default:
		return nil, d.at(extra.Line, "", errors.New("a second YAML document, want exactly one"))
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		line, what := doc.Line, "empty"
		if len(doc.Content) == 1 {
			line, what = doc.Content[0].Line, d.describe(doc.Content[0])
		}
		return nil, d.at(line, "", fmt.Errorf("the document is %s, want a mapping of fields (%s)", what, d.Fields))
	}
	return doc.Content[0], nil
}

// syntaxError turns a YAML syntax error into a FieldError with its line.
func (d *Dialect) syntaxError(err error) *FieldError {
	if m := syntaxRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return d.at(line, "", errors.New(m[2]))
	}
	return d.Wrap("", errors.New(strings.TrimPrefix(err.Error(), "yaml: ")))
}
