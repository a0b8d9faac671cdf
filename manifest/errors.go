package manifest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalid matches, under errors.Is, every error that reports a problem in
// a manifest's content (as opposed to, say, a file that cannot be read).
var ErrInvalid = errors.New("manifest: invalid")

// FieldError is one problem in a manifest.
type FieldError struct {
	// Source is the name Parse was given (the file name); empty for errors
	// from Validate.
	Source string
	// Line is the 1-based line in Source the problem is at, 0 if unknown.
	Line int
	// Field is the field's path in YAML's terms ("round.min_participants",
	// "members[2].id"); empty for a problem with the document as a whole.
	Field string
	// Err is what is wrong.
	Err error
}

// Error formats e as "source:line: field: problem", leaving out what is
// unknown; without a source the prefix is "manifest".
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
	} else {
		b.WriteString("manifest")
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

// Unwrap returns the underlying error, such as fedavg's for the strategy.
func (e *FieldError) Unwrap() error { return e.Err }

// Is reports whether target is ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// fieldErrorf builds a FieldError without source or line.
func fieldErrorf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// join returns nil, the single error, or all of them joined.
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
