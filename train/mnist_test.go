package train

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkImageSet checks an MNIST-shaped data set: size, shape, pixel range
// and the count of every label.
func checkImageSet(t *testing.T, d *Dataset, name string, n int, firstLabel uint8, counts [10]int) {
	t.Helper()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.Name != name || d.N != n || d.Dim != 784 || d.Height != 28 || d.Width != 28 || d.Channels != 1 || d.Classes != 10 {
		t.Fatalf("%s: got name %q N=%d Dim=%d %dx%dx%d classes=%d", name, d.Name, d.N, d.Dim, d.Height, d.Width, d.Channels, d.Classes)
	}
	if d.Y[0] != firstLabel {
		t.Errorf("%s: first label %d, want %d", name, d.Y[0], firstLabel)
	}
	var got [10]int
	for _, y := range d.Y {
		got[y]++
	}
	if got != counts {
		t.Errorf("%s: label counts %v, want %v", name, got, counts)
	}
	sum := 0
	for _, c := range got {
		sum += c
	}
	if sum != n {
		t.Errorf("%s: label counts sum to %d, want %d", name, sum, n)
	}
	lo, hi := d.X[0], d.X[0]
	for _, v := range d.X {
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo != 0 || hi != 1 {
		t.Errorf("%s: pixels in [%v, %v], want [0, 1]", name, lo, hi)
	}
}

// TestLoadMNIST loads the real MNIST as a user would: through the Go module
// proxy (or the module cache) by LoadMNIST("").
func TestLoadMNIST(t *testing.T) {
	start := time.Now()
	trainSet, testSet, err := LoadMNIST("")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded MNIST in %v", time.Since(start))
	checkImageSet(t, trainSet, "mnist-train", 60000, 5,
		[10]int{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949})
	checkImageSet(t, testSet, "mnist-test", 10000, 7,
		[10]int{980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009})
	// Row 0 is the well-known 5: its centre row is mostly ink.
	ink := 0
	for _, v := range trainSet.Row(0)[14*28 : 15*28] {
		if v > 0.5 {
			ink++
		}
	}
	if ink == 0 {
		t.Error("first training image has no ink on its centre row")
	}
}

// TestLoadFashionMNIST loads Fashion-MNIST from the Debian package's
// directory. The package is a test dependency: without it this test fails.
func TestLoadFashionMNIST(t *testing.T) {
	if _, err := os.Stat(FashionMNISTDir); err != nil {
		t.Fatalf("Fashion-MNIST is not installed (%v): run `apt-get install dataset-fashion-mnist`", err)
	}
	start := time.Now()
	trainSet, testSet, err := LoadFashionMNIST("")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded Fashion-MNIST in %v", time.Since(start))
	// Balanced classes; the first image of both sets is an ankle boot (9).
	checkImageSet(t, trainSet, "fashion-mnist-train", 60000, 9,
		[10]int{6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000})
	checkImageSet(t, testSet, "fashion-mnist-test", 10000, 9,
		[10]int{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000})
}

// writeMNISTLayout writes a tiny data set in MNIST's file layout to dir,
// the training files compressed and the test files not.
func writeMNISTLayout(t *testing.T, dir string) {
	t.Helper()
	files := map[string][]byte{
		"train-images-idx3-ubyte.gz": gzipBytes(t, idxBytes(0x803, []uint32{3, 28, 28}, byteRamp(3*784))),
		"train-labels-idx1-ubyte.gz": gzipBytes(t, idxBytes(0x801, []uint32{3}, []byte{5, 0, 4})),
		"t10k-images-idx3-ubyte":     idxBytes(0x803, []uint32{2, 28, 28}, byteRamp(2*784)),
		"t10k-labels-idx1-ubyte":     idxBytes(0x801, []uint32{2}, []byte{7, 2}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMNISTLayoutGzOrBare loads the MNIST layout with some files compressed
// and named .gz and others bare, through both loaders and Load.
func TestMNISTLayoutGzOrBare(t *testing.T) {
	dir := t.TempDir()
	writeMNISTLayout(t, dir)
	for _, tc := range []struct {
		name string
		load func(string) (*Dataset, *Dataset, error)
	}{
		{"mnist", LoadMNIST},
		{"fashion-mnist", LoadFashionMNIST},
		{"mnist", func(dir string) (*Dataset, *Dataset, error) { return Load("mnist", dir) }},
		{"fashion-mnist", func(dir string) (*Dataset, *Dataset, error) { return Load("fashion-mnist", dir) }},
	} {
		trainSet, testSet, err := tc.load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if trainSet.Name != tc.name+"-train" || trainSet.N != 3 || trainSet.Y[0] != 5 {
			t.Errorf("%s train: %q N=%d Y=%v", tc.name, trainSet.Name, trainSet.N, trainSet.Y)
		}
		if testSet.Name != tc.name+"-test" || testSet.N != 2 || testSet.Y[1] != 2 {
			t.Errorf("%s test: %q N=%d Y=%v", tc.name, testSet.Name, testSet.N, testSet.Y)
		}
	}
}

func TestMNISTLayoutErrors(t *testing.T) {
	dir := t.TempDir()
	writeMNISTLayout(t, dir)
	if err := os.Remove(filepath.Join(dir, "t10k-labels-idx1-ubyte")); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadMNIST(dir)
	requireDataErr(t, err, fs.ErrNotExist, dir, "neither t10k-labels-idx1-ubyte.gz nor t10k-labels-idx1-ubyte found")

	// Fashion-MNIST errors name the Debian package that provides it.
	_, _, err = LoadFashionMNIST(dir)
	requireDataErr(t, err, fs.ErrNotExist, dir, "apt-get install dataset-fashion-mnist")
	missing := filepath.Join(dir, "no-such-dir")
	_, _, err = LoadFashionMNIST(missing)
	requireDataErr(t, err, fs.ErrNotExist, missing, "apt-get install dataset-fashion-mnist")

	// A malformed file is reported as such, not as missing.
	bad := filepath.Join(dir, "train-labels-idx1-ubyte.gz")
	if err := os.WriteFile(bad, idxBytes(0x801, []uint32{3}, []byte{5, 0, 10}), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = LoadMNIST(dir)
	requireDataErr(t, err, ErrLabelRange, bad, "label 10 at index 2")
}

func TestMNISTLoadUnknownDataset(t *testing.T) {
	_, _, err := Load("cifar-10", "")
	requireDataErr(t, err, ErrUnknownDataset, "", `"cifar-10"`, "valid: fashion-mnist, mnist")
}

// TestMNISTDirNoGoCommand checks the error when go is not on PATH.
func TestMNISTDirNoGoCommand(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := MNISTDir()
	requireDataErr(t, err, nil, "", "go command", MNISTModule+"@"+MNISTVersion)
	_, _, err = LoadMNIST("")
	requireDataErr(t, err, nil, "", "go command")
}

// TestMNISTDirDownloadFails checks the error when the module cannot be
// fetched: an empty module cache and no proxy.
func TestMNISTDirDownloadFails(t *testing.T) {
	t.Setenv("GOMODCACHE", t.TempDir())
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOFLAGS", "-modcacherw")
	_, err := MNISTDir()
	requireDataErr(t, err, nil, "", "downloading MNIST", MNISTModule, "GOPROXY=off")
}

func TestMNISTDir(t *testing.T) {
	dir, err := MNISTDir()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(dir) != "data" || !strings.Contains(dir, "GoMNIST") && !strings.Contains(dir, "!go!m!n!i!s!t") {
		t.Errorf("MNISTDir() = %s", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "train-images-idx3-ubyte.gz")); errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no training images in %s", dir)
	}
}

func BenchmarkLoadMNIST(b *testing.B) {
	dir, err := MNISTDir()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := LoadMNIST(dir); err != nil {
			b.Fatal(err)
		}
	}
}
