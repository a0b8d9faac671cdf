package member

import (
	"fmt"
	"path/filepath"

	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/nodeconfig"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/local"
)

// localData is what the built-in trainer trains on and the evaluator
// scores with, read from the node config's data section and checked
// against the manifest's data schema.
type localData struct {
	// train is the training set (without a held-out validation split),
	// part this node's examples of it.
	train *train.Dataset
	part  []int
	// eval is the test set, or the validation split held out of the
	// training set when the data set has no test set.
	eval *train.Dataset
	// evalKind is "test" or "validation".
	evalKind string
	// source names where the data came from, for the log.
	source string
}

// loadData reads the configured data set and checks it against the
// manifest's model before the node takes part: the input shape (a CSV of F
// features is F x 1 x 1) and the classes must match, with nothing
// reshaped. Then it holds out the validation split, if the data set has no
// test set, and takes this node's part of the rest.
func loadData(cfg *nodeconfig.Config, man *manifest.Manifest) (*localData, error) {
	dc := cfg.Data
	spec := local.Spec(man)
	var (
		trainSet, testSet *train.Dataset
		source            string
		err               error
	)
	switch dc.Dataset {
	case "idx":
		x := dc.IDX
		source = x.TrainImages
		trainSet, err = train.LoadIDX(datasetName(x.TrainImages), x.TrainImages, x.TrainLabels, spec.Classes)
		if err == nil && x.TestImages != "" {
			testSet, err = train.LoadIDX(datasetName(x.TestImages), x.TestImages, x.TestLabels, spec.Classes)
		}
	case "csv":
		c := dc.CSV
		source = c.File
		o := csvOptions(c, man)
		trainSet, err = train.LoadCSV(datasetName(c.File), c.File, o)
		if err == nil && c.TestFile != "" {
			testSet, err = train.LoadCSV(datasetName(c.TestFile), c.TestFile, o)
		}
	default:
		source = dc.Dataset
		trainSet, testSet, err = train.Load(dc.Dataset, dc.Dir)
	}
	if err != nil {
		return nil, fmt.Errorf("data.%s: %w", dc.Dataset, err)
	}
	for _, d := range []*train.Dataset{trainSet, testSet} {
		if d == nil {
			continue
		}
		if err := train.CheckSchema(d, spec); err != nil {
			hint := ""
			if dc.Dataset == "csv" {
				hint = fmt.Sprintf(" (a CSV of %d features feeds a model of height %d, width 1, channels 1; set data.csv.features to choose other columns)", d.Dim, d.Dim)
			}
			return nil, fmt.Errorf("data (manifest %s): %w%s", cfg.Manifest, err, hint)
		}
	}
	ld := &localData{train: trainSet, eval: testSet, evalKind: "test", source: source}
	if testSet == nil {
		frac := dc.ValidationFraction()
		trainIdx, valIdx, err := train.Holdout(trainSet.N, frac, dc.Validation.Seed)
		if err != nil {
			return nil, fmt.Errorf("data.validation: %s: %w", trainSet.Name, err)
		}
		ld.train = trainSet.Subset(trainSet.Name, trainIdx)
		ld.eval = trainSet.Subset(trainSet.Name+"-validation", valIdx)
		ld.evalKind = "validation"
	}
	parts, err := local.Partition(ld.train, dc.Partition, dc.Members, dc.Shards, dc.Alpha, dc.Seed)
	if err != nil {
		return nil, fmt.Errorf("data: %s: %w", ld.train.Name, err)
	}
	ld.part = parts[dc.Index]
	return ld, nil
}

// csvOptions are the reader's options of a node config's CSV section, with
// the manifest's classes and class names.
func csvOptions(c nodeconfig.CSV, man *manifest.Manifest) train.CSVOptions {
	o := train.CSVOptions{
		Header:    c.Header,
		Delimiter: c.Rune(),
		Label:     train.Column{Name: c.Label.Name, Number: c.Label.Number},
		Classes:   man.Model.Classes,
		Labels:    man.Model.Labels,
		Normalize: train.Normalization{
			Method: c.Normalize.Method,
			Min:    c.Normalize.Min, Max: c.Normalize.Max,
			Mean: c.Normalize.Mean, Std: c.Normalize.Std,
			Divisor: c.Normalize.Divisor,
		},
	}
	for _, f := range c.Features {
		o.Features = append(o.Features, train.Column{Name: f.Name, Number: f.Number})
	}
	return o
}

// datasetName names a data set by its file.
func datasetName(path string) string { return filepath.Base(path) }
