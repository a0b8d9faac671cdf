package nodeconfig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/globalbrain/globalbrain/internal/strictyaml"
)

// ErrInvalid matches, under errors.Is, every error that reports a problem in
// a node config's content (as opposed to a file that cannot be read).
var ErrInvalid = errors.New("nodeconfig: invalid")

// FieldError is one problem in a node config: its Source (the file name; ""
// for errors from Validate), Line (1-based, 0 if unknown), Field (the
// field's path in YAML's terms, "data.index", "listen[1]"; empty for a
// problem with the document as a whole) and Err. It formats as
// "source:line: field: problem", leaving out what is unknown; without a
// source the prefix is "node config". It matches ErrInvalid under errors.Is
// and unwraps to Err.
type FieldError = strictyaml.FieldError

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
	var c Config
	if err := dialect.Parse(data, source, &c, c.validate); err != nil {
		return nil, err
	}
	c.resolve(dir)
	return &c, nil
}

// dialect is how package strictyaml reads a node config: with its zero
// Types, WalkerTypes, the walker checks every value's type itself (a string
// field takes only a string), and anchors are rejected like aliases. All
// errors are in line order.
var dialect = &strictyaml.Dialect{
	Name:       "node config",
	ErrInvalid: ErrInvalid,
	Fields:     "manifest, listen, ...",
	LineOrder:  true,
}

type validator struct{ errs []*FieldError }

func (v *validator) bad(field, format string, args ...any) {
	v.errs = append(v.errs, dialect.Errorf(field, format, args...))
}
