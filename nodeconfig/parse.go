package nodeconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrInvalid matches, under errors.Is, every error that reports a problem in
// a node config's content (as opposed to a file that cannot be read).
var ErrInvalid = errors.New("nodeconfig: invalid")

// FieldError is one problem in a node config.
type FieldError struct {
	// Source is the file name ("" for errors from Validate).
	Source string
	// Line is the 1-based line in Source, 0 if unknown.
	Line int
	// Field is the field's path in YAML's terms ("data.index",
	// "listen[1]"); empty for a problem with the document as a whole.
	Field string
	// Err is what is wrong.
	Err error
}

// Error formats e as "source:line: field: problem", leaving out what is
// unknown; without a source the prefix is "node config".
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
	} else {
		b.WriteString("node config")
	}
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying error.
func (e *FieldError) Unwrap() error { return e.Err }

// Is reports whether target is ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

type validator struct{ errs []*FieldError }

func (v *validator) bad(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
}

func join(errs []*FieldError) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}

// Load reads and parses the node config at path. Relative paths in it are
// resolved against path's directory; errors name path as their source.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nodeconfig: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("nodeconfig: %w", err)
	}
	c, err := Parse(data, path, filepath.Dir(abs))
	if err != nil {
		return nil, err
	}
	c.Path = abs
	return c, nil
}

// Parse reads a node config from YAML, applies the defaults of omitted
// fields, validates the result and resolves relative paths against dir.
// Errors are *FieldErrors naming source, the line and the field.
func Parse(data []byte, source, dir string) (*Config, error) {
	root, ferr := parseDocument(data)
	if ferr != nil {
		ferr.Source = source
		return nil, ferr
	}
	w := walker{lines: map[string]int{}}
	w.walk(root, reflect.TypeFor[Config](), "")
	errs := w.errs
	var c Config
	if len(errs) == 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil {
			// The walker checks keys and types first; what is left is rare.
			errs = append(errs, &FieldError{Line: lineOf(err), Err: errors.New(strings.TrimPrefix(err.Error(), "yaml: "))})
		}
	}
	if len(errs) == 0 {
		errs = c.validate()
		for _, fe := range errs {
			fe.Line = w.lineOf(fe.Field)
		}
	}
	slices.SortStableFunc(errs, func(a, b *FieldError) int { return a.Line - b.Line })
	for _, fe := range errs {
		fe.Source = source
	}
	if err := join(errs); err != nil {
		return nil, err
	}
	c.resolve(dir)
	return &c, nil
}

var lineRE = regexp.MustCompile(`line (\d+)`)

func lineOf(err error) int {
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// parseDocument checks that data is one YAML document whose top level is a
// mapping, and returns the mapping.
func parseDocument(data []byte) (*yaml.Node, *FieldError) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, &FieldError{Err: errors.New("empty, want a mapping of fields (manifest, listen, ...)")}
		}
		return nil, &FieldError{Line: lineOf(err), Err: errors.New(syntaxMessage(err))}
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == io.EOF:
	case err != nil:
		return nil, &FieldError{Line: lineOf(err), Err: errors.New(syntaxMessage(err))}
	default:
		return nil, &FieldError{Line: extra.Line, Err: errors.New("a second YAML document, want exactly one")}
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		what := "empty"
		if len(doc.Content) == 1 {
			what = describe(doc.Content[0])
		}
		return nil, &FieldError{Line: doc.Line, Err: fmt.Errorf("the document is %s, want a mapping of fields (manifest, listen, ...)", what)}
	}
	return doc.Content[0], nil
}

var syntaxRE = regexp.MustCompile(`^yaml: line \d+: `)

func syntaxMessage(err error) string {
	return strings.TrimPrefix(syntaxRE.ReplaceAllString(err.Error(), ""), "yaml: ")
}

// walker checks a document against the Config type (keys, duplicates,
// aliases and value types) and records the line of every field.
type walker struct {
	lines map[string]int
	errs  []*FieldError
}

func (w *walker) fail(line int, field, format string, args ...any) {
	w.errs = append(w.errs, &FieldError{Line: line, Field: field, Err: fmt.Errorf(format, args...)})
}

// lineOf returns the line of field or of its closest ancestor present in
// the document, or 0.
func (w *walker) lineOf(field string) int {
	for field != "" {
		if l, ok := w.lines[field]; ok {
			return l
		}
		field = field[:max(strings.LastIndexAny(field, ".["), 0)]
	}
	return 0
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode {
		w.fail(n.Line, path, "alias *%s: aliases are not supported, write the value out", n.Value)
		return
	}
	if n.Anchor != "" {
		w.fail(n.Line, path, "anchor &%s: anchors are not supported, write the value out", n.Anchor)
		return
	}
	if n.ShortTag() == "!!null" {
		return // the default stays
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.fail(n.Line, path, "got %s, want a mapping", describe(n))
			return
		}
		names, fields := yamlFields(t)
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			field := k.Value
			if path != "" {
				field = path + "." + k.Value
			}
			if first, dup := seen[k.Value]; dup {
				w.fail(k.Line, field, "duplicate key, first at line %d", first)
				continue
			}
			seen[k.Value] = k.Line
			w.lines[field] = k.Line
			ft, known := fields[k.Value]
			if !known {
				w.fail(k.Line, field, "unknown field, want one of %s", strings.Join(names, ", "))
				continue
			}
			w.walk(v, ft, field)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n.Line, path, "got %s, want a list", describe(n))
			return
		}
		for i, item := range n.Content {
			field := fmt.Sprintf("%s[%d]", path, i)
			w.lines[field] = item.Line
			w.walk(item, t.Elem(), field)
		}
	default:
		if n.Kind != yaml.ScalarNode {
			w.fail(n.Line, path, "got %s, want %s", describe(n), want(t))
			return
		}
		w.scalar(n, t, path)
	}
}

// scalar checks a scalar's tag against the field's Go type.
func (w *walker) scalar(n *yaml.Node, t reflect.Type, path string) {
	tag := n.ShortTag()
	ok := true
	switch t.Kind() {
	case reflect.String:
		ok = tag == "!!str"
	case reflect.Bool:
		ok = tag == "!!bool"
	case reflect.Int, reflect.Int64:
		var x int64
		ok = tag == "!!int" && n.Decode(&x) == nil
	case reflect.Uint64:
		var x uint64
		ok = tag == "!!int" && n.Decode(&x) == nil
	case reflect.Float64:
		var x float64
		ok = (tag == "!!int" || tag == "!!float") && n.Decode(&x) == nil && !math.IsNaN(x)
	}
	if !ok {
		w.fail(n.Line, path, "got %s, want %s", describe(n), want(t))
	}
}

// yamlFields returns the YAML keys of struct type t in field order and the
// type of each.
func yamlFields(t reflect.Type) ([]string, map[string]reflect.Type) {
	var names []string
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		names = append(names, name)
		fields[name] = f.Type
	}
	return names, fields
}

// want describes a Go type the way a config's author thinks of it.
func want(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list"
	}
	return "a mapping"
}

// describe names a YAML node: a scalar by its tag and value, a collection by
// its kind.
func describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.ShortTag() == "!!null":
		return "empty"
	}
	return n.ShortTag() + " " + strconv.Quote(n.Value)
}
