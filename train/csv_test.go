package train

import (
	"bytes"
	"fmt"
	"io/fs"
	"path/filepath"
	"testing"
)

func TestReadCSV(t *testing.T) {
	for _, tc := range []struct {
		name, file string
	}{
		{"header", "label,a,b\n1,0.5,-2\n0,3,1e-3\n2,4,5\n"},
		{"no-header", "1,0.5,-2\n0,3,1e-3\n2,4,5\n"},
		{"spaces-blank-lines-crlf", "label, a, b\r\n\r\n1, 0.5 ,-2\r\n 0,3,1e-3\r\n\r\n2,\"4\",5"},
		{"quoted-header", "\"y\",\"x,1\",\"x,2\"\n1,0.5,-2\n0,3,1e-3\n2,4,5\n"},
	} {
		for _, gz := range []bool{false, true} {
			file := []byte(tc.file)
			name := tc.name
			if gz {
				file, name = gzipBytes(t, file), name+"/gzip"
			}
			t.Run(name, func(t *testing.T) {
				d, err := ReadCSV("tab", writeTestFile(t, "data.csv", file), 3)
				if err != nil {
					t.Fatal(err)
				}
				want := Dataset{
					Name: "tab", X: []float32{0.5, -2, 3, 1e-3, 4, 5}, Y: []uint8{1, 0, 2},
					N: 3, Dim: 2, Height: 1, Width: 2, Channels: 1, Classes: 3,
				}
				if fmt.Sprint(*d) != fmt.Sprint(want) {
					t.Errorf("got  %+v\nwant %+v", *d, want)
				}
			})
		}
	}
}

// TestReadCSVHeaderIsOnlyTheFirstLine checks that a non-numeric first field
// is an error on any line but the first.
func TestReadCSVHeaderIsOnlyTheFirstLine(t *testing.T) {
	path := writeTestFile(t, "data.csv", []byte("label,x\nlabel,x\n1,2\n"))
	_, err := ReadCSV("tab", path, 2)
	requireDataErr(t, err, ErrBadNumber, path, "line 2, column 1", `label "label" is not an integer`)
}

func TestReadCSVErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		err        error
		wants      []string
	}{
		{"empty", "", ErrNoExamples, []string{"no examples"}},
		{"header-only", "label,a,b\n", ErrNoExamples, nil},
		{"label-only", "1\n2\n", ErrColumnCount, []string{"line 1", "1 column, want a label and at least one feature"}},
		{"short-row", "y,a,b\n1,2,3\n0,4\n", ErrColumnCount, []string{"line 3", "2 columns, want 3"}},
		{"long-row", "1,2,3\n\n0,4,5,6\n", ErrColumnCount, []string{"line 3", "4 columns, want 3"}},
		{"bad-feature", "y,a,b\n1,2,3\n0,4,x5\n", ErrBadNumber, []string{"line 3, column 3", `bad number "x5"`}},
		{"empty-feature", "1,,3\n", ErrBadNumber, []string{"line 1, column 2", `bad number ""`}},
		{"float32-overflow", "1,2,1e39\n", ErrBadNumber, []string{"line 1, column 3", "out of float32 range"}},
		{"nan", "1,2,3\n0,NaN,3\n", ErrNonFinite, []string{"line 2, column 2", `non-finite feature "NaN"`}},
		{"inf", "1,2,3\n0,1,+Inf\n", ErrNonFinite, []string{"line 2, column 3", "Inf"}},
		{"minus-infinity", "1,-infinity,3\n", ErrNonFinite, []string{"line 1, column 2"}},
		{"label-too-big", "y,a\n0,1\n3,1\n", ErrLabelRange, []string{"line 3, column 1", "label 3, want 0..2"}},
		{"label-negative", "0,1\n-1,1\n", ErrLabelRange, []string{"line 2, column 1", "label -1"}},
		{"label-not-integer", "0,1\n1.5,1\n", ErrBadNumber, []string{"line 2, column 1", `label "1.5" is not an integer`}},
		{"label-huge", "0,1\n99999999999999999999,1\n", ErrBadNumber, []string{"line 2, column 1"}},
		{"bare-quote", "0,1\n1,2\"x,3\n", nil, []string{"line 2", "bare \""}},
	} {
		for _, gz := range []bool{false, true} {
			file := []byte(tc.file)
			name := tc.name
			if gz {
				file, name = gzipBytes(t, file), name+"/gzip"
			}
			t.Run(name, func(t *testing.T) {
				path := writeTestFile(t, "bad.csv", file)
				_, err := ReadCSV("tab", path, 3)
				requireDataErr(t, err, tc.err, path, tc.wants...)
			})
		}
	}
}

func TestReadCSVArguments(t *testing.T) {
	path := writeTestFile(t, "ok.csv", []byte("0,1\n"))
	for _, classes := range []int{0, 1, 257} {
		_, err := ReadCSV("tab", path, classes)
		requireDataErr(t, err, nil, path, "classes, want 2..256")
	}
	missing := filepath.Join(t.TempDir(), "missing.csv")
	_, err := ReadCSV("tab", missing, 2)
	requireDataErr(t, err, fs.ErrNotExist, missing)
}

// TestReadCSVWide reads a CSV with many rows and columns, as an MNIST
// export (label then 784 pixels) would be.
func TestReadCSVWide(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("label")
	for j := range 784 {
		fmt.Fprintf(&b, ",px%d", j)
	}
	b.WriteString("\n")
	for i := range 200 {
		fmt.Fprintf(&b, "%d", i%10)
		for j := range 784 {
			fmt.Fprintf(&b, ",%d", (i+j)%256)
		}
		b.WriteString("\n")
	}
	d, err := ReadCSV("wide", writeTestFile(t, "wide.csv", b.Bytes()), 10)
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 200 || d.Dim != 784 || d.Width != 784 || d.Height != 1 {
		t.Fatalf("N=%d Dim=%d %dx%d", d.N, d.Dim, d.Height, d.Width)
	}
	if got := d.Row(199)[783]; got != float32((199+783)%256) {
		t.Errorf("Row(199)[783] = %v", got)
	}
	if d.Y[199] != 9 {
		t.Errorf("Y[199] = %d", d.Y[199])
	}
}
