package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads and parses the manifest at path; errors name path as their
// source.
func Load(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return Parse(data, path)
}

// Parse reads a manifest from YAML, applies the defaults of omitted fields
// and validates the result. It is strict: it rejects empty input, more than
// one document, unknown and duplicate keys, aliases, values of the wrong type
// and fractions in integer fields. Errors are *FieldErrors (joined with
// errors.Join when there are several) that name source, the line where it is
// known and the field: "manifest.yaml:14: round.min_participants: 0, want >= 1".
func Parse(data []byte, source string) (*Manifest, error) {
	root, ferr := parseDocument(data)
	if ferr != nil {
		ferr.Source = source
		return nil, ferr
	}

	w := walker{ix: index{lines: map[string]int{}, values: map[int][]*valueAt{}}, flagged: map[int]bool{}}
	w.walk(root, reflect.TypeFor[Manifest](), "")
	errs := w.errs

	var m Manifest
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, &FieldError{Source: source, Err: err}
		}
		for _, msg := range te.Errors {
			if fe := w.decodeError(msg); fe != nil {
				errs = append(errs, fe)
			}
		}
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b *FieldError) int { return a.Line - b.Line })
	} else {
		errs = m.validate()
		for _, fe := range errs {
			fe.Line = w.ix.lineOf(fe.Field)
		}
	}
	for _, fe := range errs {
		fe.Source = source
	}
	if err := join(errs); err != nil {
		return nil, err
	}
	return &m, nil
}

var (
	// yamlSyntaxRE matches the syntax errors of package yaml.
	yamlSyntaxRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	// yamlLineRE matches one of the messages of a *yaml.TypeError.
	yamlLineRE = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
	// yamlKeyRE matches the key errors the walker reports itself.
	yamlKeyRE = regexp.MustCompile(`^(field \S+ not found in type|mapping key .* already defined at line|field \S+ already set in type)`)
	// yamlTypeRE matches a value of the wrong type: tag, value, Go type.
	yamlTypeRE = regexp.MustCompile("(?s)^cannot unmarshal (\\S+)(?: `(.*)`)? into (.+)$")
)

// parseDocument checks that data is a single YAML document whose top level
// is a mapping and returns that mapping.
func parseDocument(data []byte) (*yaml.Node, *FieldError) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, &FieldError{Err: errors.New("empty, want a mapping of fields (name, members, model, ...)")}
		}
		return nil, syntaxError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == io.EOF:
	case err != nil:
		return nil, syntaxError(err)
	default:
		return nil, &FieldError{Line: extra.Line, Err: errors.New("a second YAML document, want exactly one")}
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		line, what := doc.Line, "empty"
		if len(doc.Content) == 1 {
			line, what = doc.Content[0].Line, describe(doc.Content[0])
		}
		return nil, &FieldError{Line: line, Err: fmt.Errorf("the document is %s, want a mapping of fields (name, members, model, ...)", what)}
	}
	return doc.Content[0], nil
}

// syntaxError turns a YAML syntax error into a FieldError with its line.
func syntaxError(err error) *FieldError {
	if m := yamlSyntaxRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &FieldError{Line: line, Err: errors.New(m[2])}
	}
	return &FieldError{Err: errors.New(strings.TrimPrefix(err.Error(), "yaml: "))}
}

// index locates fields in a YAML document.
type index struct {
	lines  map[string]int     // field path -> line of its key, or of the item in a list
	values map[int][]*valueAt // line -> the value nodes that start on it
}

// valueAt is a value node and the path of the field it is the value of.
type valueAt struct {
	path string
	node *yaml.Node
}

// lineOf returns the line of field, or of its closest ancestor present in
// the document (a defaulted field has no line of its own), or 0.
func (ix *index) lineOf(field string) int {
	for field != "" {
		if l, ok := ix.lines[field]; ok {
			return l
		}
		field = field[:max(strings.LastIndexAny(field, ".["), 0)]
	}
	return 0
}

// valueOn returns the path of the one value node on line of the given kind
// (any kind if 0) and, if several qualify, with the given value as package
// yaml prints it (cut to 7 characters and "..." when long); "" if there is
// no single such node.
func (ix *index) valueOn(line int, kind yaml.Kind, value string) string {
	var found []*valueAt
	for _, v := range ix.values[line] {
		if kind == 0 || v.node.Kind == kind {
			found = append(found, v)
		}
	}
	if len(found) > 1 && kind == yaml.ScalarNode {
		found = slices.DeleteFunc(found, func(v *valueAt) bool {
			if cut, ok := strings.CutSuffix(value, "..."); ok && len(v.node.Value) > 10 {
				return !strings.HasPrefix(v.node.Value, cut)
			}
			return v.node.Value != value
		})
	}
	if len(found) != 1 {
		return ""
	}
	return found[0].path
}

// walker checks a document against the Manifest type, the checks package
// yaml does not do or does not report by field, and indexes it.
type walker struct {
	ix      index
	errs    []*FieldError
	flagged map[int]bool // lines with a key error already reported
}

func (w *walker) fail(line int, field, format string, args ...any) {
	w.errs = append(w.errs, &FieldError{Line: line, Field: field, Err: fmt.Errorf(format, args...)})
}

var durationType = reflect.TypeFor[Duration]()

// walk checks node n, the value of field path of type t (nil if the field
// is unknown).
func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if path != "" {
		w.ix.values[n.Line] = append(w.ix.values[n.Line], &valueAt{path, n})
	}
	switch n.Kind {
	case yaml.AliasNode:
		w.fail(n.Line, path, "alias *%s: aliases are not supported in a manifest, write the value out", n.Value)
	case yaml.MappingNode:
		var names []string
		var fields map[string]reflect.Type
		if t != nil && t.Kind() == reflect.Struct && t != durationType {
			names, fields = yamlFields(t)
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			field := k.Value
			if path != "" {
				field = path + "." + k.Value
			}
			if first, dup := seen[k.Value]; dup {
				w.fail(k.Line, field, "duplicate key, first at line %d", first)
				w.flagged[k.Line] = true
				continue
			}
			seen[k.Value] = k.Line
			w.ix.lines[field] = k.Line
			if k.ShortTag() == "!!merge" {
				w.fail(k.Line, path, "merge keys (<<) are not supported in a manifest, write the fields out")
				w.flagged[k.Line] = true
				continue
			}
			ft, known := fields[k.Value]
			if fields != nil && !known {
				w.fail(k.Line, field, "unknown field, want one of %s", strings.Join(names, ", "))
				w.flagged[k.Line] = true
				continue
			}
			w.walk(v, ft, field)
		}
	case yaml.SequenceNode:
		var et reflect.Type
		if t != nil && t.Kind() == reflect.Slice {
			et = t.Elem()
		}
		for i, item := range n.Content {
			field := fmt.Sprintf("%s[%d]", path, i)
			w.ix.lines[field] = item.Line
			w.walk(item, et, field)
		}
	case yaml.ScalarNode:
		if t == nil || t == durationType || n.ShortTag() != "!!float" {
			return
		}
		switch t.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			// Package yaml would truncate 1.5 to 1 and saturate -1e300.
			var f float64
			if err := n.Decode(&f); err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
				w.fail(n.Line, path, "got !!float `%s`, want an integer", n.Value)
			}
		}
	}
}

// yamlFields returns the YAML keys of struct type t in field order and the
// type of each.
func yamlFields(t reflect.Type) ([]string, map[string]reflect.Type) {
	var names []string
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		names = append(names, name)
		fields[name] = f.Type
	}
	return names, fields
}

// decodeError turns one message of a *yaml.TypeError into a FieldError, or
// nil if the walker already reported the problem.
func (w *walker) decodeError(msg string) *FieldError {
	m := yamlLineRE.FindStringSubmatch(msg)
	if m == nil {
		return &FieldError{Err: errors.New(msg)}
	}
	line, _ := strconv.Atoi(m[1])
	rest := m[2]
	if yamlKeyRE.MatchString(rest) && w.flagged[line] {
		return nil
	}
	t := yamlTypeRE.FindStringSubmatch(rest)
	if t == nil {
		return &FieldError{Line: line, Field: w.ix.valueOn(line, 0, ""), Err: errors.New(rest)}
	}
	tag, value, goType := t[1], t[2], t[3]
	kind, got := yaml.ScalarNode, tag+" `"+value+"`"
	switch tag {
	case "!!seq":
		kind, got = yaml.SequenceNode, "a list"
	case "!!map":
		kind, got = yaml.MappingNode, "a mapping"
	}
	return &FieldError{Line: line, Field: w.ix.valueOn(line, kind, value), Err: fmt.Errorf("got %s, want %s", got, want(goType))}
}

// want describes a Go type the way a manifest's author thinks of it.
func want(goType string) string {
	switch goType {
	case "float64":
		return "a number"
	case "int", "int64":
		return "an integer"
	case "uint64":
		return "a non-negative integer"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	case "manifest.Duration":
		return `a duration such as "100ms" or "1m30s"`
	case "[]manifest.Member":
		return "a list of members"
	case "manifest.Member":
		return "a member (a mapping with id and voter)"
	}
	if strings.HasPrefix(goType, "manifest.") {
		return "a mapping"
	}
	return goType
}

// describe names a YAML node for an error message: a scalar by its quoted
// value, a collection by its kind.
func describe(n *yaml.Node) string {
	switch {
	case n.ShortTag() == "!!null":
		return "empty"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}
