package train

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Sentinel errors for malformed CSV files, wrapped like those of the IDX
// readers in a message naming the file, line and column.
var (
	// ErrBadNumber reports a field that is not a number (or a label that
	// is not an integer).
	ErrBadNumber = errors.New("bad number")
	// ErrColumnCount reports a row whose number of columns differs from
	// the first data row's, or a row with no feature columns.
	ErrColumnCount = errors.New("wrong column count")
	// ErrNonFinite reports a NaN or infinite feature.
	ErrNonFinite = errors.New("non-finite feature")
	// ErrNoExamples reports a file with no data rows.
	ErrNoExamples = errors.New("no examples (no data rows)")
)

// ReadCSV reads a labelled tabular data set. Each row is
//
//	label,f1,...,fD
//
// with an integer label in [0, classes) and D float features, kept as given
// (not rescaled). D is taken from the first data row and every row must
// match it. The first line is a header, and skipped, if and only if its first
// field is not a number. Blank lines are ignored, fields may be quoted and
// surrounded by spaces, and a gzip-compressed file is read transparently.
// The data set has Height 1, Width D and one channel.
//
// Errors name the file, and the line and column (1-based, counting the
// label as column 1) of the offending field.
func ReadCSV(name, path string, classes int) (*Dataset, error) {
	if classes < 2 || classes > 256 {
		return nil, fmt.Errorf("train: %s: %d classes, want 2..256", path, classes)
	}
	f, err := openData(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	r := csv.NewReader(f)
	r.FieldsPerRecord = -1 // counted here, for a clearer message
	r.TrimLeadingSpace = true
	r.ReuseRecord = true

	var (
		x     []float32
		y     []uint8
		dim   = -1
		first = true
	)
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("train: %s: %w", path, err)
		}
		line, _ := r.FieldPos(0)
		if first {
			first = false
			if _, err := strconv.ParseFloat(strings.TrimSpace(rec[0]), 64); err != nil {
				continue // header
			}
		}
		if dim < 0 {
			if len(rec) < 2 {
				return nil, fmt.Errorf("train: %s: line %d: %w: %d column, want a label and at least one feature", path, line, ErrColumnCount, len(rec))
			}
			dim = len(rec) - 1
		}
		if len(rec) != dim+1 {
			return nil, fmt.Errorf("train: %s: line %d: %w: %d columns, want %d (a label and %d features, as in the first data row)", path, line, ErrColumnCount, len(rec), dim+1, dim)
		}

		field := strings.TrimSpace(rec[0])
		label, err := strconv.Atoi(field)
		switch {
		case err != nil:
			return nil, fmt.Errorf("train: %s: line %d, column 1: %w: label %q is not an integer", path, line, ErrBadNumber, field)
		case label < 0 || label >= classes:
			return nil, fmt.Errorf("train: %s: line %d, column 1: %w: label %d, want 0..%d", path, line, ErrLabelRange, label, classes-1)
		}
		y = append(y, uint8(label))

		for j, s := range rec[1:] {
			field := strings.TrimSpace(s)
			v, err := strconv.ParseFloat(field, 32)
			switch {
			case errors.Is(err, strconv.ErrRange):
				return nil, fmt.Errorf("train: %s: line %d, column %d: %w: %q is out of float32 range", path, line, j+2, ErrBadNumber, field)
			case err != nil:
				return nil, fmt.Errorf("train: %s: line %d, column %d: %w %q", path, line, j+2, ErrBadNumber, field)
			case math.IsNaN(v) || math.IsInf(v, 0):
				return nil, fmt.Errorf("train: %s: line %d, column %d: %w %q", path, line, j+2, ErrNonFinite, field)
			}
			x = append(x, float32(v))
		}
	}
	if len(y) == 0 {
		return nil, fmt.Errorf("train: %s: %w", path, ErrNoExamples)
	}
	d := &Dataset{
		Name: name, X: x, Y: y, N: len(y), Dim: dim,
		Height: 1, Width: dim, Channels: 1, Classes: classes,
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return d, nil
}
