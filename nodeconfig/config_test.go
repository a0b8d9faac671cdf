package nodeconfig

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/internal/strictyaml/yamltest"
	"github.com/globalbrain/globalbrain/manifest"
)

func TestGoodFixtures(t *testing.T) {
	for _, name := range yamltest.Fixtures(t, ".good.yaml") {
		t.Run(name, func(t *testing.T) {
			c, err := Load(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate after Load: %v", err)
			}
			for _, p := range []string{c.IdentityKey, c.Manifest, c.Store} {
				if !filepath.IsAbs(p) {
					t.Errorf("path %q not resolved", p)
				}
			}
			if len(c.ListenAddrs()) != len(c.Listen) || len(c.Peers()) != len(c.AddressBook) {
				t.Errorf("listen or address book did not parse: %v %v", c.ListenAddrs(), c.Peers())
			}
		})
	}
}

// badFixtures lists every testdata/*.bad.yaml and the strings its error must
// contain.
var badFixtures = []yamltest.Bad{
	// The document.
	{"empty.bad.yaml", []string{"empty.bad.yaml: empty, want a mapping"}},
	{"comments_only.bad.yaml", []string{"comments_only.bad.yaml: empty, want a mapping"}},
	{"top_level_list.bad.yaml", []string{"top_level_list.bad.yaml:1: the document is a list, want a mapping"}},
	{"two_documents.bad.yaml", []string{"two_documents.bad.yaml:3: a second YAML document, want exactly one"}},
	{"syntax_error.bad.yaml", []string{"did not find expected ',' or ']'"}}, // the line is package yaml's
	{"alias.bad.yaml", []string{
		"alias.bad.yaml:1: manifest: anchor &m: anchors are not supported",
		"alias.bad.yaml:3: identity_key: alias *m: aliases are not supported",
	}},

	// Keys and types.
	{"unknown_key.bad.yaml", []string{"unknown_key.bad.yaml:3: colour: unknown field, want one of identity_key, manifest, listen, address_book"}},
	{"unknown_key_nested.bad.yaml", []string{"unknown_key_nested.bad.yaml:5: data.clients: unknown field, want one of dataset, dir, partition, members, index, seed, alpha, shards, idx, csv, validation"}},
	{"duplicate_key.bad.yaml", []string{"duplicate_key.bad.yaml:3: manifest: duplicate key, first at line 1"}},
	{"listen_not_list.bad.yaml", []string{`listen_not_list.bad.yaml:2: listen: got !!str "/ip4/127.0.0.1/tcp/4001", want a list`}},
	{"manifest_not_string.bad.yaml", []string{"manifest_not_string.bad.yaml:1: manifest: got a list, want a string"}},
	{"data_not_mapping.bad.yaml", []string{`data_not_mapping.bad.yaml:3: data: got !!str "mnist", want a mapping`}},
	{"http_public_not_bool.bad.yaml", []string{`http_public_not_bool.bad.yaml:3: http_public: got !!str "maybe", want true or false`}},
	{"members_float.bad.yaml", []string{`members_float.bad.yaml:4: data.members: got !!float "2.5", want an integer`}},
	{"seed_negative.bad.yaml", []string{`seed_negative.bad.yaml:4: data.seed: got !!int "-1", want a non-negative integer`}},

	// Required fields.
	{"manifest_missing.bad.yaml", []string{"manifest_missing.bad.yaml: manifest: required"}},
	{"listen_missing.bad.yaml", []string{"listen_missing.bad.yaml: listen: required: at least one multiaddr"}},

	// Addresses.
	{"listen_garbage.bad.yaml", []string{`listen_garbage.bad.yaml:4: listen[1]: "127.0.0.1:4001" is not a multiaddr`}},
	{"listen_no_transport.bad.yaml", []string{"listen_no_transport.bad.yaml:2: listen[0]: /ip4/127.0.0.1/udp/4001 has neither /tcp nor /udp/.../quic-v1"}},
	{"listen_with_peer.bad.yaml", []string{"listen_with_peer.bad.yaml:2: listen[0]: /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW"}},
	{"psk_quic.bad.yaml", []string{"psk_quic.bad.yaml:5: listen[1]: /ip4/0.0.0.0/udp/4001/quic-v1 is QUIC, but with psk_file set the node speaks TCP only"}},
	{"address_no_peer.bad.yaml", []string{"address_no_peer.bad.yaml:4: address_book[0]: /ip4/127.0.0.1/tcp/4002 does not end in /p2p/<peer ID>"}},
	{"address_bad_peer.bad.yaml", []string{"address_bad_peer.bad.yaml:4: address_book[0]: ", "not an Ed25519 peer ID"}},
	{"address_duplicate.bad.yaml", []string{"address_duplicate.bad.yaml:5: address_book[1]: ", "duplicates address_book[0]"}},
	{"http_public_addr.bad.yaml", []string{"http_public_addr.bad.yaml:3: http: 0.0.0.0:9464 is not a loopback address", "set http_public: true"}},
	{"http_no_host.bad.yaml", []string{"http_no_host.bad.yaml:3: http: :9464 (every interface) is not a loopback address"}},
	{"http_no_port.bad.yaml", []string{`http_no_port.bad.yaml:3: http: "127.0.0.1", want host:port`}},

	// Values.
	{"log_level.bad.yaml", []string{`log_level.bad.yaml:3: log_level: "verbose" unknown, want one of debug, info, warn, error`}},
	{"dataset.bad.yaml", []string{`dataset.bad.yaml:4: data.dataset: "cifar10" unknown, want one of mnist, fashion-mnist`}},
	{"partition.bad.yaml", []string{`partition.bad.yaml:4: data.partition: "random" unknown, want one of iid, shards, dirichlet`}},
	{"index_out_of_range.bad.yaml", []string{"index_out_of_range.bad.yaml:5: data.index: 3, want 0..2"}},
	{"members_zero.bad.yaml", []string{"members_zero.bad.yaml:4: data.members: 0, want >= 1"}},
	{"alpha_zero.bad.yaml", []string{"alpha_zero.bad.yaml:5: data.alpha: 0, want > 0 for partition dirichlet"}},
	{"shards_zero.bad.yaml", []string{"shards_zero.bad.yaml:5: data.shards: 0, want >= 1 for partition shards"}},
	{"max_examples_negative.bad.yaml", []string{"max_examples_negative.bad.yaml:3: max_examples: -5, want >= 0"}},
	{"privacy_epsilon_negative.bad.yaml", []string{"privacy_epsilon_negative.bad.yaml:4: privacy.epsilon: -1, want >= 0 and finite"}},
	{"trainer_empty_command.bad.yaml", []string{"trainer_empty_command.bad.yaml:4: trainer.command: an empty list"}},
	{"trainer_timeout.bad.yaml", []string{`trainer_timeout.bad.yaml:5: trainer.timeout: "0s", want a positive duration`}},
	{"trainer_timeout_unit.bad.yaml", []string{`trainer_timeout_unit.bad.yaml:5: trainer.timeout: got !!int "10", want a string`}},
	{"privacy_unknown_key.bad.yaml", []string{"privacy_unknown_key.bad.yaml:4: privacy.delta: unknown field, want one of epsilon"}},

	// Own data: IDX files and CSV.
	{"dir_for_csv.bad.yaml", []string{"dir_for_csv.bad.yaml:5: data.dir: set, but data.dataset is csv"}},
	{"idx_missing.bad.yaml", []string{"idx_missing.bad.yaml:5: data.idx.train_labels: required for dataset idx"}},
	{"idx_test_half.bad.yaml", []string{"idx_test_half.bad.yaml:5: data.idx.test_labels: required with data.idx.test_images (both or neither)"}},
	{"idx_without_dataset.bad.yaml", []string{"idx_without_dataset.bad.yaml:8: data.idx: set, but data.dataset is csv"}},
	{"csv_without_dataset.bad.yaml", []string{"csv_without_dataset.bad.yaml:4: data.csv: set, but data.dataset is mnist; set dataset: csv"}},
	{"csv_file_missing.bad.yaml", []string{"csv_file_missing.bad.yaml:5: data.csv.file: required for dataset csv"}},
	{"csv_label_missing.bad.yaml", []string{"csv_label_missing.bad.yaml:5: data.csv.label: required for dataset csv"}},
	{"csv_label_list.bad.yaml", []string{"csv_label_list.bad.yaml:7: data.csv.label: got a list, want a column name (a string) or number (1 is the first column)"}},
	{"csv_label_zero.bad.yaml", []string{`csv_label_zero.bad.yaml:7: data.csv.label: got !!int "0", want a column name`}},
	{"csv_name_no_header.bad.yaml", []string{`csv_name_no_header.bad.yaml:8: data.csv.label: "diagnosis" names a column, but data.csv.header is false`}},
	{"csv_header_not_bool.bad.yaml", []string{`csv_header_not_bool.bad.yaml:7: data.csv.header: got !!str "yes", want true or false`}},
	{"csv_delimiter.bad.yaml", []string{`csv_delimiter.bad.yaml:7: data.csv.delimiter: ",,", want one character`}},
	{"csv_feature_is_label.bad.yaml", []string{`csv_feature_is_label.bad.yaml:8: data.csv.features[1]: "diagnosis" is the label column`}},
	{"csv_feature_duplicate.bad.yaml", []string{"csv_feature_duplicate.bad.yaml:8: data.csv.features[2]: 2 duplicates data.csv.features[0]"}},
	{"csv_unknown_key.bad.yaml", []string{"csv_unknown_key.bad.yaml:8: data.csv.label_column: unknown field, want one of file, test_file, header, delimiter, label, features, normalize"}},
	{"normalize_method.bad.yaml", []string{`normalize_method.bad.yaml:8: data.csv.normalize.method: "zscore" unknown, want one of none, minmax, standard, scale`}},
	{"normalize_minmax_missing.bad.yaml", []string{"normalize_minmax_missing.bad.yaml:8: data.csv.normalize.max: required for method minmax"}},
	{"normalize_minmax_order.bad.yaml", []string{"normalize_minmax_order.bad.yaml:11: data.csv.normalize.max[1]: 5 is not above min 10"}},
	{"normalize_std_zero.bad.yaml", []string{"normalize_std_zero.bad.yaml:11: data.csv.normalize.std[0]: 0, want > 0"}},
	{"normalize_unused.bad.yaml", []string{"normalize_unused.bad.yaml:11: data.csv.normalize.mean: set, but method scale does not use it"}},
	{"normalize_divisor_zero.bad.yaml", []string{"normalize_divisor_zero.bad.yaml:8: data.csv.normalize.divisor: 0, want a finite non-zero number for method scale"}},
	{"normalize_min_scalar.bad.yaml", []string{`normalize_min_scalar.bad.yaml:8: data.csv.normalize.min: got !!int "0", want a list`, `data.csv.normalize.max: got !!int "255", want a list`}},
	{"validation_fraction.bad.yaml", []string{"validation_fraction.bad.yaml:9: data.validation.fraction: 1.5, want 0 < fraction < 1"}},
	{"validation_with_test.bad.yaml", []string{"validation_with_test.bad.yaml:6: data.validation.fraction: 0.1, but the data set has a test set"}},

	// Every problem at once.
	{"several.bad.yaml", []string{"several.bad.yaml: manifest: required", `several.bad.yaml:2: log_level: "loud" unknown`, "several.bad.yaml:3: max_examples: -1, want >= 0"}},
}

func TestBadFixtures(t *testing.T) {
	yamltest.CheckBad(t, badFixtures, ErrInvalid, func(t *testing.T, tc yamltest.Bad) error {
		_, err := Load(filepath.Join("testdata", tc.File))
		return err
	})
}

func TestDefaultsAndPaths(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "minimal.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	want := Default()
	if c.IdentityKey != filepath.Join(dir, DefaultIdentityKey) || c.Store != filepath.Join(dir, DefaultStore) ||
		c.Manifest != filepath.Join(dir, "consortium.yaml") {
		t.Errorf("paths not resolved against %s: %+v", dir, c)
	}
	if c.HTTP != want.HTTP || c.LogLevel != want.LogLevel || !reflect.DeepEqual(c.Data, want.Data) || c.PSKFile != "" || c.Data.Dir != "" {
		t.Errorf("defaults not applied: %+v", c)
	}
	if c.Path != filepath.Join(dir, "minimal.good.yaml") {
		t.Errorf("Path %q", c.Path)
	}

	f, err := Load(filepath.Join("testdata", "full.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if f.IdentityKey != filepath.Join(dir, "keys", "lab-a.key") || f.Manifest != filepath.Join(filepath.Dir(dir), "consortium.yaml") ||
		f.Store != "/var/lib/globalbrain" || f.Data.Dir != filepath.Join(dir, "data") {
		t.Errorf("paths: %+v", f)
	}
	wantData := Default().Data
	wantData.Dataset, wantData.Dir, wantData.Partition, wantData.Members, wantData.Index, wantData.Seed, wantData.Alpha, wantData.Shards =
		"fashion-mnist", filepath.Join(dir, "data"), "dirichlet", 3, 2, 7, 0.3, 2
	if !reflect.DeepEqual(f.Data, wantData) || f.MaxExamples != 15000 || f.Privacy.Epsilon != 2 || f.LogLevel != "debug" || len(f.Listen) != 2 {
		t.Errorf("values: %+v", f)
	}
	ps := f.Peers()
	if len(ps) != 2 || ps[0].ID.String() != "12D3KooWKmB3P7NH2EQdX7poyyYSDsyaaPCNwpEdNGbQMnhpeoXu" || ps[0].Addr.String() != "/ip4/10.0.0.2/tcp/4001" {
		t.Errorf("peers: %v", ps)
	}
}

// TestOwnData checks the CSV and IDX fixtures' values, their paths
// resolved, and the validation split each gets.
func TestOwnData(t *testing.T) {
	dir, _ := filepath.Abs("testdata")
	c, err := Load(filepath.Join("testdata", "csv.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default().Data
	want.Dataset = "csv"
	want.CSV = CSV{
		File: filepath.Join(dir, "records", "patients.csv"), Header: true, Delimiter: ";",
		Label:     Column{Name: "diagnosis"},
		Features:  []Column{{Name: "age"}, {Name: "bmi"}, {Number: 7}},
		Normalize: Normalize{Method: "standard", Mean: []float64{50, 25, 120}, Std: []float64{15, 5, 20}},
	}
	want.Validation = Validation{Fraction: 0.25, Seed: 3}
	if !reflect.DeepEqual(c.Data, want) {
		t.Errorf("got  %+v\nwant %+v", c.Data, want)
	}
	if c.Data.HasTest() || c.Data.ValidationFraction() != 0.25 || c.Data.CSV.Rune() != ';' {
		t.Errorf("HasTest %v, ValidationFraction %v, Rune %q", c.Data.HasTest(), c.Data.ValidationFraction(), c.Data.CSV.Rune())
	}

	c, err = Load(filepath.Join("testdata", "csv_minimal.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	d := c.Data
	if d.CSV.Header || d.CSV.Rune() != '\t' || d.CSV.Label != (Column{Number: 1}) || len(d.CSV.Features) != 0 ||
		d.CSV.TestFile != filepath.Join(dir, "digits-test.csv.gz") || !d.HasTest() || d.ValidationFraction() != 0 ||
		d.CSV.Normalize.Method != "scale" || d.CSV.Normalize.Divisor != 255 {
		t.Errorf("csv_minimal: %+v", d)
	}

	c, err = Load(filepath.Join("testdata", "idx.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	d = c.Data
	if d.IDX.TrainImages != filepath.Join(dir, "scans", "train-images-idx3-ubyte.gz") || d.IDX.TestImages != "" ||
		d.HasTest() || d.ValidationFraction() != DefaultValidationFraction || d.Members != 2 || d.Index != 1 {
		t.Errorf("idx: %+v", d)
	}
	// The shape of an own data set is checked once it is read, not here.
	var ids []identity.PeerID
	for i := range 3 {
		ids = append(ids, identity.Derive(1, i).ID)
	}
	m := manifest.Example(ids)
	m.Model.Height, m.Model.Width = 12, 1
	if err := c.CheckManifest(m); err != nil {
		t.Errorf("CheckManifest of an idx data set: %v", err)
	}
}

func TestCheckManifest(t *testing.T) {
	var ids []identity.PeerID
	for i := range 3 {
		ids = append(ids, identity.Derive(1, i).ID)
	}
	m := manifest.Example(ids) // 2NN on 28x28x1, 10 classes, cap 60000
	c := Default()
	if err := c.CheckManifest(m); err != nil {
		t.Fatal(err)
	}
	if got := c.ExampleCap(m); got != 60000 {
		t.Errorf("ExampleCap %d, want the manifest's 60000", got)
	}
	c.MaxExamples = 1000
	if got := c.ExampleCap(m); got != 1000 {
		t.Errorf("ExampleCap %d, want 1000", got)
	}
	c.MaxExamples = 70000
	err := c.CheckManifest(m)
	if !errors.Is(err, ErrManifestMismatch) || !strings.Contains(err.Error(), "max_examples 70000 is above the manifest's max_examples_per_member 60000") {
		t.Errorf("cap above the manifest's: %v", err)
	}
	c.MaxExamples = 0
	m.Model.Height, m.Model.Width, m.Model.Channels = 32, 32, 3
	if err := c.CheckManifest(m); err == nil || !strings.Contains(err.Error(), "the manifest's model 32x32x3") {
		t.Errorf("shape mismatch: %v", err)
	}
}

// A node may only lower its own privacy budget.
func TestPrivacyCeiling(t *testing.T) {
	var ids []identity.PeerID
	for i := range 3 {
		ids = append(ids, identity.Derive(1, i).ID)
	}
	m := manifest.Example(ids)
	m.Privacy = manifest.Privacy{Mode: manifest.PrivacyUpdate, DP: manifest.DP{Z: 1, Clip: 1, Epsilon: 4}}
	m.ApplyDefaults()
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	c := Default()
	if err := c.CheckManifest(m); err != nil || c.EpsilonCeiling(m) != 4 {
		t.Errorf("no privacy.epsilon: %v, ceiling %v, want the manifest's 4", err, c.EpsilonCeiling(m))
	}
	c.Privacy.Epsilon = 2.5
	if err := c.CheckManifest(m); err != nil || c.EpsilonCeiling(m) != 2.5 {
		t.Errorf("lower privacy.epsilon: %v, ceiling %v, want 2.5", err, c.EpsilonCeiling(m))
	}
	c.Privacy.Epsilon = 4
	if err := c.CheckManifest(m); err != nil || c.EpsilonCeiling(m) != 4 {
		t.Errorf("equal privacy.epsilon: %v, ceiling %v", err, c.EpsilonCeiling(m))
	}
	c.Privacy.Epsilon = 5
	err := c.CheckManifest(m)
	if !errors.Is(err, ErrManifestMismatch) || !strings.Contains(err.Error(), "privacy.epsilon 5 is above the manifest's privacy.dp.epsilon 4; a node may only lower its own budget") {
		t.Errorf("higher privacy.epsilon: %v", err)
	}
	if got := c.EpsilonCeiling(m); got != 4 {
		t.Errorf("ceiling with a higher privacy.epsilon %v, want the manifest's 4", got)
	}
	m = manifest.Example(ids)
	c.Privacy.Epsilon = 1
	if err := c.CheckManifest(m); err == nil || !strings.Contains(err.Error(), "privacy.epsilon 1 is set, but the manifest's privacy.mode none keeps no privacy budget") {
		t.Errorf("privacy.epsilon under mode none: %v", err)
	}

	// The field parses from a file.
	dir := t.TempDir()
	path := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(path, []byte("manifest: m.yaml\nlisten: [/ip4/0.0.0.0/tcp/4001]\nprivacy:\n  epsilon: 1.5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil || f.Privacy.Epsilon != 1.5 {
		t.Errorf("Load: %v, %+v", err, f)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "node.yaml"))
	if !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrInvalid) {
		t.Errorf("missing file: %v", err)
	}
}

// The external trainer comes from the node's own config: its command, its
// timeout (default 30m) and the directory it runs in; never under dp-sgd.
func TestTrainer(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "trainer.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("testdata")
	if got := strings.Join(c.Trainer.Command, " "); got != "/usr/bin/python3 train.py --verbose" || c.Trainer.TimeoutDuration() != 90*time.Second || c.Trainer.Dir != abs {
		t.Errorf("trainer %+v, want the command, 1m30s and dir %s", c.Trainer, abs)
	}
	d, err := Load(filepath.Join("testdata", "minimal.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Trainer.Command != nil || d.Trainer.Timeout != DefaultTrainerTimeout {
		t.Errorf("default trainer %+v, want none with timeout %v", d.Trainer, DefaultTrainerTimeout)
	}
	var ids []identity.PeerID
	for i := range 3 {
		ids = append(ids, identity.Derive(1, i).ID)
	}
	m := manifest.Example(ids)
	if err := c.CheckManifest(m); err != nil {
		t.Fatal(err)
	}
	m.Privacy = manifest.Privacy{Mode: manifest.PrivacyDPSGD, DP: manifest.DP{Z: 1, ExampleClip: 1, Epsilon: 10}}
	if err := c.CheckManifest(m); err == nil || !strings.Contains(err.Error(), "trainer.command is set, but the manifest's privacy.mode dp-sgd") {
		t.Errorf("external trainer under dp-sgd: %v", err)
	}
}
