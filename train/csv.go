package train

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors for malformed CSV files. A *CSVError wraps them with the
// file, line and column.
var (
	// ErrBadNumber reports a feature that is not a number, or one whose
	// normalised value is outside float32's range.
	ErrBadNumber = errors.New("bad number")
	// ErrColumnCount reports a row whose number of columns differs from
	// the header's (or, without a header, the first row's).
	ErrColumnCount = errors.New("wrong column count")
	// ErrNonFinite reports a NaN or infinite feature.
	ErrNonFinite = errors.New("non-finite feature")
	// ErrNoExamples reports a file with no data rows.
	ErrNoExamples = errors.New("no examples")
	// ErrMissingColumn reports a column the options name that the file
	// does not have.
	ErrMissingColumn = errors.New("missing column")
	// ErrBadLabel reports a label that is neither a class number nor one
	// of the class names.
	ErrBadLabel = errors.New("bad label")
)

// CSVError is a problem at one place of a CSV file: Path, and where known
// Line (1-based, as an editor counts, so a header is line 1), Column
// (1-based) and the column's Name in the header. It formats as
// "train: path:line: column 3 "age": problem" and unwraps to Err.
type CSVError struct {
	Path   string
	Line   int
	Column int
	Name   string
	Err    error
}

func (e *CSVError) Error() string {
	var b strings.Builder
	b.WriteString("train: ")
	b.WriteString(e.Path)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	switch {
	case e.Column > 0 && e.Name != "":
		fmt.Fprintf(&b, ": column %d %q", e.Column, e.Name)
	case e.Column > 0:
		fmt.Fprintf(&b, ": column %d", e.Column)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *CSVError) Unwrap() error { return e.Err }

// Column names a CSV column: by its Name in the header or by its Number
// (1 is the first column). Exactly one of the two is set.
type Column struct {
	Name   string
	Number int
}

func (c Column) String() string {
	if c.Name != "" {
		return strconv.Quote(c.Name)
	}
	return strconv.Itoa(c.Number)
}

// CSVOptions says how to read a labelled table.
type CSVOptions struct {
	// Header says the first line names the columns.
	Header bool
	// Delimiter separates the fields; 0 is ','.
	Delimiter rune
	// Label is the column holding the class.
	Label Column
	// Features are the feature columns, in the order the model sees them;
	// empty: every column but the label, in file order.
	Features []Column
	// Classes is the number of classes, 2..256: a label is a class number
	// 0..Classes-1, or one of Labels.
	Classes int
	// Labels, if set, are the classes' names (len(Labels) == Classes): a
	// label cell may hold a name instead of a number.
	Labels []string
	// Normalize maps each feature to what the model sees.
	Normalize Normalization
}

// maxHeaderNames is how many header names an error lists.
const maxHeaderNames = 12

// LoadCSV reads a labelled table from path (gzip-compressed or not, told by
// its magic bytes). Every row has the same number of columns; one is the
// label, Features (or all the others) are numbers, normalised as stated.
// The data set has one feature per selected column: Dim = Height = F,
// Width = Channels = 1, the F x 1 x 1 input of a dense model. Blank lines are
// skipped, fields may be quoted and have spaces around them.
//
// Errors are *CSVErrors naming the file, the line and the column, and wrap
// one of the sentinels (ErrBadNumber, ErrNonFinite, ErrColumnCount,
// ErrMissingColumn, ErrBadLabel, ErrLabelRange, ErrNoExamples) or the csv
// package's syntax errors.
func LoadCSV(name, path string, o CSVOptions) (*Dataset, error) {
	if o.Classes < 2 || o.Classes > 256 {
		return nil, fmt.Errorf("train: %s: %d classes, want 2..256", path, o.Classes)
	}
	if len(o.Labels) > 0 && len(o.Labels) != o.Classes {
		return nil, fmt.Errorf("train: %s: %d label names for %d classes", path, len(o.Labels), o.Classes)
	}
	if o.Delimiter == 0 {
		o.Delimiter = ','
	}
	if !validDelimiter(o.Delimiter) {
		return nil, fmt.Errorf("train: %s: delimiter %q cannot separate CSV fields", path, o.Delimiter)
	}
	f, err := openData(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	r := csv.NewReader(f)
	r.Comma = o.Delimiter
	r.FieldsPerRecord = -1 // counted here, for a clearer message
	r.TrimLeadingSpace = true

	t := &csvTable{path: path, o: o, r: r}
	if err := t.read(); err != nil {
		return nil, err
	}
	d := &Dataset{
		Name: name, X: t.x, Y: t.y, N: len(t.y), Dim: len(t.features),
		Height: len(t.features), Width: 1, Channels: 1, Classes: o.Classes,
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return d, nil
}

// validDelimiter is encoding/csv's rule for Comma.
func validDelimiter(r rune) bool {
	return r != '"' && r != '\r' && r != '\n' && utf8.ValidRune(r) && r != utf8.RuneError && r != unicode.ReplacementChar
}

// csvTable is one LoadCSV in progress.
type csvTable struct {
	path     string
	o        CSVOptions
	r        *csv.Reader
	header   []string // nil without a header
	width    int      // columns per row
	widthAt  int      // line that set width
	label    int      // column index, 0-based
	features []int    // column indices, 0-based
	classes  map[string]int
	x        []float32
	y        []uint8
}

func (t *csvTable) fail(line, col int, format string, args ...any) error {
	e := &CSVError{Path: t.path, Line: line, Err: fmt.Errorf(format, args...)}
	if col >= 0 {
		e.Column = col + 1
		if col < len(t.header) {
			e.Name = t.header[col]
		}
	}
	return e
}

func (t *csvTable) read() error {
	if len(t.o.Labels) > 0 {
		t.classes = make(map[string]int, len(t.o.Labels))
		for i, s := range t.o.Labels {
			t.classes[s] = i
		}
	}
	first := true
	for {
		rec, err := t.r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return &CSVError{Path: t.path, Line: pe.Line, Err: fmt.Errorf("character %d: %w", pe.Column, pe.Err)}
			}
			return fmt.Errorf("train: %s: %w", t.path, err)
		}
		line, _ := t.r.FieldPos(0)
		if first {
			first = false
			// A spreadsheet's UTF-8 export may start with a byte order mark.
			rec[0] = strings.TrimPrefix(rec[0], "\ufeff")
			t.width, t.widthAt = len(rec), line
			if t.o.Header {
				t.header = make([]string, len(rec))
				for i, s := range rec {
					t.header[i] = strings.TrimSpace(s)
				}
			}
			if err := t.resolve(line); err != nil {
				return err
			}
			if t.o.Header {
				continue
			}
		}
		if err := t.row(rec, line); err != nil {
			return err
		}
	}
	switch {
	case first:
		return &CSVError{Path: t.path, Err: fmt.Errorf("%w: the file is empty", ErrNoExamples)}
	case len(t.y) == 0:
		return &CSVError{Path: t.path, Err: fmt.Errorf("%w: no data rows after the header", ErrNoExamples)}
	}
	return nil
}

// resolve finds the label and feature columns in the first row (the header,
// or the first data row on line).
func (t *csvTable) resolve(line int) error {
	var err error
	if t.label, err = t.find(t.o.Label, "label", line); err != nil {
		return err
	}
	if len(t.o.Features) == 0 {
		for j := range t.width {
			if j != t.label {
				t.features = append(t.features, j)
			}
		}
		if len(t.features) == 0 {
			return t.fail(line, -1, "%w: %d column, the label; want at least one feature column besides it", ErrColumnCount, t.width)
		}
		return t.checkNormalize(line)
	}
	seen := map[int]int{t.label: -1}
	for i, c := range t.o.Features {
		j, err := t.find(c, fmt.Sprintf("feature %d", i+1), line)
		if err != nil {
			return err
		}
		switch k, dup := seen[j]; {
		case dup && k < 0:
			return t.fail(line, j, "named as a feature (features[%d]) and as the label", i)
		case dup:
			return t.fail(line, j, "named twice as a feature (features[%d] and features[%d])", k, i)
		}
		seen[j] = i
		t.features = append(t.features, j)
	}
	return t.checkNormalize(line)
}

// checkNormalize checks the normalisation against the features found.
func (t *csvTable) checkNormalize(line int) error {
	if err := t.o.Normalize.Check(len(t.features)); err != nil {
		return t.fail(line, -1, "%d features: %w", len(t.features), err)
	}
	return nil
}

// find locates column c, the what ("label", "feature 3").
func (t *csvTable) find(c Column, what string, line int) (int, error) {
	if c.Name == "" {
		if c.Number < 1 || c.Number > t.width {
			return 0, t.fail(line, -1, "%w: %s column %d, but line %d has %d columns", ErrMissingColumn, what, c.Number, line, t.width)
		}
		return c.Number - 1, nil
	}
	if t.header == nil {
		return 0, t.fail(line, -1, "%w: %s column %q is named, but the file is read without a header", ErrMissingColumn, what, c.Name)
	}
	at := -1
	for j, h := range t.header {
		if h != c.Name {
			continue
		}
		if at >= 0 {
			return 0, t.fail(line, j, "%s column %q is ambiguous: the header names columns %d and %d so", what, c.Name, at+1, j+1)
		}
		at = j
	}
	if at < 0 {
		return 0, t.fail(line, -1, "%w: %s column %q is not in the header (%s)", ErrMissingColumn, what, c.Name, listHeader(t.header))
	}
	return at, nil
}

// listHeader lists the header's names, the first maxHeaderNames of a long
// one.
func listHeader(h []string) string {
	q := make([]string, 0, min(len(h), maxHeaderNames))
	for _, s := range h[:min(len(h), maxHeaderNames)] {
		q = append(q, strconv.Quote(s))
	}
	s := strings.Join(q, ", ")
	if len(h) > maxHeaderNames {
		s += fmt.Sprintf(", ... %d columns in all", len(h))
	}
	return s
}

// row reads one data row.
func (t *csvTable) row(rec []string, line int) error {
	if len(rec) != t.width {
		as := fmt.Sprintf("as the first row, line %d", t.widthAt)
		if t.header != nil {
			as = fmt.Sprintf("as the header, line %d", t.widthAt)
		}
		return t.fail(line, -1, "%w: %d columns, want %d (%s)", ErrColumnCount, len(rec), t.width, as)
	}
	label, err := t.parseLabel(strings.TrimSpace(rec[t.label]))
	if err != nil {
		l, _ := t.r.FieldPos(t.label)
		return t.fail(l, t.label, "%w", err)
	}
	t.y = append(t.y, uint8(label))
	for k, j := range t.features {
		s := strings.TrimSpace(rec[j])
		v, err := strconv.ParseFloat(s, 64)
		switch {
		case errors.Is(err, strconv.ErrRange) && math.IsInf(v, 0):
			l, _ := t.r.FieldPos(j)
			return t.fail(l, j, "%w: %q is out of range", ErrBadNumber, s)
		case err != nil && !errors.Is(err, strconv.ErrRange):
			l, _ := t.r.FieldPos(j)
			return t.fail(l, j, "%w: %q is not a number", ErrBadNumber, s)
		case math.IsNaN(v) || math.IsInf(v, 0):
			l, _ := t.r.FieldPos(j)
			return t.fail(l, j, "%w: %q", ErrNonFinite, s)
		}
		n := t.o.Normalize.apply(v, k)
		if math.IsNaN(n) || math.Abs(n) > math.MaxFloat32 {
			l, _ := t.r.FieldPos(j)
			return t.fail(l, j, "%w: %q normalises to %g, outside float32's range", ErrBadNumber, s, n)
		}
		t.x = append(t.x, float32(n))
	}
	return nil
}

// parseLabel maps a label cell to its class.
func (t *csvTable) parseLabel(s string) (int, error) {
	if c, ok := t.classes[s]; ok {
		return c, nil
	}
	n, err := strconv.Atoi(s)
	switch {
	case err != nil && t.classes != nil:
		return 0, fmt.Errorf("%w: %q is neither one of the %d class names (%s) nor a class number 0..%d", ErrBadLabel, s, t.o.Classes, listHeader(t.o.Labels), t.o.Classes-1)
	case err != nil:
		return 0, fmt.Errorf("%w: %q is not a class number 0..%d (the manifest's model names no classes)", ErrBadLabel, s, t.o.Classes-1)
	case n < 0 || n >= t.o.Classes:
		return 0, fmt.Errorf("%w: label %d is outside the %d classes 0..%d", ErrLabelRange, n, t.o.Classes, t.o.Classes-1)
	}
	return n, nil
}
