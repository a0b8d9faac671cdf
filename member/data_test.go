package member

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/nodeconfig"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/local"
)

var (
	mnistOnce sync.Once
	mnist     *train.Dataset
	mnistErr  error
)

// mnistTest is MNIST's test set (10,000 images: a sixth of the training
// set's reading time, which counts under the race detector), read from the
// Go module proxy's copy as train.Load reads it.
func mnistTest(t *testing.T) *train.Dataset {
	t.Helper()
	mnistOnce.Do(func() {
		var dir string
		if dir, mnistErr = train.MNISTDir(); mnistErr == nil {
			mnist, mnistErr = train.LoadIDX("mnist-test", filepath.Join(dir, "t10k-images-idx3-ubyte.gz"), filepath.Join(dir, "t10k-labels-idx1-ubyte.gz"), 10)
		}
	})
	require.NoError(t, mnistErr)
	return mnist
}

// writeMNISTCSV exports MNIST test examples lo..hi-1 as a data owner
// would: the common "label,1x1,...,28x28" layout, a header, the raw pixel
// values 0..255 (MNIST's bytes, which train.Load scales by 1/255).
func writeMNISTCSV(t *testing.T, path string, lo, hi int) {
	t.Helper()
	d := mnistTest(t)
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	f, err := os.Create(path)
	require.NoError(t, err)
	w := bufio.NewWriter(f)
	w.WriteString("label")
	for r := range 28 {
		for c := range 28 {
			fmt.Fprintf(w, ",%dx%d", r+1, c+1)
		}
	}
	w.WriteString("\n")
	for i := lo; i < hi; i++ {
		fmt.Fprintf(w, "%d", d.Y[i])
		for _, v := range d.Row(i) {
			fmt.Fprintf(w, ",%d", int(math.Round(float64(v)*255)))
		}
		w.WriteString("\n")
	}
	require.NoError(t, w.Flush())
	require.NoError(t, f.Close())
}

// csvNodeYAML is the data section of a lab that trains on its own MNIST
// export.
const csvNodeYAML = `data:
  dataset: csv
  csv:
    file: mnist.csv
    label: label
    normalize: {method: scale, divisor: 255}
  validation: {fraction: 0.2, seed: 5}
`

// tabularModel is the model a 784-column table feeds: 784 x 1 x 1.
const tabularModel = "model: {arch: logreg, height: 784, width: 1, channels: 1, classes: 10}"

// TestLoadDataCSV reads an MNIST export through the node config: the
// features are MNIST's own pixels, the validation split is seeded and
// disjoint from the training part.
func TestLoadDataCSV(t *testing.T) {
	dir := t.TempDir()
	writeMNISTCSV(t, filepath.Join(dir, "mnist.csv"), 0, 500)
	cfg, err := nodeconfig.Parse([]byte("manifest: m.yaml\nlisten: [/ip4/127.0.0.1/tcp/4001]\n"+csvNodeYAML), "node.yaml", dir)
	require.NoError(t, err)
	var ids []identity.PeerID
	for i := range 3 {
		ids = append(ids, identity.Derive(1, i).ID)
	}
	man := manifest.Example(ids)
	man.Model.Arch, man.Model.Height, man.Model.Width, man.Model.Channels = manifest.ArchLogReg, 784, 1, 1
	require.NoError(t, man.Validate())

	ld, err := loadData(cfg, man)
	require.NoError(t, err)
	require.Equal(t, "validation", ld.evalKind)
	require.Equal(t, 400, ld.train.N)
	require.Equal(t, 100, ld.eval.N)
	require.Len(t, ld.part, 400)
	require.Equal(t, 784, ld.train.Height)
	require.Equal(t, 1, ld.train.Width)

	// Every example is one of MNIST's, pixel for pixel, in one part only.
	d := mnistTest(t)
	key := func(x []float32) string { return fmt.Sprint(x[100:400]) }
	orig := map[string]int{}
	for i := range 500 {
		orig[key(d.Row(i))] = i
	}
	seen := map[int]string{}
	for name, s := range map[string]*train.Dataset{"train": ld.train, "validation": ld.eval} {
		for i := range s.N {
			row := s.Row(i)
			j, ok := orig[key(row)]
			require.True(t, ok, "%s example %d is not an MNIST example", name, i)
			require.NotContains(t, seen, j, "MNIST example %d in %s and %s", j, seen[j], name)
			seen[j] = name
			require.Equal(t, d.Y[j], s.Y[i])
		}
	}
	require.Len(t, seen, 500)

	// The same config splits the same way; another seed otherwise.
	again, err := loadData(cfg, man)
	require.NoError(t, err)
	require.Equal(t, ld.eval.Y, again.eval.Y)
	require.Equal(t, ld.eval.X, again.eval.X)
	cfg.Data.Validation.Seed = 6
	other, err := loadData(cfg, man)
	require.NoError(t, err)
	require.NotEqual(t, ld.eval.X, other.eval.X)
}

// writeMNISTIDX writes MNIST test examples lo..hi-1 as an IDX images file
// and an IDX labels file, the format MNIST itself comes in.
func writeMNISTIDX(t *testing.T, images, labels string, lo, hi int) {
	t.Helper()
	d := mnistTest(t)
	n := uint32(hi - lo)
	img := binary.BigEndian.AppendUint32(nil, 0x803)
	img = binary.BigEndian.AppendUint32(img, n)
	img = binary.BigEndian.AppendUint32(img, 28)
	img = binary.BigEndian.AppendUint32(img, 28)
	lab := binary.BigEndian.AppendUint32(nil, 0x801)
	lab = binary.BigEndian.AppendUint32(lab, n)
	for i := lo; i < hi; i++ {
		for _, v := range d.Row(i) {
			img = append(img, byte(math.Round(float64(v)*255)))
		}
		lab = append(lab, d.Y[i])
	}
	require.NoError(t, os.WriteFile(images, img, 0o644))
	require.NoError(t, os.WriteFile(labels, lab, 0o644))
}

// TestLoadDataIDX reads a lab's own IDX files (MNIST test images written
// out again): with test files the evaluator gets them, without them 20% of
// the training files is held out; a shape the model does not take is
// refused with both values.
func TestLoadDataIDX(t *testing.T) {
	dir := t.TempDir()
	writeMNISTIDX(t, filepath.Join(dir, "train-images"), filepath.Join(dir, "train-labels"), 0, 1000)
	writeMNISTIDX(t, filepath.Join(dir, "test-images"), filepath.Join(dir, "test-labels"), 1000, 1300)
	const base = "manifest: m.yaml\nlisten: [/ip4/127.0.0.1/tcp/4001]\ndata:\n  dataset: idx\n  members: 2\n  index: 1\n  idx:\n    train_images: train-images\n    train_labels: train-labels\n"
	var ids []identity.PeerID
	for i := range 3 {
		ids = append(ids, identity.Derive(1, i).ID)
	}
	man := manifest.Example(ids)

	cfg, err := nodeconfig.Parse([]byte(base), "node.yaml", dir)
	require.NoError(t, err)
	ld, err := loadData(cfg, man)
	require.NoError(t, err)
	require.Equal(t, "validation", ld.evalKind)
	require.Equal(t, 200, ld.eval.N)
	require.Equal(t, 800, ld.train.N)
	require.Len(t, ld.part, 400)
	// MNIST's pixels come through unchanged: example 0 is in one part.
	found := 0
	for _, s := range []*train.Dataset{ld.train, ld.eval} {
		for i := range s.N {
			if slices.Equal(s.Row(i), mnistTest(t).Row(0)) {
				found++
			}
		}
	}
	require.Equal(t, 1, found)

	cfg, err = nodeconfig.Parse([]byte(base+"    test_images: test-images\n    test_labels: test-labels\n"), "node.yaml", dir)
	require.NoError(t, err)
	ld, err = loadData(cfg, man)
	require.NoError(t, err)
	require.Equal(t, "test", ld.evalKind)
	require.Equal(t, 300, ld.eval.N)
	require.Equal(t, 1000, ld.train.N)
	require.Equal(t, mnistTest(t).Y[1000:1300], ld.eval.Y)

	man.Model.Height, man.Model.Width = 32, 32
	_, err = loadData(cfg, man)
	require.ErrorIs(t, err, train.ErrSchema)
	require.ErrorContains(t, err, "model.height: the manifest says 32, the data set train-images has 28; model.width: the manifest says 32, the data set train-images has 28")
}

// freeTCPPorts returns n TCP ports free on loopback a moment ago.
func freeTCPPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// csvConsortium lays out three labs, each with its own CSV: lab i holds
// MNIST test examples [i*rows, (i+1)*rows), exported as writeMNISTCSV
// does, and the manifest with the given model line.
func csvConsortium(t *testing.T, model string, rows int) []string {
	t.Helper()
	root := t.TempDir()
	const n = 3
	ports := freeTCPPorts(t, n)
	var ids []identity.PeerID
	for i := range n {
		id, _, err := p2p.LoadOrCreateKey(filepath.Join(root, fmt.Sprintf("lab-%d", i), "identity.key"))
		require.NoError(t, err)
		ids = append(ids, id.ID)
	}
	man := fmt.Sprintf(`name: own-csv
members:
  - {id: %s, voter: true}
  - {id: %s, voter: true}
  - {id: %s, voter: true}
%s
training: {rounds: 2, lr: 0.1}
round: {min_participants: 3, tick: 50ms, deadline: 10s, max_examples_per_member: 1000}
`, ids[0], ids[1], ids[2], model)
	require.NoError(t, os.WriteFile(filepath.Join(root, "consortium.yaml"), []byte(man), 0o644))
	var configs []string
	for i := range n {
		lab := filepath.Join(root, fmt.Sprintf("lab-%d", i))
		writeMNISTCSV(t, filepath.Join(lab, "mnist.csv"), i*rows, (i+1)*rows)
		var book strings.Builder
		for j := range n {
			if j != i {
				fmt.Fprintf(&book, "  - /ip4/127.0.0.1/tcp/%d/p2p/%s\n", ports[j], ids[j])
			}
		}
		cfg := fmt.Sprintf("manifest: ../consortium.yaml\nlisten: [/ip4/127.0.0.1/tcp/%d]\naddress_book:\n%shttp: 127.0.0.1:0\n%s",
			ports[i], book.String(), csvNodeYAML)
		path := filepath.Join(lab, "node.yaml")
		require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
		configs = append(configs, path)
	}
	return configs
}

// TestCSVNodeTrains runs three labs, each on its own CSV export of MNIST,
// over loopback libp2p for two rounds: each evaluates the global model on
// its validation split, and the accuracy there rises well above that of
// the initial model.
func TestCSVNodeTrains(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three libp2p hosts")
	}
	configs := csvConsortium(t, tabularModel, 400)
	var members []*Member
	for _, c := range configs {
		m, err := FromConfig(context.Background(), c, Flags{Logs: io.Discard, NoSync: true})
		require.NoError(t, err)
		members = append(members, m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Go(func() { _ = m.Run(ctx) })
	}
	defer func() {
		cancel()
		wg.Wait()
	}()

	deadline := time.Now().Add(60 * time.Second)
	for {
		done := 0
		for _, m := range members {
			if r := m.o.Evaluator.Last(); r != nil && r.Round == 2 {
				done++
			}
		}
		if done == len(members) {
			break
		}
		require.True(t, time.Now().Before(deadline), "not every lab evaluated round 2 within 60s")
		time.Sleep(100 * time.Millisecond)
	}

	for i, m := range members {
		cfg, err := nodeconfig.Load(configs[i])
		require.NoError(t, err)
		man, err := manifest.Load(cfg.Manifest)
		require.NoError(t, err)
		ld, err := loadData(cfg, man)
		require.NoError(t, err)
		g0, err := local.Genesis(local.Spec(man), man.Model.InitSeed)
		require.NoError(t, err)
		model, err := train.NewModel(local.Spec(man))
		require.NoError(t, err)
		before, err := model.Evaluate(g0.Weights, ld.eval)
		require.NoError(t, err)
		after := m.o.Evaluator.Last()
		t.Logf("lab %d: validation accuracy %.3f (loss %.3f) at genesis, %.3f (loss %.3f) after round 2, on %d examples",
			i, before.Accuracy, before.Loss, after.Accuracy, after.Loss, after.Examples)
		require.Equal(t, 80, after.Examples, "lab %d evaluated on another set than its validation split", i)
		require.Greater(t, after.Accuracy, before.Accuracy+0.4, "lab %d", i)
		require.Less(t, after.Loss, before.Loss, "lab %d", i)
	}
}

// TestCSVSchemaMismatch: a node whose CSV does not fit the manifest's
// model stops at start, naming the field and both values; a label outside
// the manifest's classes names the file, line, column and value.
func TestCSVSchemaMismatch(t *testing.T) {
	configs := csvConsortium(t, "model: {arch: logreg, height: 28, width: 28, channels: 1, classes: 10}", 50)
	_, err := FromConfig(context.Background(), configs[0], Flags{Logs: io.Discard, NoSync: true})
	require.ErrorIs(t, err, train.ErrSchema)
	require.ErrorContains(t, err, "model.height: the manifest says 28, the data set mnist.csv has 784")
	require.ErrorContains(t, err, "model.width: the manifest says 28, the data set mnist.csv has 1")
	require.ErrorContains(t, err, "a CSV of 784 features feeds a model of height 784, width 1, channels 1")
	require.NotContains(t, err.Error(), "model.channels")

	configs = csvConsortium(t, "model: {arch: logreg, height: 784, width: 1, channels: 1, classes: 5}", 50)
	_, err = FromConfig(context.Background(), configs[1], Flags{Logs: io.Discard, NoSync: true})
	require.ErrorIs(t, err, train.ErrLabelRange)
	// Lab 1 holds MNIST's test examples 50..99, the header on line 1:
	// the error names the first label of 5 or more.
	d := mnistTest(t)
	first := 50
	for d.Y[first] < 5 {
		first++
	}
	require.ErrorContains(t, err, fmt.Sprintf(`%s:%d: column 1 "label": label out of range: label %d is outside the 5 classes 0..4`,
		filepath.Join("lab-1", "mnist.csv"), first-50+2, d.Y[first]))
}

// golearnModule is a Go module whose zip ships public tabular data sets,
// among them Fisher's iris table (examples/datasets/iris_headers.csv: four
// measurements in centimetres and the species by name), fetched through
// the Go module proxy as MNIST is.
const golearnModule = "github.com/sjwhitworth/golearn@v0.0.0-20221228163002-74ae077eafb2"

// moduleDir downloads mod into the Go module cache (outside any module, so
// no go.mod is touched) and returns its directory.
func moduleDir(t *testing.T, mod string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", mod)
	cmd.Dir = t.TempDir()
	out, err := cmd.Output()
	require.NoError(t, err, "go mod download %s", mod)
	var info struct{ Dir, Error string }
	require.NoError(t, json.Unmarshal(out, &info))
	require.Empty(t, info.Error)
	return info.Dir
}

// TestIrisNodeTrains points a node's config at a real table, the iris data
// as it is published, with the species named in the manifest's
// model.labels and a standardisation stated in the config (the table's
// published means and standard deviations): the node's trainer, built as
// `globalbrain run` builds it, raises the accuracy on its validation split.
func TestIrisNodeTrains(t *testing.T) {
	iris := filepath.Join(moduleDir(t, golearnModule), "examples", "datasets", "iris_headers.csv")
	dir := t.TempDir()
	cfg, err := nodeconfig.Parse([]byte(fmt.Sprintf(`manifest: m.yaml
listen: [/ip4/127.0.0.1/tcp/4001]
data:
  dataset: csv
  csv:
    file: %s
    label: Species
    features: [Sepal length, Sepal width, Petal length, Petal width]
    normalize:
      method: standard
      mean: [5.843, 3.057, 3.758, 1.199]
      std: [0.825, 0.434, 1.759, 0.760]
  validation: {fraction: 0.2, seed: 1}
`, iris)), "node.yaml", dir)
	require.NoError(t, err)
	var ids []identity.PeerID
	for i := range 3 {
		ids = append(ids, identity.Derive(1, i).ID)
	}
	man := manifest.Example(ids)
	man.Model = manifest.Model{Arch: manifest.ArchLogReg, Height: 4, Width: 1, Channels: 1, Classes: 3,
		Labels: []string{"Iris-setosa", "Iris-versicolor", "Iris-virginica"}}
	man.Training.Epochs = 5
	require.NoError(t, man.Validate())

	tr, eval, err := loadTrainer(cfg, man, identity.Derive(1, 0), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Equal(t, 30, eval.N)
	spec := local.Spec(man)
	g, err := local.Genesis(spec, man.Model.InitSeed)
	require.NoError(t, err)
	model, err := train.NewModel(spec)
	require.NoError(t, err)
	before, err := model.Evaluate(g.Weights, eval)
	require.NoError(t, err)
	for r := uint64(1); r <= 3; r++ {
		delta, n, err := tr.Train(context.Background(), r, g, man.StrategyConfig().Train)
		require.NoError(t, err)
		require.Equal(t, int64(120), n)
		for i := range g.Weights {
			g.Weights[i] += delta[i]
		}
	}
	after, err := model.Evaluate(g.Weights, eval)
	require.NoError(t, err)
	t.Logf("iris: validation accuracy %.3f (loss %.3f) at genesis, %.3f (loss %.3f) after 3 rounds of 5 epochs, on %d examples",
		before.Accuracy, before.Loss, after.Accuracy, after.Loss, after.N)
	require.Greater(t, after.Accuracy, before.Accuracy+0.3)
	require.Greater(t, after.Accuracy, 0.85)
	require.Less(t, after.Loss, before.Loss)

	// Without the names in the manifest, the species is no class number.
	man.Model.Labels = nil
	_, _, err = loadTrainer(cfg, man, identity.Derive(1, 0), slog.New(slog.DiscardHandler))
	require.ErrorIs(t, err, train.ErrBadLabel)
	require.ErrorContains(t, err, `iris_headers.csv:2: column 5 "Species": bad label: "Iris-setosa" is not a class number 0..2`)
}
