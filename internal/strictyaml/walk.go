package strictyaml

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

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

func newIndex() *index {
	return &index{lines: map[string]int{}, values: map[int][]*valueAt{}}
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

// walker checks a document against a Go type, the checks package yaml does
// not do or does not report by field, and indexes it.
type walker struct {
	d       *Dialect
	ix      *index
	errs    []*FieldError
	flagged map[int]bool // lines with a key error already reported
}

func (w *walker) fail(line int, field, format string, args ...any) {
	w.errs = append(w.errs, w.d.at(line, field, fmt.Errorf(format, args...)))
}

// failKey reports a problem with a key; the decoder's error about the same
// key, if any, is dropped.
func (w *walker) failKey(line int, field, format string, args ...any) {
	w.fail(line, field, format, args...)
	w.flagged[line] = true
}

// unmarshalerType is the interface of a type that decodes its own node.
var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// custom reports whether t decodes its own node (as manifest.Duration
// does), so that only it knows which values it takes.
func custom(t reflect.Type) bool {
	return t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType)
}

// walk checks node n, the value of field path of type t (nil if the type is
// not known: under a field the walker has no type for).
func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if path != "" {
		w.ix.values[n.Line] = append(w.ix.values[n.Line], &valueAt{path, n})
	}
	if n.Kind == yaml.AliasNode {
		w.fail(n.Line, path, "alias *%s: aliases are not supported%s, write the value out", n.Value, w.d.Where)
		return
	}
	if n.Anchor != "" && !w.d.AllowAnchors {
		w.fail(n.Line, path, "anchor &%s: anchors are not supported%s, write the value out", n.Anchor, w.d.Where)
		return
	}
	if w.d.Types == WalkerTypes && !w.kindFits(n, t, path) {
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		w.mapping(n, t, path)
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
		w.scalar(n, t, path)
	}
}

// kindFits checks, for WalkerTypes, that n is of the kind t takes (a
// mapping for a struct, a list for a slice, a scalar otherwise) and reports
// whether to walk n further: not if it does not fit or is null (the field
// keeps what it holds, its default).
func (w *walker) kindFits(n *yaml.Node, t reflect.Type, path string) bool {
	if n.ShortTag() == "!!null" {
		return false
	}
	if t == nil || custom(t) {
		return true
	}
	kind := yaml.ScalarNode
	switch t.Kind() {
	case reflect.Struct:
		kind = yaml.MappingNode
	case reflect.Slice:
		kind = yaml.SequenceNode
	}
	if n.Kind != kind {
		w.fail(n.Line, path, "got %s, want %s", w.d.describe(n), w.d.want(t))
		return false
	}
	return true
}

// mapping checks the keys of mapping n against struct type t (no check of
// the keys' names if t is not a struct) and walks their values.
func (w *walker) mapping(n *yaml.Node, t reflect.Type, path string) {
	var names []string
	var fields map[string]reflect.Type
	if t != nil && t.Kind() == reflect.Struct && !custom(t) {
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
			w.failKey(k.Line, field, "duplicate key, first at line %d", first)
			continue
		}
		seen[k.Value] = k.Line
		w.ix.lines[field] = k.Line
		if k.ShortTag() == "!!merge" {
			w.failKey(k.Line, path, "merge keys (<<) are not supported%s, write the fields out", w.d.Where)
			continue
		}
		ft, known := fields[k.Value]
		if fields != nil && !known {
			w.failKey(k.Line, field, "unknown field, want one of %s", strings.Join(names, ", "))
			continue
		}
		w.walk(v, ft, field)
	}
}

// scalar checks scalar n against type t: for WalkerTypes its tag, for
// DecoderTypes only that a float in an integer field is a whole number
// (package yaml would truncate 1.5 to 1 and saturate -1e300).
func (w *walker) scalar(n *yaml.Node, t reflect.Type, path string) {
	if t == nil || custom(t) {
		return
	}
	if w.d.Types == WalkerTypes {
		if !scalarFits(n, t) {
			w.fail(n.Line, path, "got %s, want %s", w.d.describe(n), w.d.want(t))
		}
		return
	}
	if n.ShortTag() != "!!float" || !isInt(t) && !isUint(t) {
		return
	}
	var f float64
	if err := n.Decode(&f); err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		w.fail(n.Line, path, "got !!float `%s`, want an integer", n.Value)
	}
}

// scalarFits reports whether scalar n has a tag type t takes and a value
// that fits it.
func scalarFits(n *yaml.Node, t reflect.Type) bool {
	tag := n.ShortTag()
	switch {
	case t.Kind() == reflect.String:
		return tag == "!!str"
	case t.Kind() == reflect.Bool:
		return tag == "!!bool"
	case isInt(t):
		var x int64
		return tag == "!!int" && n.Decode(&x) == nil && !reflect.Zero(t).OverflowInt(x)
	case isUint(t):
		var x uint64
		return tag == "!!int" && n.Decode(&x) == nil && !reflect.Zero(t).OverflowUint(x)
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		var x float64
		return (tag == "!!int" || tag == "!!float") && n.Decode(&x) == nil && !math.IsNaN(x)
	}
	return true
}

func isInt(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return true
	}
	return false
}

func isUint(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return true
	}
	return false
}

// yamlFields returns the YAML keys of struct type t in field order and the
// type of each: the name in the yaml tag or, as package yaml does, the
// field's name in lower case.
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
