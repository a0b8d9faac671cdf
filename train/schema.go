package train

import (
	"errors"
	"fmt"
	"strings"
)

// ErrSchema matches the errors of CheckSchema.
var ErrSchema = errors.New("data does not fit the model")

// CheckSchema checks that d is the data spec's model takes: the same input
// shape (Height x Width x Channels) and the same number of classes. Nothing
// is reshaped: a 784-feature table does not feed a 28x28 model. Every
// mismatch is reported, naming the manifest's field and both values.
func CheckSchema(d *Dataset, spec Spec) error {
	var bad []string
	for _, f := range []struct {
		field      string
		model, got int
	}{
		{"model.height", spec.Height, d.Height},
		{"model.width", spec.Width, d.Width},
		{"model.channels", spec.Channels, d.Channels},
		{"model.classes", spec.Classes, d.Classes},
	} {
		if f.model != f.got {
			bad = append(bad, fmt.Sprintf("%s: the manifest says %d, the data set %s has %d", f.field, f.model, d.Name, f.got))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("train: %w: %s (the data %dx%dx%d with %d classes, the model %dx%dx%d with %d classes)", ErrSchema, strings.Join(bad, "; "),
		d.Height, d.Width, d.Channels, d.Classes, spec.Height, spec.Width, spec.Channels, spec.Classes)
}
