package train

import "fmt"

// Dataset is a labelled data set held in memory: N examples of Dim float32
// features each, row-major in X, with labels in [0, Classes).
//
// Image data sets carry their shape (Height x Width x Channels == Dim, stored
// channel-last); tabular data sets (CSV) have Height 1, Width Dim, Channels 1.
// Features of image data sets are scaled to [0, 1].
type Dataset struct {
	Name     string
	X        []float32
	Y        []uint8
	N        int
	Dim      int
	Height   int
	Width    int
	Channels int
	Classes  int
}

// Row returns the features of example i, a view into X.
func (d *Dataset) Row(i int) []float32 { return d.X[i*d.Dim : (i+1)*d.Dim] }

// Validate checks that the data set's fields are consistent with each other.
func (d *Dataset) Validate() error {
	switch {
	case d.N <= 0:
		return fmt.Errorf("train: data set %q: no examples", d.Name)
	case d.Dim <= 0:
		return fmt.Errorf("train: data set %q: feature dimension %d", d.Name, d.Dim)
	case d.Height*d.Width*d.Channels != d.Dim:
		return fmt.Errorf("train: data set %q: shape %dx%dx%d does not match dimension %d", d.Name, d.Height, d.Width, d.Channels, d.Dim)
	case len(d.X) != d.N*d.Dim:
		return fmt.Errorf("train: data set %q: %d feature values, want %d", d.Name, len(d.X), d.N*d.Dim)
	case len(d.Y) != d.N:
		return fmt.Errorf("train: data set %q: %d labels, want %d", d.Name, len(d.Y), d.N)
	case d.Classes < 2 || d.Classes > 256:
		return fmt.Errorf("train: data set %q: %d classes, want 2..256", d.Name, d.Classes)
	}
	for i, y := range d.Y {
		if int(y) >= d.Classes {
			return fmt.Errorf("train: data set %q: example %d: label %d out of range [0,%d)", d.Name, i, y, d.Classes)
		}
	}
	return nil
}
