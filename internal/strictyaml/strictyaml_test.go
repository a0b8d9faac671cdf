package strictyaml

import (
	"errors"
	"strings"
	"testing"
)

type item struct {
	Level int    `yaml:"level"`
	Name  string `yaml:"name"`
}

type doc struct {
	Name  string `yaml:"name"`
	Count int    `yaml:"count"`
	Items []item `yaml:"items"`
	Sub   item   `yaml:"sub"`
}

var errTest = errors.New("test: invalid")

var (
	// walkerTypes is a dialect like nodeconfig's.
	walkerTypes = &Dialect{Name: "test", ErrInvalid: errTest, Fields: "name, count, ..."}
	// decoderTypes is a dialect like manifest's.
	decoderTypes = &Dialect{Name: "test", ErrInvalid: errTest, Fields: "name, count, ...", Where: " in a test", AllowAnchors: true, Types: DecoderTypes}
)

// parse parses src as t.yaml and returns its errors, one a line.
func parse(d *Dialect, src string, validate func(*doc) []*FieldError) []string {
	var v doc
	var check func() []*FieldError
	if validate != nil {
		check = func() []*FieldError { return validate(&v) }
	}
	err := d.Parse([]byte(src), "t.yaml", &v, check)
	if err == nil {
		return nil
	}
	if !errors.Is(err, errTest) {
		return []string{"not ErrInvalid: " + err.Error()}
	}
	return strings.Split(err.Error(), "\n")
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    *Dialect
		src  string
		want []string
	}{
		{"duplicate key", walkerTypes, "name: a\ncount: 1\nname: b\n",
			[]string{"t.yaml:3: name: duplicate key, first at line 1"}},
		// The decoder's own error about the key is not reported again.
		{"duplicate key decoder", decoderTypes, "sub:\n  level: 1\n  level: 2\n",
			[]string{"t.yaml:3: sub.level: duplicate key, first at line 2"}},
		{"unknown key", walkerTypes, "name: a\nsub:\n  levle: 1\n",
			[]string{"t.yaml:3: sub.levle: unknown field, want one of level, name"}},
		{"unknown key decoder", decoderTypes, "colour: red\n",
			[]string{"t.yaml:1: colour: unknown field, want one of name, count, items, sub"}},
		{"alias and anchor rejected", walkerTypes, "name: &n x\nsub: {name: *n}\n", []string{
			"t.yaml:1: name: anchor &n: anchors are not supported, write the value out",
			"t.yaml:2: sub.name: alias *n: aliases are not supported, write the value out",
		}},
		{"alias rejected, anchor allowed", decoderTypes, "name: &n x\nsub: {name: *n}\n",
			[]string{"t.yaml:2: sub.name: alias *n: aliases are not supported in a test, write the value out"}},
		{"merge key rejected", walkerTypes, "sub:\n  <<: {level: 1}\n",
			[]string{"t.yaml:2: sub: merge keys (<<) are not supported, write the fields out"}},
		{"merge key rejected decoder", decoderTypes, "name: a\n<<: {count: 1}\n",
			[]string{"t.yaml:2: merge keys (<<) are not supported in a test, write the fields out"}},
		{"wrong type in a list", walkerTypes, "items:\n  - level: 1\n  - level: x\n",
			[]string{`t.yaml:3: items[1].level: got !!str "x", want an integer`}},
		{"wrong type in a list decoder", decoderTypes, "items:\n  - level: 1\n  - level: x\n",
			[]string{"t.yaml:3: items[1].level: got !!str `x`, want an integer"}},
		{"not a mapping", walkerTypes, "sub: [1]\n", []string{"t.yaml:1: sub: got a list, want a mapping"}},
		{"not a mapping decoder", decoderTypes, "sub: [1]\n", []string{"t.yaml:1: sub: got a list, want a mapping"}},
		{"number for a string", walkerTypes, "name: 12\n", []string{`t.yaml:1: name: got !!int "12", want a string`}},
		{"number for a string decoder", decoderTypes, "name: 12\n", nil}, // package yaml converts it
		{"fraction in an integer", walkerTypes, "count: 1.5\n", []string{`t.yaml:1: count: got !!float "1.5", want an integer`}},
		{"fraction in an integer decoder", decoderTypes, "count: 1.5\n", []string{"t.yaml:1: count: got !!float `1.5`, want an integer"}},
		{"whole float in an integer decoder", decoderTypes, "count: 2.0\n", nil},
		{"null keeps the field", walkerTypes, "sub: ~\nname:\n", nil},
		{"several in line order", walkerTypes, "sub: {level: x}\nname: [a]\ncolour: 1\n", []string{
			`t.yaml:1: sub.level: got !!str "x", want an integer`,
			"t.yaml:2: name: got a list, want a string",
			"t.yaml:3: colour: unknown field, want one of name, count, items, sub",
		}},

		// The document.
		{"empty", walkerTypes, "# nothing\n", []string{"t.yaml: empty, want a mapping of fields (name, count, ...)"}},
		{"null document", decoderTypes, "---\n~\n", []string{"t.yaml:2: the document is empty, want a mapping of fields (name, count, ...)"}},
		{"scalar document", walkerTypes, "hello\n", []string{`t.yaml:1: the document is !!str "hello", want a mapping of fields (name, count, ...)`}},
		{"scalar document decoder", decoderTypes, "hello\n", []string{`t.yaml:1: the document is "hello", want a mapping of fields (name, count, ...)`}},
		{"list document", walkerTypes, "- a\n", []string{"t.yaml:1: the document is a list, want a mapping of fields (name, count, ...)"}},
		{"second document", decoderTypes, "name: a\n---\nname: b\n", []string{"t.yaml:2: a second YAML document, want exactly one"}},
		{"syntax error", walkerTypes, "name: a\nitems: [\n", []string{"t.yaml:2: did not find expected node content"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parse(tc.d, tc.src, nil)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// TestValidationLines checks that the caller's validation errors get the
// line of their field, or of the closest ancestor the document has.
func TestValidationLines(t *testing.T) {
	src := "name: a\nitems:\n  - level: 1\n  - name: b\nsub:\n  level: 3\n"
	validate := func(v *doc) []*FieldError {
		return []*FieldError{
			walkerTypes.Errorf("sub.level", "%d, want < 3", v.Sub.Level),
			walkerTypes.Errorf("items[1].level", "0, want >= 1"), // not in the document: the item's line
			walkerTypes.Errorf("count", "required"),              // no line
		}
	}
	want := []string{
		"t.yaml:6: sub.level: 3, want < 3",
		"t.yaml:4: items[1].level: 0, want >= 1",
		"t.yaml: count: required",
	}
	if got := parse(walkerTypes, src, validate); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	sorted := *walkerTypes
	sorted.LineOrder = true
	want = []string{want[2], want[1], want[0]}
	if got := parse(&sorted, src, validate); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("with LineOrder got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	// Validation runs only on a document without parse errors.
	if got := parse(walkerTypes, src+"colour: 1\n", validate); len(got) != 1 {
		t.Errorf("got %q, want only the unknown field", got)
	}
}

func TestFieldError(t *testing.T) {
	inner := errors.New("too small")
	fe := decoderTypes.Wrap("count", inner)
	if got, want := fe.Error(), "test: count: too small"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	fe.Source, fe.Line = "t.yaml", 7
	if got, want := fe.Error(), "t.yaml:7: count: too small"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(fe, errTest) || !errors.Is(fe, inner) || errors.Is(fe, errors.New("test: invalid")) {
		t.Errorf("errors.Is does not match the dialect's ErrInvalid and the wrapped error only")
	}
	if Join(nil) != nil {
		t.Errorf("Join(nil) != nil")
	}
	if err := Join([]*FieldError{fe}); err != fe {
		t.Errorf("Join of one error = %v, want the error itself", err)
	}
}
