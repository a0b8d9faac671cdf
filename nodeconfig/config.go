package nodeconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/internal/strictyaml"
	"github.com/globalbrain/globalbrain/manifest"
)

// Defaults of the fields a node config leaves out.
const (
	DefaultIdentityKey = "identity.key"
	DefaultStore       = "store"
	DefaultHTTP        = "127.0.0.1:9464"
	DefaultLogLevel    = "info"
	DefaultDataset     = "mnist"
	DefaultPartition   = "iid"
	DefaultAlpha       = 0.5
	DefaultShards      = 2
	DefaultSeed        = 1
	// DefaultTrainerTimeout bounds one round of an external trainer.
	DefaultTrainerTimeout = "30m"
)

// Accepted values of the enumerated fields.
var (
	LogLevels  = []string{"debug", "info", "warn", "error"}
	Datasets   = []string{"mnist", "fashion-mnist", "idx", "csv"}
	Partitions = []string{"iid", "shards", "dirichlet"}
)

// Config is a node's configuration. Load and Parse return it validated,
// with defaults applied and relative paths resolved.
type Config struct {
	// IdentityKey is the file holding the node's Ed25519 identity key (mode
	// 0600). Default identity.key.
	IdentityKey string `yaml:"identity_key"`
	// Manifest is the consortium's genesis manifest. Required.
	Manifest string `yaml:"manifest"`
	// Listen are the multiaddrs the node listens on
	// ("/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"). Required.
	Listen []string `yaml:"listen"`
	// AddressBook are other members' addresses, each ending in
	// /p2p/<peer ID> ("/ip4/10.0.0.2/tcp/4001/p2p/12D3KooW...").
	AddressBook []string `yaml:"address_book"`
	// Store is the store directory. Default store.
	Store string `yaml:"store"`
	// HTTP is the host:port of the local API (/status, /metrics,
	// /member/submit). Default 127.0.0.1:9464. It must be a loopback
	// address unless HTTPPublic is set.
	HTTP string `yaml:"http"`
	// HTTPPublic allows a non-loopback HTTP address. The API has no
	// authentication: put it behind something that has.
	HTTPPublic bool `yaml:"http_public"`
	// PSKFile is an optional pre-shared key file (libp2p's swarm.key
	// format): the consortium becomes a private network, TCP only.
	PSKFile string `yaml:"psk_file"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`
	// Data is what the built-in trainer trains on.
	Data Data `yaml:"data"`
	// MaxExamples caps the example count this node claims for an update;
	// 0 (the default) means the manifest's max_examples_per_member. It may
	// only be lower than the manifest's.
	MaxExamples int64 `yaml:"max_examples"`
	// Privacy is this node's own privacy setting.
	Privacy Privacy `yaml:"privacy"`
	// Trainer, if its Command is set, trains with an external program
	// instead of the built-in engine. Only a node's own config can name
	// one: the shared manifest never runs code on a member.
	Trainer Trainer `yaml:"trainer"`

	// Path is the file the configuration was read from ("" if none).
	Path string `yaml:"-"`
}

// Privacy is what a node may set about its own privacy: only a lower
// budget than the manifest's.
type Privacy struct {
	// Epsilon lowers this node's privacy ceiling below the manifest's
	// privacy.dp.epsilon; 0 (the default) keeps the manifest's. It may only
	// be lower, and only under a privacy mode that keeps a budget (update,
	// distributed, dp-sgd).
	Epsilon float64 `yaml:"epsilon"`
}

// Trainer is an external trainer: a program the node runs each round it
// trains (package train/external holds the contract).
type Trainer struct {
	// Command is the program and its arguments, run in the directory of
	// the node config; the node appends the path of the round's JSON
	// config. Empty: the built-in trainer.
	Command []string `yaml:"command"`
	// Timeout bounds one round's run, a Go duration ("90s", "1h"); past
	// it the command's process group is killed and the round declined.
	// Default 30m.
	Timeout string `yaml:"timeout"`
	// Dir is the directory the command runs in: the node config's.
	Dir string `yaml:"-"`
}

// Default returns the configuration every parse starts from: the fields a
// file may leave out hold their defaults, the required ones are empty.
func Default() Config {
	return Config{
		IdentityKey: DefaultIdentityKey,
		Store:       DefaultStore,
		HTTP:        DefaultHTTP,
		LogLevel:    DefaultLogLevel,
		Data: Data{
			Dataset:    DefaultDataset,
			Partition:  DefaultPartition,
			Members:    1,
			Seed:       DefaultSeed,
			Alpha:      DefaultAlpha,
			Shards:     DefaultShards,
			CSV:        CSV{Header: true, Delimiter: DefaultDelimiter, Normalize: Normalize{Method: DefaultNormalize}},
			Validation: Validation{Seed: DefaultSeed},
		},
		Trainer: Trainer{Timeout: DefaultTrainerTimeout},
	}
}

// UnmarshalYAML fills in the defaults, then decodes the document over them.
// It has the callback form so that the decoder's KnownFields setting also
// applies to the fields decoded through it.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = Default()
	type plain Config
	return unmarshal((*plain)(c))
}

// Validate checks every field and reports every problem, each a
// *FieldError naming the field, joined with errors.Join.
func (c *Config) Validate() error { return strictyaml.Join(c.validate()) }

func (c *Config) validate() []*FieldError {
	var v validator
	if strings.TrimSpace(c.IdentityKey) == "" {
		v.bad("identity_key", "required (a file path; %s is the default)", DefaultIdentityKey)
	}
	if strings.TrimSpace(c.Manifest) == "" {
		v.bad("manifest", "required (the consortium's genesis manifest)")
	}
	if strings.TrimSpace(c.Store) == "" {
		v.bad("store", "required (a directory; %s is the default)", DefaultStore)
	}
	if len(c.Listen) == 0 {
		v.bad("listen", "required: at least one multiaddr such as /ip4/0.0.0.0/tcp/4001")
	}
	for i, s := range c.Listen {
		c.validateListen(&v, fmt.Sprintf("listen[%d]", i), s)
	}
	seen := map[string]int{}
	for i, s := range c.AddressBook {
		field := fmt.Sprintf("address_book[%d]", i)
		if _, _, err := ParsePeerAddr(s); err != nil {
			v.bad(field, "%v", err)
			continue
		}
		if j, dup := seen[s]; dup {
			v.bad(field, "%s duplicates address_book[%d]", s, j)
			continue
		}
		seen[s] = i
	}
	if err := checkHTTP(c.HTTP, c.HTTPPublic); err != nil {
		v.bad("http", "%v", err)
	}
	if !slices.Contains(LogLevels, c.LogLevel) {
		v.bad("log_level", "%q unknown, want one of %s", c.LogLevel, strings.Join(LogLevels, ", "))
	}
	c.Data.validate(&v)
	if c.MaxExamples < 0 {
		v.bad("max_examples", "%d, want >= 0 (0: the manifest's cap)", c.MaxExamples)
	}
	if e := c.Privacy.Epsilon; !(e >= 0) || math.IsInf(e, 0) {
		v.bad("privacy.epsilon", "%v, want >= 0 and finite (0: the manifest's privacy.dp.epsilon)", e)
	}
	c.Trainer.validate(&v)
	return v.errs
}

func (c *Config) validateListen(v *validator, field, s string) {
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		v.bad(field, "%q is not a multiaddr: %v", s, err)
		return
	}
	var tcp, quic bool
	for _, p := range a.Protocols() {
		switch p.Code {
		case ma.P_TCP:
			tcp = true
		case ma.P_QUIC_V1:
			quic = true
		case ma.P_P2P:
			v.bad(field, "%s names a peer ID; a listen address does not", s)
			return
		}
	}
	switch {
	case !tcp && !quic:
		v.bad(field, "%s has neither /tcp nor /udp/.../quic-v1, want for example /ip4/0.0.0.0/tcp/4001", s)
	case quic && c.PSKFile != "":
		v.bad(field, "%s is QUIC, but with psk_file set the node speaks TCP only (libp2p private networks do not support QUIC)", s)
	}
}

func (t *Trainer) validate(v *validator) {
	if t.Command != nil && len(t.Command) == 0 {
		v.bad("trainer.command", "an empty list; give the program and its arguments, such as [/usr/bin/python3, train.py], or leave trainer out for the built-in trainer")
	}
	if len(t.Command) > 0 && strings.TrimSpace(t.Command[0]) == "" {
		v.bad("trainer.command[0]", "empty, want the program to run")
	}
	if d, err := time.ParseDuration(t.Timeout); err != nil || d <= 0 {
		v.bad("trainer.timeout", "%q, want a positive duration such as 90s or 10m", t.Timeout)
	}
}

// TimeoutDuration is Timeout parsed (0 if it does not parse; Validate
// refuses that).
func (t Trainer) TimeoutDuration() time.Duration {
	d, _ := time.ParseDuration(t.Timeout)
	return d
}

// checkHTTP checks the API address: host:port, the host a loopback address
// unless public.
func checkHTTP(addr string, public bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q, want host:port such as %s", addr, DefaultHTTP)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q, want 0..65535", addr, port)
	}
	if public {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return nil
	}
	if host == "" {
		addr += " (every interface)"
	}
	return fmt.Errorf("%s is not a loopback address; the API can propose membership changes and has no authentication: use 127.0.0.1, or set http_public: true to serve it beyond this machine", addr)
}

// ParsePeerAddr parses an address book entry: a multiaddr ending in
// /p2p/<peer ID>. It returns the peer and the address without the /p2p part.
func ParsePeerAddr(s string) (identity.PeerID, ma.Multiaddr, error) {
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return nil, nil, fmt.Errorf("%q is not a multiaddr: %v", s, err)
	}
	rest, last := ma.SplitLast(a)
	if last == nil || last.Code() != ma.P_P2P {
		return nil, nil, fmt.Errorf("%s does not end in /p2p/<peer ID>", s)
	}
	if len(rest) == 0 {
		return nil, nil, fmt.Errorf("%s has no address before /p2p/<peer ID>", s)
	}
	id, err := identity.ParsePeerID(last.Value())
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", s, err)
	}
	return id, rest, nil
}

// Level returns the slog level of LogLevel (info if it is unknown).
func (c *Config) Level() slog.Level {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// resolve makes the relative paths absolute against dir.
func (c *Config) resolve(dir string) {
	for _, p := range append([]*string{&c.IdentityKey, &c.Manifest, &c.Store, &c.PSKFile}, c.Data.paths()...) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	c.Trainer.Dir = dir
}

// Shape of the built-in data sets: both are 28x28 grey images of 10 classes.
const (
	datasetHeight   = 28
	datasetWidth    = 28
	datasetChannels = 1
	datasetClasses  = 10
)

// ErrManifestMismatch matches the errors of CheckManifest.
var ErrManifestMismatch = errors.New("nodeconfig: does not fit the manifest")

// CheckManifest checks the configuration against the consortium's manifest:
// the data set fits the model's input shape and classes, and max_examples
// is at most the manifest's cap.
func (c *Config) CheckManifest(m *manifest.Manifest) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrManifestMismatch, fmt.Sprintf(format, args...)))
	}
	md := m.Model
	// The built-in data sets' shape is known here; that of an IDX or CSV
	// data set only once it is read (train.CheckSchema, before the node
	// takes part).
	builtin := c.Data.Dataset == "mnist" || c.Data.Dataset == "fashion-mnist"
	if builtin && (md.Height != datasetHeight || md.Width != datasetWidth || md.Channels != datasetChannels || md.Classes != datasetClasses) {
		bad("data.dataset %s has %dx%dx%d inputs and %d classes, the manifest's model %dx%dx%d and %d classes",
			c.Data.Dataset, datasetHeight, datasetWidth, datasetChannels, datasetClasses, md.Height, md.Width, md.Channels, md.Classes)
	}
	if c.MaxExamples > m.Round.MaxExamplesPerMember {
		bad("max_examples %d is above the manifest's max_examples_per_member %d; a node may only claim less", c.MaxExamples, m.Round.MaxExamplesPerMember)
	}
	if e := c.Privacy.Epsilon; e > 0 {
		switch {
		case !m.Privacy.UsesDP():
			bad("privacy.epsilon %v is set, but the manifest's privacy.mode %s keeps no privacy budget; remove it", e, m.Privacy.Mode)
		case e > m.Privacy.DP.Epsilon:
			bad("privacy.epsilon %v is above the manifest's privacy.dp.epsilon %v; a node may only lower its own budget", e, m.Privacy.DP.Epsilon)
		}
	}
	if len(c.Trainer.Command) > 0 && m.Privacy.Mode == manifest.PrivacyDPSGD {
		bad("trainer.command is set, but the manifest's privacy.mode dp-sgd needs the built-in trainer (its DP-SGD is what the node charges); remove trainer")
	}
	return errors.Join(errs...)
}

// EpsilonCeiling is this node's privacy budget: privacy.epsilon, or the
// manifest's privacy.dp.epsilon if that is lower or privacy.epsilon is 0.
// It is 0 under a mode that keeps no budget.
func (c *Config) EpsilonCeiling(m *manifest.Manifest) float64 {
	if !m.Privacy.UsesDP() {
		return 0
	}
	if e := c.Privacy.Epsilon; e > 0 && e < m.Privacy.DP.Epsilon {
		return e
	}
	return m.Privacy.DP.Epsilon
}

// ExampleCap is the example count this node claims at most: max_examples,
// or the manifest's cap if that is lower or max_examples is 0.
func (c *Config) ExampleCap(m *manifest.Manifest) int64 {
	if c.MaxExamples > 0 && c.MaxExamples < m.Round.MaxExamplesPerMember {
		return c.MaxExamples
	}
	return m.Round.MaxExamplesPerMember
}

// Peers returns the address book parsed, in file order.
func (c *Config) Peers() []Peer {
	var out []Peer
	for _, s := range c.AddressBook {
		id, addr, err := ParsePeerAddr(s)
		if err == nil {
			out = append(out, Peer{ID: id, Addr: addr})
		}
	}
	return out
}

// Peer is one address book entry.
type Peer struct {
	ID   identity.PeerID
	Addr ma.Multiaddr // without the /p2p part
}

// ListenAddrs returns the listen addresses parsed.
func (c *Config) ListenAddrs() []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, s := range c.Listen {
		if a, err := ma.NewMultiaddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}
