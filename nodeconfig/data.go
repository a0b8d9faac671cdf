package nodeconfig

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Defaults of the data fields a node config leaves out.
const (
	DefaultDelimiter = ","
	DefaultNormalize = "none"
	// DefaultValidationFraction is the part of a data set without a test
	// set held out for local validation when validation.fraction is 0.
	DefaultValidationFraction = 0.2
)

// Normalisations are the accepted values of data.csv.normalize.method.
var Normalisations = []string{"none", "minmax", "standard", "scale"}

// Data is the built-in trainer's local data: one of the built-in image data
// sets (MNIST, Fashion-MNIST: a stand-in for an institution's own data,
// evaluated on its test set), or the institution's own data set as IDX
// files or a CSV file. The training set is split into Members parts of
// which this node trains on part Index (one part, the whole set, by
// default). The evaluator uses the test set, or, when there is none, a
// held-out validation split of the training set.
type Data struct {
	// Dataset is mnist, fashion-mnist, idx (the IDX section) or csv (the
	// CSV section). Default mnist.
	Dataset string `yaml:"dataset"`
	// Dir holds mnist's or fashion-mnist's four IDX files; "" finds them
	// as the simulator does (MNIST from the Go module cache, Fashion-MNIST
	// from /usr/share/datasets/fashion-mnist).
	Dir string `yaml:"dir"`
	// Partition is iid, shards or dirichlet. Default iid.
	Partition string `yaml:"partition"`
	// Members is how many parts the training set is split into, >= 1.
	// Default 1 (the whole training set).
	Members int `yaml:"members"`
	// Index is this node's part, 0 <= Index < Members. Default 0.
	Index int `yaml:"index"`
	// Seed seeds the partition and local training. Default 1.
	Seed uint64 `yaml:"seed"`
	// Alpha is the Dirichlet concentration for partition dirichlet, > 0.
	// Default 0.5.
	Alpha float64 `yaml:"alpha"`
	// Shards is the number of shards per member for partition shards,
	// >= 1. Default 2.
	Shards int `yaml:"shards"`
	// IDX are the files of dataset idx.
	IDX IDX `yaml:"idx"`
	// CSV is the file of dataset csv and how to read it.
	CSV CSV `yaml:"csv"`
	// Validation is the held-out split of a data set without a test set.
	Validation Validation `yaml:"validation"`
}

// IDX is an institution's data set as IDX files (the MNIST format:
// unsigned-byte images n x height x width, one channel, scaled to [0, 1];
// unsigned-byte labels), each gzip-compressed or not.
type IDX struct {
	// TrainImages and TrainLabels are the training set. Required.
	TrainImages string `yaml:"train_images"`
	TrainLabels string `yaml:"train_labels"`
	// TestImages and TestLabels are the test set the evaluator uses; both
	// or neither. Without them a validation split is held out.
	TestImages string `yaml:"test_images"`
	TestLabels string `yaml:"test_labels"`
}

// CSV is an institution's data set as a CSV file: one example per row, a
// label column and numeric feature columns. F features feed a model whose
// input is F x 1 x 1 (height F, width 1, channels 1 in the manifest).
type CSV struct {
	// File is the CSV file (gzip-compressed or not). Required.
	File string `yaml:"file"`
	// TestFile is an optional test set laid out as File; without it a
	// validation split of File is held out.
	TestFile string `yaml:"test_file"`
	// Header says the first line names the columns. Default true.
	Header bool `yaml:"header"`
	// Delimiter is the one character between fields. Default ",".
	Delimiter string `yaml:"delimiter"`
	// Label is the label column: its name in the header, or its number
	// (1 is the first column). Required. A label is a class number
	// 0..classes-1, or one of the manifest's model.labels.
	Label Column `yaml:"label"`
	// Features are the feature columns, by name or number, in the order
	// the model sees them; empty: every column but the label.
	Features []Column `yaml:"features"`
	// Normalize is how each feature is mapped before training.
	Normalize Normalize `yaml:"normalize"`
}

// Normalize is a normalisation stated in the config, never estimated from
// the data, so that every member normalises alike. Each list holds one
// value, for every feature, or one per feature.
type Normalize struct {
	// Method is none (the default), minmax ((v-min)/(max-min)), standard
	// ((v-mean)/std) or scale (v/divisor).
	Method string `yaml:"method"`
	// Min and Max are minmax's bounds.
	Min []float64 `yaml:"min"`
	Max []float64 `yaml:"max"`
	// Mean and Std are standard's.
	Mean []float64 `yaml:"mean"`
	Std  []float64 `yaml:"std"`
	// Divisor is scale's.
	Divisor float64 `yaml:"divisor"`
}

// Validation is the held-out split of a data set that has no test set: the
// evaluator scores each applied model on it, and the trainer never sees it.
type Validation struct {
	// Fraction is the part held out, 0 < Fraction < 1; 0 (the default) is
	// DefaultValidationFraction. It may be set only for a data set
	// without a test set.
	Fraction float64 `yaml:"fraction"`
	// Seed seeds the split. Default 1.
	Seed uint64 `yaml:"seed"`
}

// Column names a CSV column by its header name or by its number (1 is the
// first column): `label: diagnosis` or `label: 3`.
type Column struct {
	// Name is the column's header name; "" when it is named by number.
	Name string
	// Number is the column's 1-based number; 0 when it is named by name.
	Number int
	// bad describes a value that is neither ("a list", "!!int 0").
	bad string
}

// UnmarshalYAML reads a string as a name and an integer as a number; any
// other value is kept as a problem Validate reports with the field's line.
func (c *Column) UnmarshalYAML(n *yaml.Node) error {
	*c = Column{}
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!str":
			c.Name = n.Value
			return nil
		case "!!int":
			if v, err := strconv.Atoi(n.Value); err == nil && v >= 1 {
				c.Number = v
				return nil
			}
		}
	}
	switch n.Kind {
	case yaml.MappingNode:
		c.bad = "a mapping"
	case yaml.SequenceNode:
		c.bad = "a list"
	default:
		c.bad = n.ShortTag() + " " + strconv.Quote(n.Value)
	}
	return nil
}

// IsSet reports whether the column names anything.
func (c Column) IsSet() bool { return c.Name != "" || c.Number > 0 }

func (c Column) String() string {
	if c.Name != "" {
		return strconv.Quote(c.Name)
	}
	return strconv.Itoa(c.Number)
}

// HasTest reports whether the data set has a test set of its own: the
// built-in data sets, IDX test files, a CSV test file.
func (d *Data) HasTest() bool {
	switch d.Dataset {
	case "idx":
		return d.IDX.TestImages != ""
	case "csv":
		return d.CSV.TestFile != ""
	}
	return true
}

// ValidationFraction is the part of the training set held out for the
// evaluator: 0 when the data set has a test set.
func (d *Data) ValidationFraction() float64 {
	switch {
	case d.HasTest():
		return 0
	case d.Validation.Fraction > 0:
		return d.Validation.Fraction
	}
	return DefaultValidationFraction
}

// paths are the data's file fields, which Load resolves against the
// config's directory.
func (d *Data) paths() []*string {
	return []*string{&d.Dir, &d.IDX.TrainImages, &d.IDX.TrainLabels, &d.IDX.TestImages, &d.IDX.TestLabels, &d.CSV.File, &d.CSV.TestFile}
}

func (d *Data) validate(v *validator) {
	builtin := d.Dataset == "mnist" || d.Dataset == "fashion-mnist"
	if !slices.Contains(Datasets, d.Dataset) {
		v.bad("data.dataset", "%q unknown, want one of %s", d.Dataset, strings.Join(Datasets, ", "))
	}
	if !slices.Contains(Partitions, d.Partition) {
		v.bad("data.partition", "%q unknown, want one of %s", d.Partition, strings.Join(Partitions, ", "))
	}
	if d.Members < 1 {
		v.bad("data.members", "%d, want >= 1", d.Members)
	} else if d.Index < 0 || d.Index >= d.Members {
		v.bad("data.index", "%d, want 0..%d (one of data.members parts)", d.Index, d.Members-1)
	}
	if d.Partition == "dirichlet" && !(d.Alpha > 0 && !math.IsInf(d.Alpha, 0)) {
		v.bad("data.alpha", "%v, want > 0 for partition dirichlet", d.Alpha)
	}
	if d.Partition == "shards" && d.Shards < 1 {
		v.bad("data.shards", "%d, want >= 1 for partition shards", d.Shards)
	}
	if d.Dir != "" && !builtin {
		v.bad("data.dir", "set, but data.dataset is %s; dir holds the files of mnist or fashion-mnist (name your own files under data.%s)", d.Dataset, d.Dataset)
	}
	if d.Dataset != "idx" && d.IDX != (IDX{}) {
		v.bad("data.idx", "set, but data.dataset is %s; set dataset: idx to train on these files", d.Dataset)
	}
	if d.Dataset != "csv" && !d.CSV.isDefault() {
		v.bad("data.csv", "set, but data.dataset is %s; set dataset: csv to train on this file", d.Dataset)
	}
	switch d.Dataset {
	case "idx":
		d.IDX.validate(v)
	case "csv":
		d.CSV.validate(v)
	}
	switch f := d.Validation.Fraction; {
	case !(f >= 0 && f < 1):
		v.bad("data.validation.fraction", "%v, want 0 < fraction < 1 (0: %v)", f, DefaultValidationFraction)
	case f > 0 && d.HasTest():
		v.bad("data.validation.fraction", "%v, but the data set has a test set, which the evaluator uses; remove one of the two", f)
	}
}

func (x *IDX) validate(v *validator) {
	if strings.TrimSpace(x.TrainImages) == "" {
		v.bad("data.idx.train_images", "required for dataset idx (an IDX images file, n x height x width unsigned bytes)")
	}
	if strings.TrimSpace(x.TrainLabels) == "" {
		v.bad("data.idx.train_labels", "required for dataset idx (an IDX labels file)")
	}
	switch {
	case x.TestImages != "" && x.TestLabels == "":
		v.bad("data.idx.test_labels", "required with data.idx.test_images (both or neither)")
	case x.TestImages == "" && x.TestLabels != "":
		v.bad("data.idx.test_images", "required with data.idx.test_labels (both or neither)")
	}
}

// isDefault reports whether the CSV section holds only its defaults.
func (c *CSV) isDefault() bool {
	def := Default().Data.CSV
	return c.File == "" && c.TestFile == "" && c.Header == def.Header && c.Delimiter == def.Delimiter && !c.Label.IsSet() && c.Label.bad == "" &&
		len(c.Features) == 0 && c.Normalize.Method == def.Normalize.Method && c.Normalize.isEmpty()
}

// Rune is the delimiter as one character (valid after Validate).
func (c *CSV) Rune() rune {
	r, _ := utf8.DecodeRuneInString(c.Delimiter)
	return r
}

func (c *CSV) validate(v *validator) {
	if strings.TrimSpace(c.File) == "" {
		v.bad("data.csv.file", "required for dataset csv (a CSV file, one example per row)")
	}
	if r, size := utf8.DecodeRuneInString(c.Delimiter); size == 0 || size != len(c.Delimiter) || r == utf8.RuneError || r == '"' || r == '\r' || r == '\n' {
		v.bad("data.csv.delimiter", "%q, want one character other than a quote or a line break (\",\", \";\", \"\\t\")", c.Delimiter)
	}
	checkColumn := func(field string, col Column) {
		switch {
		case col.bad != "":
			v.bad(field, "got %s, want a column name (a string) or number (1 is the first column)", col.bad)
		case col.Name != "" && !c.Header:
			v.bad(field, "%q names a column, but data.csv.header is false; name it by number (1 is the first column)", col.Name)
		case col.Name != "" && strings.TrimSpace(col.Name) != col.Name:
			v.bad(field, "%q has spaces around it; header names are compared without them", col.Name)
		}
	}
	if !c.Label.IsSet() && c.Label.bad == "" {
		v.bad("data.csv.label", "required for dataset csv: the label column's name (with a header) or number (1 is the first column)")
	}
	checkColumn("data.csv.label", c.Label)
	seen := map[Column]int{}
	for i, col := range c.Features {
		field := fmt.Sprintf("data.csv.features[%d]", i)
		checkColumn(field, col)
		if !col.IsSet() {
			continue
		}
		if col == c.Label {
			v.bad(field, "%s is the label column", col)
		} else if j, dup := seen[col]; dup {
			v.bad(field, "%s duplicates data.csv.features[%d]", col, j)
		} else {
			seen[col] = i
		}
	}
	c.Normalize.validate(v)
}

func (n *Normalize) isEmpty() bool {
	return len(n.Min) == 0 && len(n.Max) == 0 && len(n.Mean) == 0 && len(n.Std) == 0 && n.Divisor == 0
}

func (n *Normalize) validate(v *validator) {
	const at = "data.csv.normalize."
	params := []struct {
		name string
		vs   []float64
	}{{"min", n.Min}, {"max", n.Max}, {"mean", n.Mean}, {"std", n.Std}}
	uses := map[string][]string{"none": nil, "minmax": {"min", "max"}, "standard": {"mean", "std"}, "scale": {"divisor"}}
	want, ok := uses[n.Method]
	if !ok {
		v.bad(at+"method", "%q unknown, want one of %s", n.Method, strings.Join(Normalisations, ", "))
		return
	}
	for _, p := range params {
		for i, x := range p.vs {
			if math.IsInf(x, 0) {
				v.bad(fmt.Sprintf("%s%s[%d]", at, p.name, i), "%v, want a finite number", x)
			}
		}
		switch used := slices.Contains(want, p.name); {
		case used && len(p.vs) == 0:
			v.bad(at+p.name, "required for method %s: a list of one value (for every feature) or one per feature", n.Method)
		case !used && len(p.vs) > 0:
			v.bad(at+p.name, "set, but method %s does not use it", n.Method)
		}
	}
	switch d := n.Divisor; {
	case n.Method == "scale" && (d == 0 || math.IsInf(d, 0)):
		v.bad(at+"divisor", "%v, want a finite non-zero number for method scale", d)
	case n.Method != "scale" && d != 0:
		v.bad(at+"divisor", "set, but method %s does not use it", n.Method)
	}
	if n.Method == "minmax" && len(n.Min) > 1 && len(n.Max) > 1 && len(n.Min) != len(n.Max) {
		v.bad(at+"max", "%d values, but min has %d; want one value or one per feature in each", len(n.Max), len(n.Min))
	}
	if n.Method == "standard" {
		for i, s := range n.Std {
			if !(s > 0) {
				v.bad(fmt.Sprintf("%sstd[%d]", at, i), "%v, want > 0", s)
			}
		}
	}
	if n.Method == "minmax" && len(n.Min) > 0 && len(n.Max) > 0 && (len(n.Min) == 1 || len(n.Max) == 1 || len(n.Min) == len(n.Max)) {
		for j := range max(len(n.Min), len(n.Max)) {
			if lo, hi := pick(n.Min, j), pick(n.Max, j); !(hi > lo) {
				v.bad(fmt.Sprintf("%smax[%d]", at, min(j, len(n.Max)-1)), "%v is not above min %v", hi, lo)
				break
			}
		}
	}
}

// pick is vs[j], or vs[0] for a list of one value.
func pick(vs []float64, j int) float64 {
	if len(vs) == 1 {
		return vs[0]
	}
	return vs[j]
}
