package manifest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/internal/strictyaml/yamltest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.canonical.json")

// peers returns n simulation peer IDs.
func peers(n int) []identity.PeerID {
	ids := make([]identity.PeerID, n)
	for i := range ids {
		ids[i] = identity.Derive(42, i).ID
	}
	return ids
}

func TestConsortiumIDIndependentOfForm(t *testing.T) {
	full := load(t, "full.good.yaml")
	id := full.ConsortiumID()

	// Other key order, flow style, quoting, spellings of numbers and
	// durations, comments and member order.
	if got := load(t, "reordered.good.yaml").ConsortiumID(); got != id {
		t.Errorf("reordered.good.yaml: consortium ID %x, want full.good.yaml's %x", got, id)
	}

	// Any permutation of the members.
	r := rand.New(rand.NewPCG(1, 2))
	for range 10 {
		m := *full
		m.Members = slices.Clone(full.Members)
		r.Shuffle(len(m.Members), func(i, j int) { m.Members[i], m.Members[j] = m.Members[j], m.Members[i] })
		if got := m.ConsortiumID(); got != id {
			t.Errorf("members %v: consortium ID changed", m.Members)
		}
	}

	// Comments and blank lines anywhere.
	data, err := os.ReadFile(filepath.Join("testdata", "full.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var commented strings.Builder
	for line := range strings.Lines(string(data)) {
		commented.WriteString("\n# a comment\n" + strings.TrimSuffix(line, "\n") + " # trailing\n")
	}
	m, err := Parse([]byte(commented.String()), "commented.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if m.ConsortiumID() != id {
		t.Errorf("comments changed the consortium ID")
	}

	// -0 is 0.
	m = load(t, "full.good.yaml")
	m.Training.ProxMu = 0
	z := *m
	z.Training.ProxMu = math.Copysign(0, -1)
	if z.ConsortiumID() != m.ConsortiumID() {
		t.Errorf("prox_mu -0 and 0 give different consortium IDs")
	}
}

func TestConsortiumIDChanges(t *testing.T) {
	other := peers(10)[9].String()
	mutations := map[string]func(m *Manifest){
		"name":                 func(m *Manifest) { m.Name += "-2" },
		"member added":         func(m *Manifest) { m.Members = append(m.Members, Member{ID: other}) },
		"member removed":       func(m *Manifest) { m.Members = m.Members[:4] },
		"member replaced":      func(m *Manifest) { m.Members[4].ID = other },
		"voter flag":           func(m *Manifest) { m.Members[3].Voter = true },
		"model.arch":           func(m *Manifest) { m.Model.Arch = Arch2NN },
		"model.height":         func(m *Manifest) { m.Model.Height = 28 },
		"model.width":          func(m *Manifest) { m.Model.Width = 28 },
		"model.channels":       func(m *Manifest) { m.Model.Channels = 1 },
		"model.classes":        func(m *Manifest) { m.Model.Classes = 100 },
		"model.init_seed":      func(m *Manifest) { m.Model.InitSeed++ },
		"model.labels":         func(m *Manifest) { m.Model.Labels = classNames(m.Model.Classes) },
		"training.rounds":      func(m *Manifest) { m.Training.Rounds = 0 },
		"training.epochs":      func(m *Manifest) { m.Training.Epochs = 1 },
		"training.batch_size":  func(m *Manifest) { m.Training.BatchSize = 64 },
		"training.lr":          func(m *Manifest) { m.Training.LR = 0.010000000000000002 },
		"training.prox_mu":     func(m *Manifest) { m.Training.ProxMu = 0 },
		"round.fraction":       func(m *Manifest) { m.Round.Fraction = 1 },
		"round.min":            func(m *Manifest) { m.Round.MinParticipants = 3 },
		"round.over_select":    func(m *Manifest) { m.Round.OverSelect = 0 },
		"round.tick":           func(m *Manifest) { m.Round.Tick = Duration(100 * time.Millisecond) },
		"round.deadline":       func(m *Manifest) { m.Round.Deadline = Duration(60 * time.Second) },
		"round.election_ticks": func(m *Manifest) { m.Round.ElectionTicks = 10 },
		"round.max_examples":   func(m *Manifest) { m.Round.MaxExamplesPerMember = 60000 },
		"round.retain_rounds":  func(m *Manifest) { m.Round.RetainRounds = 10 },
		"strategy.name":        func(m *Manifest) { m.Strategy.Name = fedavg.NameFedYogi },
		"strategy.server_lr":   func(m *Manifest) { m.Strategy.ServerLR = 0.1 },
		"strategy.momentum":    func(m *Manifest) { m.Strategy.Momentum = 0.5 },
		"strategy.beta1":       func(m *Manifest) { m.Strategy.Beta1 = 0.8 },
		"strategy.beta2":       func(m *Manifest) { m.Strategy.Beta2 = 0.999 },
		"strategy.tau":         func(m *Manifest) { m.Strategy.Tau = 1e-9 },
		"strategy.trim":        func(m *Manifest) { m.Strategy.TrimFraction = 0.2 },
		"strategy.byzantine":   func(m *Manifest) { m.Strategy.Byzantine = 2 },
		"strategy.multikrum_m": func(m *Manifest) { m.Strategy.MultiKrumM = 3 },
		"strategy.clip_norm":   func(m *Manifest) { m.Strategy.ClipNorm = 0 },
		"privacy.mode":         func(m *Manifest) { m.Privacy.Mode = PrivacyUpdate },
		// full.good.yaml is of mode none: setting any field of a section
		// makes the section appear in the canonical encoding.
		"privacy.secagg.gamma":          func(m *Manifest) { m.Privacy.SecAgg.Gamma = 1 },
		"privacy.secagg.k_min":          func(m *Manifest) { m.Privacy.SecAgg.KMin = 2 },
		"privacy.secagg.clip":           func(m *Manifest) { m.Privacy.SecAgg.Clip = 1 },
		"privacy.secagg.scale":          func(m *Manifest) { m.Privacy.SecAgg.Scale = 1 << 20 },
		"privacy.secagg.max_weight":     func(m *Manifest) { m.Privacy.SecAgg.MaxWeight = 1000 },
		"privacy.secagg.phase_deadline": func(m *Manifest) { m.Privacy.SecAgg.PhaseDeadline = Duration(time.Second) },
		"privacy.dp.z":                  func(m *Manifest) { m.Privacy.DP.Z = 1 },
		"privacy.dp.clip":               func(m *Manifest) { m.Privacy.DP.Clip = 1 },
		"privacy.dp.example_clip":       func(m *Manifest) { m.Privacy.DP.ExampleClip = 1 },
		"privacy.dp.scale":              func(m *Manifest) { m.Privacy.DP.Scale = 1 << 20 },
		"privacy.dp.delta":              func(m *Manifest) { m.Privacy.DP.Delta = 1e-5 },
		"privacy.dp.epsilon":            func(m *Manifest) { m.Privacy.DP.Epsilon = 1 },
	}
	// Every field is covered: the leaves of the privacy section count, its
	// two sub-sections (secagg, dp) do not.
	fields := 0
	for _, section := range []any{Model{}, Training{}, Round{}, Strategy{}, Privacy{}, SecAgg{}, DP{}} {
		fields += reflect.TypeOf(section).NumField()
	}
	if want := fields - 2 + 5; len(mutations) != want {
		t.Errorf("%d mutations, want %d (one per field, plus name and four of members)", len(mutations), want)
	}

	seen := map[[32]byte]string{load(t, "full.good.yaml").ConsortiumID(): "full.good.yaml"}
	for name, mutate := range mutations {
		m := load(t, "full.good.yaml")
		mutate(m)
		id := m.ConsortiumID()
		if prev, ok := seen[id]; ok {
			t.Errorf("%s: same consortium ID as %s", name, prev)
		}
		seen[id] = name
	}
}

// TestCanonicalGolden holds the canonical encoding, and therefore every
// consortium ID, fixed: a change here splits consortia across versions.
func TestCanonicalGolden(t *testing.T) {
	for _, name := range []string{"full", "minimal", "update", "secagg", "distributed", "dpsgd"} {
		m := load(t, name+".good.yaml")
		got, err := m.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", name+".canonical.json")
		if *update {
			if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bytes.TrimSuffix(want, []byte("\n"))) {
			t.Errorf("%s: canonical encoding\n got %s\nwant %s", name, got, want)
		}
		if !json.Valid(got) || !bytes.Contains(got, []byte(`,"protocol":1,`)) {
			t.Errorf("%s: canonical encoding is not JSON with the protocol version: %s", name, got)
		}
	}
	// Mode none writes no privacy section but the mode: the encoding (and
	// every consortium ID) from before the privacy sections existed.
	for _, name := range []string{"full", "minimal", "learners", "multikrum", "reordered", "trimmedmean"} {
		if b, err := load(t, name+".good.yaml").Canonical(); err != nil || !bytes.Contains(b, []byte(`"privacy":{"mode":"none"},`)) {
			t.Errorf("%s: canonical encoding has more than the mode in privacy: %s, %v", name, b, err)
		}
	}
	const fullID = "cb551b9e87ec7727d30bd75dd250b81a7ef032bca3e9262728a6895b4c3f560a"
	if id := load(t, "full.good.yaml").ConsortiumID(); hex.EncodeToString(id[:]) != fullID {
		t.Errorf("full.good.yaml: consortium ID %x, want %s", id, fullID)
	}
}

func TestCanonicalSortsKeys(t *testing.T) {
	b, err := load(t, "full.good.yaml").Canonical()
	if err != nil {
		t.Fatal(err)
	}
	// Walk the object's keys in the order they appear, at every level.
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		obj  bool
		last string
		key  bool // the next string in an object is a key
	}
	stack := []*frame{}
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if top != nil && top.obj {
					top.key = true
				}
				stack = append(stack, &frame{obj: v == '{', key: v == '{'})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if top != nil && top.obj && top.key {
				if v <= top.last && top.last != "" {
					t.Errorf("key %q after %q", v, top.last)
				}
				top.last, top.key = v, false
				continue
			}
		}
		if top != nil && top.obj {
			top.key = true
		}
	}
	if bytes.ContainsAny(b, " \n\t") {
		t.Errorf("canonical encoding has whitespace: %s", b)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	manifests := map[string]*Manifest{"Example(10)": Example(peers(10))}
	for _, name := range yamltest.Fixtures(t, ".good.yaml") {
		manifests[name] = load(t, name)
	}
	for name, m := range manifests {
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("%s: Marshal: %v", name, err)
		}
		back, err := Parse(out, name+" marshaled")
		if err != nil {
			t.Fatalf("%s: Parse(Marshal()): %v\n%s", name, err, out)
		}
		if back.ConsortiumID() != m.ConsortiumID() {
			t.Errorf("%s: round trip changed the consortium ID", name)
		}
		if !reflect.DeepEqual(back, m) {
			t.Errorf("%s: round trip changed the manifest:\n got %+v\nwant %+v", name, back, m)
		}
	}
	// Durations are written as Go duration strings.
	out, err := load(t, "full.good.yaml").Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\n  tick: 50ms\n", "\n  deadline: 30s\n", "\n  - id: 12D3KooWF3dQobJMTDvW3XuHBKgtfmDsDNZSyXW7sLhZGvVuvajk\n    voter: true\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("Marshal output lacks %q:\n%s", want, out)
		}
	}
}

func TestAccessors(t *testing.T) {
	m := load(t, "full.good.yaml")
	want := fedavg.Config{
		Strategy: fedavg.NameFedAdam,
		Train:    fedavg.TrainConfig{Epochs: 2, BatchSize: 32, LR: 0.01, ProxMu: 0.001},
		ServerLR: 0.01, Momentum: 0.9, Beta1: 0.9, Beta2: 0.99, Tau: 0.001,
		TrimFraction: 0.1, Byzantine: 1, MultiKrumM: 0, ClipNorm: 5,
	}
	if got := m.StrategyConfig(); got != want {
		t.Errorf("StrategyConfig() = %+v, want %+v", got, want)
	}
	if _, err := fedavg.New(m.StrategyConfig()); err != nil {
		t.Errorf("fedavg.New(StrategyConfig()): %v", err)
	}
	if got := m.DeadlineTicks(); got != 600 {
		t.Errorf("DeadlineTicks() = %d, want 600 (30s of 50ms ticks)", got)
	}

	all := peers(5)
	slices.SortFunc(all, identity.Compare)
	if got := m.MemberIDs(); !reflect.DeepEqual(got, all) {
		t.Errorf("MemberIDs() = %v, want %v", got, all)
	}
	voters := peers(3)
	slices.SortFunc(voters, identity.Compare)
	if got := m.Voters(); !reflect.DeepEqual(got, voters) {
		t.Errorf("Voters() = %v, want %v", got, voters)
	}
}

func TestExample(t *testing.T) {
	for _, tc := range []struct{ members, voters int }{{3, 3}, {5, 5}, {7, 7}, {8, 5}, {10, 5}, {50, 5}} {
		ids := peers(tc.members)
		m := Example(ids)
		if err := m.Validate(); err != nil {
			t.Errorf("Example(%d members): %v", tc.members, err)
			continue
		}
		sorted := slices.Clone(ids)
		slices.SortFunc(sorted, identity.Compare)
		if got := m.MemberIDs(); !reflect.DeepEqual(got, sorted) {
			t.Errorf("Example(%d): members %v, want %v", tc.members, got, sorted)
		}
		for i, mem := range m.Members {
			if mem.ID != sorted[i].String() {
				t.Errorf("Example(%d): members[%d] = %s, want byte order", tc.members, i, mem.ID)
			}
		}
		if got := m.Voters(); !reflect.DeepEqual(got, sorted[:tc.voters]) {
			t.Errorf("Example(%d): voters %v, want the first %d in byte order", tc.members, got, tc.voters)
		}
		if !reflect.DeepEqual(m.Model, Model{Arch: Arch2NN, Height: 28, Width: 28, Channels: 1, Classes: 10}) {
			t.Errorf("Example(%d): model %+v", tc.members, m.Model)
		}
		if m.StrategyConfig() != fedavg.DefaultConfig() || m.Round.Deadline != Duration(DefaultDeadline) {
			t.Errorf("Example(%d): not the defaults: %+v", tc.members, m)
		}
	}
	if err := Example(peers(2)).Validate(); err == nil || !strings.Contains(err.Error(), "members: 2 voters among 2 members, want >= 3") {
		t.Errorf("Example(2 members).Validate() = %v, want too few voters", err)
	}
	// The caller's slice is left alone.
	ids := peers(8)
	before := slices.Clone(ids)
	Example(ids)
	if !reflect.DeepEqual(ids, before) {
		t.Errorf("Example reordered its argument")
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(Duration(1500 * time.Millisecond))
	if err != nil || string(b) != "1500000000" {
		t.Fatalf("json.Marshal(1.5s) = %s, %v; want 1500000000", b, err)
	}
	var d Duration
	if err := json.Unmarshal(b, &d); err != nil || d != Duration(1500*time.Millisecond) {
		t.Errorf("json.Unmarshal(%s) = %v, %v", b, d, err)
	}
	if err := json.Unmarshal([]byte(`"1.5s"`), &d); err == nil {
		t.Errorf("json.Unmarshal of a string: no error")
	}
}

// classNames names n classes class-0, class-1, ...
func classNames(n int) []string {
	var s []string
	for i := range n {
		s = append(s, fmt.Sprintf("class-%d", i))
	}
	return s
}
