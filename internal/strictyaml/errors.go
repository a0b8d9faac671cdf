package strictyaml

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// FieldError is one problem in a document. Make one with Dialect.Errorf or
// Dialect.Wrap, so that it carries its dialect's name and sentinel error.
type FieldError struct {
	// Source is the name the document was parsed under (the file name);
	// empty for errors from a package's Validate.
	Source string
	// Line is the 1-based line in Source the problem is at, 0 if unknown.
	Line int
	// Field is the field's path in YAML's terms ("round.min_participants",
	// "members[2].id", "listen[1]"); empty for a problem with the document
	// as a whole.
	Field string
	// Err is what is wrong.
	Err error

	dialect *Dialect
}

// Error formats e as "source:line: field: problem", leaving out what is
// unknown; without a source the prefix is the dialect's Name ("manifest",
// "node config").
func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.Source != "":
		b.WriteString(e.Source)
	case e.dialect != nil && e.dialect.Name != "":
		b.WriteString(e.dialect.Name)
	default:
		b.WriteString("yaml")
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

// Unwrap returns the underlying error, such as fedavg's for a manifest's
// strategy.
func (e *FieldError) Unwrap() error { return e.Err }

// Is reports whether target is the ErrInvalid of e's dialect.
func (e *FieldError) Is(target error) bool {
	return e.dialect != nil && e.dialect.ErrInvalid != nil && target == e.dialect.ErrInvalid
}

// Errorf returns a FieldError of d for field, without source or line.
func (d *Dialect) Errorf(field, format string, args ...any) *FieldError {
	return d.Wrap(field, fmt.Errorf(format, args...))
}

// Wrap returns a FieldError of d for field whose Err is err, without source
// or line.
func (d *Dialect) Wrap(field string, err error) *FieldError {
	return &FieldError{Field: field, Err: err, dialect: d}
}

// at returns a FieldError of d at line.
func (d *Dialect) at(line int, field string, err error) *FieldError {
	fe := d.Wrap(field, err)
	fe.Line = line
	return fe
}

// Join returns nil, the single error, or all of them joined with
// errors.Join, one a line.
func Join(errs []*FieldError) error {
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

// sortByLine orders errs by line, keeping the order of errors on one line
// (and of those without a line, which come first).
func sortByLine(errs []*FieldError) {
	slices.SortStableFunc(errs, func(a, b *FieldError) int { return a.Line - b.Line })
}
