package manifest

import (
	"fmt"
	"os"
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
// one document, unknown and duplicate keys, aliases, merge keys, values of
// the wrong type and fractions in integer fields (package strictyaml's
// rules). Errors are *FieldErrors (joined with errors.Join when there are
// several) that name source, the line where it is known and the field:
// "manifest.yaml:14: round.min_participants: 0, want >= 1".
func Parse(data []byte, source string) (*Manifest, error) {
	var m Manifest
	validate := func() []*FieldError {
		m.ApplyDefaults()
		return m.validate()
	}
	if err := dialect.Parse(data, source, &m, validate); err != nil {
		return nil, err
	}
	return &m, nil
}
