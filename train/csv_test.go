package train

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadCSV(t *testing.T) {
	named := CSVOptions{Header: true, Label: Column{Name: "y"}, Classes: 3}
	for _, tc := range []struct {
		name, file string
		o          CSVOptions
	}{
		{"header-label-first", "y,a,b\n1,0.5,-2\n0,3,1e-3\n2,4,5\n", named},
		{"header-label-last", "a,b,y\n0.5,-2,1\n3,1e-3,0\n4,5,2\n", named},
		{"header-features-listed", "id,b,y,a,junk\n7,-2,1,0.5,x\n8,1e-3,0,3,\n9,5,2,4,?\n",
			CSVOptions{Header: true, Label: Column{Name: "y"}, Features: []Column{{Name: "a"}, {Number: 2}}, Classes: 3}},
		{"no-header-numbers", "0.5,1,-2\n3,0,1e-3\n4,2,5\n", CSVOptions{Label: Column{Number: 2}, Classes: 3}},
		{"spaces-blank-lines-crlf", "y, a, b\r\n\r\n1, 0.5 ,-2\r\n 0,3,1e-3\r\n\r\n2,\"4\",5", named},
		{"quoted-header", "\"y\",\"x,1\",\"x,2\"\n1,0.5,-2\n0,3,1e-3\n2,4,5\n", named},
		{"byte-order-mark", "\ufeffy,a,b\n1,0.5,-2\n0,3,1e-3\n2,4,5\n", named},
		{"byte-order-mark-no-header", "\ufeff0.5,1,-2\n3,0,1e-3\n4,2,5\n", CSVOptions{Label: Column{Number: 2}, Classes: 3}},
		{"semicolon", "y;a;b\n1;0.5;-2\n0;3;1e-3\n2;4;5\n", CSVOptions{Header: true, Delimiter: ';', Label: Column{Name: "y"}, Classes: 3}},
		{"tab", "y\ta\tb\n1\t0.5\t-2\n0\t3\t1e-3\n2\t4\t5\n", CSVOptions{Header: true, Delimiter: '\t', Label: Column{Name: "y"}, Classes: 3}},
		{"label-names", "y,a,b\nsetosa,0.5,-2\n0,3,1e-3\nvirginica,4,5\n",
			CSVOptions{Header: true, Label: Column{Name: "y"}, Classes: 3, Labels: []string{"0", "setosa", "virginica"}}},
	} {
		for _, gz := range []bool{false, true} {
			file := []byte(tc.file)
			name := tc.name
			if gz {
				file, name = gzipBytes(t, file), name+"/gzip"
			}
			t.Run(name, func(t *testing.T) {
				d, err := LoadCSV("tab", writeTestFile(t, "data.csv", file), tc.o)
				if err != nil {
					t.Fatal(err)
				}
				want := Dataset{
					Name: "tab", X: []float32{0.5, -2, 3, 1e-3, 4, 5}, Y: []uint8{1, 0, 2},
					N: 3, Dim: 2, Height: 2, Width: 1, Channels: 1, Classes: 3,
				}
				if fmt.Sprint(*d) != fmt.Sprint(want) {
					t.Errorf("got  %+v\nwant %+v", *d, want)
				}
			})
		}
	}
}

func TestLoadCSVNormalize(t *testing.T) {
	file := writeTestFile(t, "n.csv", []byte("y,a,b\n0,10,4\n1,20,-4\n"))
	for _, tc := range []struct {
		n    Normalization
		want []float32
	}{
		{Normalization{}, []float32{10, 4, 20, -4}},
		{Normalization{Method: NormNone}, []float32{10, 4, 20, -4}},
		{Normalization{Method: NormMinMax, Min: []float64{10, -4}, Max: []float64{20, 4}}, []float32{0, 1, 1, 0}},
		{Normalization{Method: NormMinMax, Min: []float64{0}, Max: []float64{40}}, []float32{0.25, 0.1, 0.5, -0.1}},
		{Normalization{Method: NormStandard, Mean: []float64{15, 0}, Std: []float64{5, 2}}, []float32{-1, 2, 1, -2}},
		{Normalization{Method: NormScale, Divisor: 4}, []float32{2.5, 1, 5, -1}},
	} {
		if err := tc.n.Check(2); err != nil {
			t.Fatal(err)
		}
		d, err := LoadCSV("n", file, CSVOptions{Header: true, Label: Column{Name: "y"}, Classes: 2, Normalize: tc.n})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(d.X) != fmt.Sprint(tc.want) {
			t.Errorf("%+v: got %v, want %v", tc.n, d.X, tc.want)
		}
	}
}

func TestNormalizationCheck(t *testing.T) {
	for _, tc := range []struct {
		n    Normalization
		want string
	}{
		{Normalization{Method: "zscore"}, `normalize.method: "zscore" unknown`},
		{Normalization{Method: NormMinMax, Max: []float64{1}}, "normalize.min: required for method minmax"},
		{Normalization{Method: NormMinMax, Min: []float64{0, 0, 0}, Max: []float64{1}}, "normalize.min: 3 values, want 1 (for every feature) or 2 (one per feature)"},
		{Normalization{Method: NormMinMax, Min: []float64{0, 5}, Max: []float64{1, 5}}, "normalize.max: feature 2: max 5 is not above min 5"},
		{Normalization{Method: NormStandard, Mean: []float64{0}, Std: []float64{1, 0}}, "normalize.std[1]: 0, want > 0"},
		{Normalization{Method: NormStandard, Mean: []float64{0}}, "normalize.std: required"},
		{Normalization{Method: NormScale}, "normalize.divisor: 0, want a finite non-zero number"},
	} {
		err := tc.n.Check(2)
		if err == nil || !errors.Is(err, ErrNormalization) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one containing %q", tc.n, err, tc.want)
		}
	}
}

// TestLoadCSVErrors reads hand-made malformed files: every error names the
// file, the line and, for a cell, the column by number and header name.
func TestLoadCSVErrors(t *testing.T) {
	named := CSVOptions{Header: true, Label: Column{Name: "diagnosis"}, Classes: 3}
	for _, tc := range []struct {
		name, file string
		o          CSVOptions
		err        error
		wants      []string
	}{
		{"empty", "", named, ErrNoExamples, []string{"bad.csv: no examples: the file is empty"}},
		{"blank-lines-only", "\n\n\n", named, ErrNoExamples, []string{"the file is empty"}},
		{"header-only", "age,diagnosis\n", named, ErrNoExamples, []string{"no data rows after the header"}},
		{"missing-label-column", "age,bmi,diag\n1,2,0\n", named, ErrMissingColumn,
			[]string{"bad.csv:1: ", `label column "diagnosis" is not in the header ("age", "bmi", "diag")`}},
		{"missing-feature-column", "age,bmi,diagnosis\n1,2,0\n",
			CSVOptions{Header: true, Label: Column{Name: "diagnosis"}, Features: []Column{{Name: "age"}, {Name: "weight"}}, Classes: 3},
			ErrMissingColumn, []string{"bad.csv:1: ", `feature 2 column "weight" is not in the header ("age", "bmi", "diagnosis")`}},
		{"column-number-too-big", "1,2,0\n", CSVOptions{Label: Column{Number: 4}, Classes: 3}, ErrMissingColumn,
			[]string{"bad.csv:1: ", "label column 4, but line 1 has 3 columns"}},
		{"name-without-header", "1,2,0\n", CSVOptions{Label: Column{Name: "diagnosis"}, Classes: 3}, ErrMissingColumn,
			[]string{"bad.csv:1: ", "read without a header"}},
		{"non-numeric-cell", "age,bmi,diagnosis\n31,22.5,1\n\n47,abc,0\n", named, ErrBadNumber,
			[]string{`bad.csv:4: column 2 "bmi": bad number: "abc" is not a number`}},
		{"empty-cell", "age,bmi,diagnosis\n31,,1\n", named, ErrBadNumber, []string{`bad.csv:2: column 2 "bmi": bad number: "" is not a number`}},
		{"non-numeric-no-header", "31,22.5,1\n47,x,0\n", CSVOptions{Label: Column{Number: 3}, Classes: 3}, ErrBadNumber,
			[]string{`bad.csv:2: column 2: bad number: "x" is not a number`}},
		{"nan", "age,bmi,diagnosis\n31,NaN,1\n", named, ErrNonFinite, []string{`bad.csv:2: column 2 "bmi": non-finite feature: "NaN"`}},
		{"out-of-range", "age,bmi,diagnosis\n1e400,1,1\n", named, ErrBadNumber, []string{`bad.csv:2: column 1 "age": bad number: "1e400" is out of range`}},
		{"normalised-overflow", "age,bmi,diagnosis\n1e300,1,1\n",
			CSVOptions{Header: true, Label: Column{Name: "diagnosis"}, Classes: 3, Normalize: Normalization{Method: NormScale, Divisor: 1e-300}},
			ErrBadNumber, []string{`bad.csv:2: column 1 "age": bad number: "1e300" normalises to`}},
		{"label-outside-classes", "age,bmi,diagnosis\n31,22.5,1\n47,30,3\n", named, ErrLabelRange,
			[]string{`bad.csv:3: column 3 "diagnosis": label out of range: label 3 is outside the 3 classes 0..2`}},
		{"label-negative", "age,bmi,diagnosis\n31,22.5,-1\n", named, ErrLabelRange, []string{`bad.csv:2: column 3 "diagnosis"`, "label -1"}},
		{"label-not-a-number", "age,bmi,diagnosis\n31,22.5,benign\n", named, ErrBadLabel,
			[]string{`bad.csv:2: column 3 "diagnosis": bad label: "benign" is not a class number 0..2`}},
		{"label-unknown-name", "age,bmi,diagnosis\n31,22.5,benign\n32,1,unsure\n",
			CSVOptions{Header: true, Label: Column{Name: "diagnosis"}, Classes: 3, Labels: []string{"benign", "malignant", "other"}}, ErrBadLabel,
			[]string{`bad.csv:3: column 3 "diagnosis": bad label: "unsure" is neither one of the 3 class names ("benign", "malignant", "other")`}},
		{"ragged-short", "age,bmi,diagnosis\n31,22.5,1\n47,0\n", named, ErrColumnCount,
			[]string{"bad.csv:3: wrong column count: 2 columns, want 3 (as the header, line 1)"}},
		{"ragged-long", "31,22.5,1\n\n47,1,0,9\n", CSVOptions{Label: Column{Number: 3}, Classes: 3}, ErrColumnCount,
			[]string{"bad.csv:3: wrong column count: 4 columns, want 3 (as the first row, line 1)"}},
		{"label-only", "diagnosis\n1\n", named, ErrColumnCount, []string{"bad.csv:1: ", "want at least one feature column"}},
		{"feature-is-label", "age,diagnosis\n1,2\n",
			CSVOptions{Header: true, Label: Column{Name: "diagnosis"}, Features: []Column{{Number: 2}}, Classes: 3},
			nil, []string{`bad.csv:1: column 2 "diagnosis": named as a feature (features[0]) and as the label`}},
		{"feature-twice", "age,diagnosis\n1,2\n",
			CSVOptions{Header: true, Label: Column{Name: "diagnosis"}, Features: []Column{{Name: "age"}, {Number: 1}}, Classes: 3},
			nil, []string{`bad.csv:1: column 1 "age": named twice as a feature (features[0] and features[1])`}},
		{"ambiguous-name", "age,age,diagnosis\n1,2,0\n", named.with(Column{Name: "age"}), nil,
			[]string{`bad.csv:1: column 2 "age": feature 1 column "age" is ambiguous`}},
		{"normalisation-of-other-features", "age,bmi,diagnosis\n1,2,0\n",
			CSVOptions{Header: true, Label: Column{Name: "diagnosis"}, Classes: 3, Normalize: Normalization{Method: NormMinMax, Min: []float64{0, 0, 0}, Max: []float64{1}}},
			ErrNormalization, []string{"bad.csv:1: 2 features: bad normalisation: normalize.min: 3 values, want 1 (for every feature) or 2 (one per feature)"}},
		{"bare-quote", "age,bmi,diagnosis\n1,2\"x,3\n", named, csv.ErrBareQuote, []string{"bad.csv:2: character 4: bare \""}},
	} {
		for _, gz := range []bool{false, true} {
			file := []byte(tc.file)
			name := tc.name
			if gz {
				file, name = gzipBytes(t, file), name+"/gzip"
			}
			t.Run(name, func(t *testing.T) {
				path := writeTestFile(t, "bad.csv", file)
				_, err := LoadCSV("tab", path, tc.o)
				requireDataErr(t, err, tc.err, path, tc.wants...)
				var ce *CSVError
				if !errors.As(err, &ce) || ce.Path != path {
					t.Errorf("error %v is not a *CSVError naming %s", err, path)
				}
			})
		}
	}
}

// with is o reading only the features fs.
func (o CSVOptions) with(fs ...Column) CSVOptions {
	o.Features = fs
	return o
}

func TestLoadCSVArguments(t *testing.T) {
	path := writeTestFile(t, "ok.csv", []byte("0,1\n"))
	for _, classes := range []int{0, 1, 257} {
		_, err := LoadCSV("tab", path, CSVOptions{Label: Column{Number: 1}, Classes: classes})
		requireDataErr(t, err, nil, path, "classes, want 2..256")
	}
	_, err := LoadCSV("tab", path, CSVOptions{Label: Column{Number: 1}, Classes: 2, Labels: []string{"a"}})
	requireDataErr(t, err, nil, path, "1 label names for 2 classes")
	_, err = LoadCSV("tab", path, CSVOptions{Label: Column{Number: 1}, Classes: 2, Delimiter: '"'})
	requireDataErr(t, err, nil, path, "delimiter")
	missing := filepath.Join(t.TempDir(), "missing.csv")
	_, err = LoadCSV("tab", missing, CSVOptions{Label: Column{Number: 1}, Classes: 2})
	requireDataErr(t, err, fs.ErrNotExist, missing)
}

// TestLoadCSVWide reads a CSV with many rows and columns, as an MNIST
// export (label then 784 pixels) would be.
func TestLoadCSVWide(t *testing.T) {
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
	d, err := LoadCSV("wide", writeTestFile(t, "wide.csv", b.Bytes()), CSVOptions{Header: true, Label: Column{Name: "label"}, Classes: 10})
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 200 || d.Dim != 784 || d.Height != 784 || d.Width != 1 {
		t.Fatalf("N=%d Dim=%d %dx%d", d.N, d.Dim, d.Height, d.Width)
	}
	if got := d.Row(199)[783]; got != float32((199+783)%256) {
		t.Errorf("Row(199)[783] = %v", got)
	}
	if d.Y[199] != 9 {
		t.Errorf("Y[199] = %d", d.Y[199])
	}
	// A missing column in a long header: the list is cut.
	_, err = LoadCSV("wide", writeTestFile(t, "wide.csv", b.Bytes()), CSVOptions{Header: true, Label: Column{Name: "digit"}, Classes: 10})
	if err == nil || !strings.Contains(err.Error(), `"px10", ... 785 columns in all`) {
		t.Errorf("error %v", err)
	}
}

func TestHoldout(t *testing.T) {
	tr, val, err := Holdout(10, 0.2, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr) != 8 || len(val) != 2 {
		t.Fatalf("%d train, %d validation", len(tr), len(val))
	}
	seen := map[int]bool{}
	for _, i := range append(append([]int{}, tr...), val...) {
		if seen[i] || i < 0 || i >= 10 {
			t.Fatalf("index %d twice or out of range", i)
		}
		seen[i] = true
	}
	tr2, val2, _ := Holdout(10, 0.2, 7)
	if fmt.Sprint(tr2, val2) != fmt.Sprint(tr, val) {
		t.Error("the same seed gave another split")
	}
	_, val3, _ := Holdout(1000, 0.2, 8)
	_, val4, _ := Holdout(1000, 0.2, 7)
	if fmt.Sprint(val3) == fmt.Sprint(val4) {
		t.Error("another seed gave the same split")
	}
	if _, v, _ := Holdout(3, 0.01, 1); len(v) != 1 {
		t.Errorf("a tiny fraction holds out %d, want 1", len(v))
	}
	if tr, _, _ := Holdout(3, 0.99, 1); len(tr) != 1 {
		t.Errorf("a large fraction leaves %d to train, want 1", len(tr))
	}
	for _, f := range []float64{0, 1, -0.1} {
		if _, _, err := Holdout(10, f, 1); err == nil {
			t.Errorf("fraction %v accepted", f)
		}
	}
	if _, _, err := Holdout(1, 0.5, 1); err == nil {
		t.Error("one example split")
	}
}

func TestSubsetAndCheckSchema(t *testing.T) {
	d := &Dataset{Name: "t", X: []float32{1, 2, 3, 4, 5, 6}, Y: []uint8{0, 1, 0}, N: 3, Dim: 2, Height: 2, Width: 1, Channels: 1, Classes: 2}
	s := d.Subset("s", []int{2, 0})
	if fmt.Sprintf("%v %v %d %s", s.X, s.Y, s.N, s.Name) != "[5 6 1 2] [0 0] 2 s" || s.Validate() != nil {
		t.Errorf("subset %+v", s)
	}
	if err := CheckSchema(d, Spec{Arch: ArchLogReg, Height: 2, Width: 1, Channels: 1, Classes: 2}); err != nil {
		t.Error(err)
	}
	err := CheckSchema(d, Spec{Arch: ArchLogReg, Height: 28, Width: 28, Channels: 1, Classes: 10})
	for _, want := range []string{"model.height: the manifest says 28, the data set t has 2", "model.width: the manifest says 28, the data set t has 1",
		"model.classes: the manifest says 10, the data set t has 2"} {
		if err == nil || !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want one containing %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "model.channels") {
		t.Errorf("error %v names channels, which fit", err)
	}
}
