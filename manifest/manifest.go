package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"go.yaml.in/yaml/v3"
)

// ProtocolVersion is the version of the protocol a manifest is used with. It
// is part of the canonical encoding, so it changes the consortium ID.
const ProtocolVersion = 1

// Architectures accepted in Model.Arch; they are the models package train
// builds.
const (
	ArchLogReg = "logreg" // multinomial logistic regression
	Arch2NN    = "2nn"    // the FedAvg paper's two-hidden-layer perceptron
	ArchCNN    = "cnn"    // the FedAvg paper's CNN; height and width divisible by 4
)

// Privacy modes (PRIVACY.md). PrivacyNone aggregates updates in the clear.
const (
	PrivacyNone        = "none"        // updates aggregated in the clear
	PrivacySecAgg      = "secagg"      // secure aggregation, no noise
	PrivacyUpdate      = "update"      // each participant clips and noises its own update (member-level DP)
	PrivacyDistributed = "distributed" // secure aggregation of Distributed Discrete Gaussian encodings
	PrivacyDPSGD       = "dp-sgd"      // per-example clipping and noise in local training (record-level DP)
)

// Defaults of the round fields a manifest leaves out. The training and
// strategy defaults are fedavg.DefaultConfig's.
const (
	DefaultTick          = 100 * time.Millisecond // round.tick
	DefaultDeadline      = 60 * time.Second       // round.deadline
	DefaultElectionTicks = 10                     // round.election_ticks
	DefaultRetainRounds  = 10                     // round.retain_rounds
)

// Manifest is a consortium's genesis manifest. Parse and Load return it
// validated and with defaults applied; a Manifest built in code should be
// checked with Validate before use.
type Manifest struct {
	// Name is the consortium's name. Required.
	Name string `yaml:"name" json:"name"`
	// Members are the genesis members. At least 3 must be voters.
	Members []Member `yaml:"members" json:"members"`
	// Model fixes the architecture and the data schema.
	Model Model `yaml:"model" json:"model"`
	// Training is the local training every participant runs.
	Training Training `yaml:"training" json:"training"`
	// Round holds sampling, deadlines and the protocol's timing.
	Round Round `yaml:"round" json:"round"`
	// Strategy is the aggregation rule and its parameters.
	Strategy Strategy `yaml:"strategy" json:"strategy"`
	// Privacy selects how updates are protected.
	Privacy Privacy `yaml:"privacy" json:"privacy"`
}

// Member is one genesis member.
type Member struct {
	// ID is the member's libp2p peer ID in text form ("12D3KooW...").
	ID string `yaml:"id" json:"id"`
	// Voter makes the member a Raft voter; the others are learners. 3 to 7
	// voters are recommended, more are allowed.
	Voter bool `yaml:"voter" json:"voter"`
}

// Model is the model's architecture and the data schema: the shape of one
// input example (Height x Width x Channels) and the number of classes.
type Model struct {
	// Arch is ArchLogReg, Arch2NN or ArchCNN. Required.
	Arch string `yaml:"arch" json:"arch"`
	// Height, Width and Channels are the input shape, each >= 1, at most
	// 2^24 values per example.
	Height   int `yaml:"height" json:"height"`
	Width    int `yaml:"width" json:"width"`
	Channels int `yaml:"channels" json:"channels"`
	// Classes is the number of output classes, 2..256.
	Classes int `yaml:"classes" json:"classes"`
	// InitSeed seeds the initial global model's weights. Default 0.
	InitSeed uint64 `yaml:"init_seed" json:"init_seed"`
	// Labels optionally names the classes, one distinct name per class in
	// class order: a CSV label cell may then hold the name instead of the
	// class number. Left out, a manifest encodes (and hashes) as it did
	// before the field existed.
	Labels []string `yaml:"labels,omitempty" json:"labels,omitempty"`
}

// Training is the local training each participant runs in a round.
type Training struct {
	// Rounds is the number of rounds to run; 0 (the default) runs until
	// stopped.
	Rounds int `yaml:"rounds" json:"rounds"`
	// Epochs is the number of local epochs per round, >= 1. Default 1.
	Epochs int `yaml:"epochs" json:"epochs"`
	// BatchSize is the minibatch size, >= 1. Default 10.
	BatchSize int `yaml:"batch_size" json:"batch_size"`
	// LR is the local learning rate, > 0. Default 0.05.
	LR float64 `yaml:"lr" json:"lr"`
	// ProxMu is FedProx's proximal term mu, >= 0; 0 (the default) is plain
	// local SGD.
	ProxMu float64 `yaml:"prox_mu" json:"prox_mu"`
}

// Round holds the round parameters of DESIGN.md section 4: who is sampled,
// when a round closes, and the protocol's logical clock.
type Round struct {
	// Fraction is the fraction of members sampled per round, in (0, 1].
	// Default 1.
	Fraction float64 `yaml:"fraction" json:"fraction"`
	// MinParticipants is the fewest updates a round commits with, from 1 to
	// the number of genesis members. Default 1.
	MinParticipants int `yaml:"min_participants" json:"min_participants"`
	// OverSelect is the number of members sampled beyond the target, >= 0.
	// Default 0.
	OverSelect int `yaml:"over_select" json:"over_select"`
	// Tick is the protocol's logical clock period, >= 1ms. Default 100ms.
	Tick Duration `yaml:"tick" json:"tick"`
	// Deadline is the round deadline, a whole number of ticks and at least
	// 10 ticks. Default 60s.
	Deadline Duration `yaml:"deadline" json:"deadline"`
	// ElectionTicks is Raft's election timeout in ticks, >= 3; the heartbeat
	// is 1 tick. Default 10.
	ElectionTicks int `yaml:"election_ticks" json:"election_ticks"`
	// MaxExamplesPerMember caps the example count an update may claim, > 0.
	// Required.
	MaxExamplesPerMember int64 `yaml:"max_examples_per_member" json:"max_examples_per_member"`
	// RetainRounds is how many rounds of model blobs members keep and serve,
	// >= 1; the Raft log is compacted at that boundary. Default 10.
	RetainRounds int `yaml:"retain_rounds" json:"retain_rounds"`
}

// Strategy is the aggregation rule. Its fields are those of fedavg.Config
// (see there for ranges); the defaults are fedavg.DefaultConfig's. The
// robust rules (median, trimmedmean, krum, multikrum) need no privacy mode.
type Strategy struct {
	// Name is fedavg, fedavgm, fedadam, fedyogi, fedadagrad, median,
	// trimmedmean, krum or multikrum. Default fedavg.
	Name string `yaml:"name" json:"name"`
	// ServerLR is the server learning rate; 0 means the strategy's default.
	ServerLR float64 `yaml:"server_lr" json:"server_lr"`
	// Momentum is fedavgm's server momentum.
	Momentum float64 `yaml:"momentum" json:"momentum"`
	// Beta1 and Beta2 are the adaptive optimizers' moment decays.
	Beta1 float64 `yaml:"beta1" json:"beta1"`
	Beta2 float64 `yaml:"beta2" json:"beta2"`
	// Tau is the adaptive optimizers' degree of adaptivity.
	Tau float64 `yaml:"tau" json:"tau"`
	// TrimFraction is trimmedmean's fraction trimmed at each end.
	TrimFraction float64 `yaml:"trim_fraction" json:"trim_fraction"`
	// Byzantine is krum's and multikrum's f.
	Byzantine int `yaml:"byzantine" json:"byzantine"`
	// MultiKrumM is multikrum's m; 0 means n - f.
	MultiKrumM int `yaml:"multikrum_m" json:"multikrum_m"`
	// ClipNorm > 0 bounds each update's L2 norm before aggregation.
	ClipNorm float64 `yaml:"clip_norm" json:"clip_norm"`
}

// defaults returns the manifest every parse starts from: the fields a
// manifest may leave out hold their defaults, the others their zero value.
func defaults() Manifest {
	s := fedavg.DefaultConfig()
	return Manifest{
		Training: Training{
			Epochs:    s.Train.Epochs,
			BatchSize: s.Train.BatchSize,
			LR:        s.Train.LR,
			ProxMu:    s.Train.ProxMu,
		},
		Round: Round{
			Fraction:        1,
			MinParticipants: 1,
			Tick:            Duration(DefaultTick),
			Deadline:        Duration(DefaultDeadline),
			ElectionTicks:   DefaultElectionTicks,
			RetainRounds:    DefaultRetainRounds,
		},
		Strategy: Strategy{
			Name:         s.Strategy,
			ServerLR:     s.ServerLR,
			Momentum:     s.Momentum,
			Beta1:        s.Beta1,
			Beta2:        s.Beta2,
			Tau:          s.Tau,
			TrimFraction: s.TrimFraction,
			Byzantine:    s.Byzantine,
			MultiKrumM:   s.MultiKrumM,
			ClipNorm:     s.ClipNorm,
		},
		Privacy: Privacy{Mode: PrivacyNone},
	}
}

// UnmarshalYAML fills in the defaults, then decodes the document over them,
// so that omitted fields keep their defaults. It has the callback form so
// that a decoder's KnownFields setting also applies to the fields decoded
// through it.
func (m *Manifest) UnmarshalYAML(unmarshal func(any) error) error {
	*m = defaults()
	type plain Manifest
	return unmarshal((*plain)(m))
}

// Marshal encodes m as YAML, every field written out. Parse reads the result
// back to a manifest with the same consortium ID.
func (m *Manifest) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("manifest: marshal: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("manifest: marshal: %w", err)
	}
	return buf.Bytes(), nil
}

// Canonical returns the canonical encoding the consortium ID is the hash of
// (see the package documentation). It fails on a member ID that does not
// parse and on a float that is not finite, which Validate rejects.
func (m *Manifest) Canonical() ([]byte, error) {
	c := *m
	type keyed struct {
		id identity.PeerID
		m  Member
	}
	ks := make([]keyed, len(m.Members))
	for i, mem := range m.Members {
		id, err := identity.ParsePeerID(mem.ID)
		if err != nil {
			return nil, fmt.Errorf("manifest: canonical encoding: members[%d].id: %w", i, err)
		}
		ks[i] = keyed{id, Member{ID: id.String(), Voter: mem.Voter}}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int { return identity.Compare(a.id, b.id) })
	c.Members = make([]Member, len(ks))
	for i, k := range ks {
		c.Members[i] = k.m
	}

	// Encoding the struct, decoding it into maps and encoding those again
	// sorts the keys at every level; json.Number keeps every number's text.
	raw, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("manifest: canonical encoding: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("manifest: canonical encoding: %w", err)
	}
	positiveZero(doc)
	doc["protocol"] = ProtocolVersion
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("manifest: canonical encoding: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// positiveZero rewrites every -0 in a decoded JSON value as 0, so that -0.0
// and 0 in a manifest give the same consortium ID.
func positiveZero(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if n, ok := x.(json.Number); ok && n == "-0" {
				v[k] = json.Number("0")
			}
			positiveZero(x)
		}
	case []any:
		for i, x := range v {
			if n, ok := x.(json.Number); ok && n == "-0" {
				v[i] = json.Number("0")
			}
			positiveZero(x)
		}
	}
}

// ConsortiumID is the SHA-256 of Canonical. It is independent of YAML
// formatting, key order, comments and the order of members. It panics if m
// cannot be encoded, which only an invalid manifest can cause: call it on a
// manifest Parse returned or Validate accepted.
func (m *Manifest) ConsortiumID() [32]byte {
	b, err := m.Canonical()
	if err != nil {
		panic(err)
	}
	return sha256.Sum256(b)
}

// StrategyConfig maps Strategy and Training to the aggregation package's
// configuration.
func (m *Manifest) StrategyConfig() fedavg.Config {
	s, t := m.Strategy, m.Training
	return fedavg.Config{
		Strategy:     s.Name,
		Train:        fedavg.TrainConfig{Epochs: t.Epochs, BatchSize: t.BatchSize, LR: t.LR, ProxMu: t.ProxMu},
		ServerLR:     s.ServerLR,
		Momentum:     s.Momentum,
		Beta1:        s.Beta1,
		Beta2:        s.Beta2,
		Tau:          s.Tau,
		TrimFraction: s.TrimFraction,
		Byzantine:    s.Byzantine,
		MultiKrumM:   s.MultiKrumM,
		ClipNorm:     s.ClipNorm,
	}
}

// MemberIDs returns the genesis members' peer IDs sorted by bytes. It panics
// on an ID that does not parse, which Validate rejects.
func (m *Manifest) MemberIDs() []identity.PeerID {
	return m.peerIDs(func(Member) bool { return true })
}

// Voters returns the genesis voters' peer IDs sorted by bytes. It panics on
// an ID that does not parse, which Validate rejects.
func (m *Manifest) Voters() []identity.PeerID {
	return m.peerIDs(func(mem Member) bool { return mem.Voter })
}

func (m *Manifest) peerIDs(keep func(Member) bool) []identity.PeerID {
	var ids []identity.PeerID
	for i, mem := range m.Members {
		if !keep(mem) {
			continue
		}
		id, err := identity.ParsePeerID(mem.ID)
		if err != nil {
			panic(fmt.Sprintf("manifest: members[%d].id: %v", i, err))
		}
		ids = append(ids, id)
	}
	slices.SortFunc(ids, identity.Compare)
	return ids
}

// DeadlineTicks is the round deadline in protocol ticks, 0 if the tick is
// not positive.
func (m *Manifest) DeadlineTicks() int {
	if m.Round.Tick <= 0 {
		return 0
	}
	return int(m.Round.Deadline / m.Round.Tick)
}

// exampleVoters is how many voters Example picks when it cannot make every
// member a voter.
const (
	exampleVoters    = 5
	exampleAllVoters = 7
)

// Example returns a manifest named "example" for the given members: the
// 2NN on 28x28x1 inputs with 10 classes (MNIST), at most 60,000 examples per
// member (MNIST's training set) and defaults everywhere else. Members are
// listed in byte order; all of them vote if there are at most 7, otherwise
// the first 5 in byte order do. With fewer than 3 members the result does
// not validate: a consortium needs 3 voters.
func Example(ids []identity.PeerID) *Manifest {
	m := defaults()
	m.Name = "example"
	m.Model = Model{Arch: Arch2NN, Height: 28, Width: 28, Channels: 1, Classes: 10}
	m.Round.MaxExamplesPerMember = 60000
	sorted := slices.Clone(ids)
	slices.SortFunc(sorted, identity.Compare)
	for i, id := range sorted {
		voter := len(sorted) <= exampleAllVoters || i < exampleVoters
		m.Members = append(m.Members, Member{ID: id.String(), Voter: voter})
	}
	return &m
}
