package strictyaml

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"

	"go.yaml.in/yaml/v3"
)

var (
	// typeErrorRE matches one of the messages of a *yaml.TypeError.
	typeErrorRE = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
	// keyErrorRE matches the decoder's key errors, which the walker reports
	// itself.
	keyErrorRE = regexp.MustCompile(`^(field \S+ not found in type|mapping key .* already defined at line|field \S+ already set in type)`)
	// wrongTypeRE matches a value of the wrong type: tag, value, Go type.
	wrongTypeRE = regexp.MustCompile("(?s)^cannot unmarshal (\\S+)(?: `(.*)`)? into (.+)$")
)

// decodeError turns one message of a *yaml.TypeError into a FieldError, or
// nil if the walker already reported the problem. types are the Go types of
// the document by name, to describe the one a value should have had.
func (w *walker) decodeError(msg string, types map[string]reflect.Type) *FieldError {
	m := typeErrorRE.FindStringSubmatch(msg)
	if m == nil {
		return w.d.Wrap("", errors.New(msg))
	}
	line, _ := strconv.Atoi(m[1])
	rest := m[2]
	if keyErrorRE.MatchString(rest) && w.flagged[line] {
		return nil
	}
	t := wrongTypeRE.FindStringSubmatch(rest)
	if t == nil {
		return w.d.at(line, w.ix.valueOn(line, 0, ""), errors.New(rest))
	}
	tag, value, goType := t[1], t[2], t[3]
	kind, got := yaml.ScalarNode, tag+" `"+value+"`"
	switch tag {
	case "!!seq":
		kind, got = yaml.SequenceNode, "a list"
	case "!!map":
		kind, got = yaml.MappingNode, "a mapping"
	}
	want := goType
	if t, ok := types[goType]; ok {
		want = w.d.want(t)
	}
	return w.d.at(line, w.ix.valueOn(line, kind, value), fmt.Errorf("got %s, want %s", got, want))
}

// typesOf adds t and every type reachable through its exported fields and
// elements to types, by the name package yaml's errors give them.
func typesOf(t reflect.Type, types map[string]reflect.Type) map[string]reflect.Type {
	if _, seen := types[t.String()]; seen {
		return types
	}
	types[t.String()] = t
	switch t.Kind() {
	case reflect.Struct:
		for f := range t.Fields() {
			if f.IsExported() {
				typesOf(f.Type, types)
			}
		}
	case reflect.Map:
		typesOf(t.Key(), types)
		typesOf(t.Elem(), types)
	case reflect.Slice, reflect.Array, reflect.Pointer:
		typesOf(t.Elem(), types)
	}
	return types
}

// want describes Go type t the way a document's author thinks of it.
func (d *Dialect) want(t reflect.Type) string {
	if s, ok := d.Want[t]; ok {
		return s
	}
	switch {
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case isInt(t):
		return "an integer"
	case isUint(t):
		return "a non-negative integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		return "a list"
	}
	return "a mapping"
}

// describe names a YAML node for an error message: a collection by its
// kind, a scalar by its tag and quoted value (for DecoderTypes, by its
// quoted value alone).
func (d *Dialect) describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.ShortTag() == "!!null":
		return "empty"
	case d.Types == DecoderTypes:
		return strconv.Quote(n.Value)
	}
	return n.ShortTag() + " " + strconv.Quote(n.Value)
}
