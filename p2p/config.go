package p2p

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/protocol"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/wire"
)

// Gate judges gossip and says what may be served; the node's round.Gate
// implements it. Its methods run on the host's goroutines (pubsub's
// validators, including within Publish for the member's own messages, and
// the stream handlers), concurrently, so they must be cheap, safe for
// concurrent use and never wait on the node's event loop.
type Gate interface {
	// Validate judges a gossip message whose authenticated gossip author is
	// author (the host has checked that author is on its allow-list). It
	// returns a verdict, a short reason for the counters ("stale",
	// "bad_signature", ...; empty for Accept) and, for an accepted message,
	// its decoded value, which the host hands to the node with the message
	// (wire.Inbound.Msg) so that nothing decodes it twice. A message that
	// author did not sign is refused with wire.ReasonAuthorMismatch.
	Validate(author identity.PeerID, msg []byte) (wire.Verdict, string, any)
	// ValidateSigned judges a message no gossip author vouches for (one
	// obtained by Pull): the author is the signer the message names, which
	// it returns with the same verdict, reason and decoded value.
	ValidateSigned(msg []byte) (identity.PeerID, wire.Verdict, string, any)
	// Servable says whether blob d may be served: it is named in a valid
	// signed announcement or entry, or is the member's own.
	Servable(d [32]byte) bool
}

// Config configures a Host. Gate is required.
type Config struct {
	// Identity is the member's key; its peer ID is the host's.
	Identity identity.Identity
	// Consortium is the consortium ID; it is part of every protocol ID and
	// of the topic name, so consortia and protocol versions never mix.
	Consortium [32]byte
	// ListenAddrs are the multiaddrs to listen on, for example
	// /ip4/0.0.0.0/tcp/4001 and /ip4/0.0.0.0/udp/4001/quic-v1 (QUIC only
	// without a PSK). At least one is required.
	ListenAddrs []string
	// AddressBook lists other members as full multiaddrs ending in
	// /p2p/<peer ID>. The keeper dials those that are members.
	AddressBook []string
	// PSK, if set, is a 32-byte pre-shared key (LoadPSK): every connection
	// is encrypted with it as well, and only TCP can carry it.
	PSK []byte
	// Members is the allow-list at start: the genesis members, or the
	// membership applied in the log. Only members connect, gossip and open
	// streams. Host.SetMembers replaces it.
	Members []identity.PeerID
	// Gate judges gossip (after the host's own membership check) and says
	// which blobs may be served.
	Gate Gate
	// Blobs serves blobs to other members; nil serves none.
	Blobs BlobSource
	// InboxSize bounds Host.Inbox; 0 means 1024. A full inbox drops what
	// arrives (counted "<protocol>/inbox_full").
	InboxSize int
	// Limits bound the stream protocols; zero fields get DefaultLimits.
	Limits Limits
	// Logger receives the host's logs; nil discards them.
	Logger *slog.Logger

	// keeper tunes the redial loop (tests shorten it); zero fields get
	// the defaults.
	keeper keeperParams
}

// keeperParams are the keeper's timings.
type keeperParams struct {
	tick        time.Duration // how often it looks for members to dial
	backoffMin  time.Duration // first delay after a failed dial
	backoffMax  time.Duration // the delay's ceiling
	dialTimeout time.Duration // one dial attempt
	meshGrace   time.Duration // a connected member missing from the topic this long gets its connection cycled
}

func (k keeperParams) withDefaults() keeperParams {
	if k.tick <= 0 {
		k.tick = time.Second
	}
	if k.backoffMin <= 0 {
		k.backoffMin = time.Second
	}
	if k.backoffMax <= 0 {
		k.backoffMax = time.Minute
	}
	if k.dialTimeout <= 0 {
		k.dialTimeout = 10 * time.Second
	}
	if k.meshGrace <= 0 {
		k.meshGrace = 30 * time.Second
	}
	return k
}

// defaultInboxSize is the inbox's capacity when Config.InboxSize is 0.
const defaultInboxSize = 1024

// Errors of configuration.
var (
	ErrConfig = errors.New("p2p: invalid config")
	ErrPSK    = errors.New("p2p: invalid pre-shared key")
)

// validate checks c and fills defaults.
func (c *Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
	}
	if len(c.Identity.Private) != ed25519.PrivateKeySize {
		return bad("Identity: no Ed25519 private key")
	}
	if want := identity.PeerIDFromPublicKey(c.Identity.Private.Public().(ed25519.PublicKey)); !bytes.Equal(want, c.Identity.ID) {
		return bad("Identity: peer ID %s does not match the key (%s)", c.Identity.ID, want)
	}
	if c.Consortium == ([32]byte{}) {
		return bad("Consortium: the zero ID")
	}
	if len(c.ListenAddrs) == 0 {
		return bad("ListenAddrs: none (for example /ip4/0.0.0.0/tcp/4001)")
	}
	for _, s := range c.ListenAddrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return bad("ListenAddrs: %q: %v", s, err)
		}
		if c.PSK != nil && !isPlainTCP(a) {
			return bad("ListenAddrs: %q: with a pre-shared key only plain TCP addresses work "+
				"(QUIC, WebTransport and WebRTC refuse private networks); use /ip4/<ip>/tcp/<port>", s)
		}
	}
	for _, s := range c.AddressBook {
		if _, err := peer.AddrInfoFromString(s); err != nil {
			return bad("AddressBook: %q: %v (want a multiaddr ending in /p2p/<peer ID>)", s, err)
		}
	}
	if c.PSK != nil && len(c.PSK) != 32 {
		return fmt.Errorf("%w: %d bytes, want 32", ErrPSK, len(c.PSK))
	}
	if c.Gate == nil {
		return bad("Gate: required")
	}
	if c.InboxSize < 0 {
		return bad("InboxSize: %d (0 means %d)", c.InboxSize, defaultInboxSize)
	}
	if c.InboxSize == 0 {
		c.InboxSize = defaultInboxSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.keeper = c.keeper.withDefaults()
	return nil
}

// libp2pOptions are the options of the member's libp2p host: its identity,
// explicit listen addresses, the allow-list gater, no relay, no metrics on
// the default Prometheus registry (the node registers its own), TCP and,
// without a pre-shared key, QUIC. WebSocket, WebTransport and WebRTC stay
// off: members reach each other directly.
func (c *Config) libp2pOptions(g *gater, bw metrics.Reporter) []libp2p.Option {
	opts := []libp2p.Option{
		libp2p.BandwidthReporter(bw),
		libp2p.Identity(privKey(c.Identity)),
		libp2p.ListenAddrStrings(c.ListenAddrs...),
		libp2p.ConnectionGater(g),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.UserAgent("globalbrain"),
		libp2p.Transport(tcp.NewTCPTransport),
	}
	if c.PSK != nil {
		opts = append(opts, libp2p.PrivateNetwork(pnet.PSK(c.PSK)))
	} else {
		opts = append(opts, libp2p.Transport(quic.NewTransport))
	}
	return opts
}

// isPlainTCP reports whether a is an IP or DNS address followed by /tcp/<port>
// and nothing else (no WebSocket, no TLS on top).
func isPlainTCP(a ma.Multiaddr) bool {
	ps := a.Protocols()
	if len(ps) != 2 {
		return false
	}
	switch ps[0].Code {
	case ma.P_IP4, ma.P_IP6, ma.P_DNS, ma.P_DNS4, ma.P_DNS6:
	default:
		return false
	}
	return ps[1].Code == ma.P_TCP
}

// protocolID names one of the consortium's protocols:
// /globalbrain/<hex consortium ID>/<name>.
func protocolID(consortium [32]byte, name string) protocol.ID {
	return protocol.ID("/globalbrain/" + hex.EncodeToString(consortium[:]) + "/" + name)
}

// pskHeader starts a pre-shared key file in the format of pnet.DecodeV1PSK.
const pskHeader = "/key/swarm/psk/1.0.0/\n/base16/\n"

// LoadPSK reads a pre-shared key file in the libp2p format (as IPFS private
// networks use):
//
//	/key/swarm/psk/1.0.0/
//	/base16/
//	<64 hex digits>
//
// Like the identity key, the file must not be accessible to group or others.
func LoadPSK(path string) ([]byte, error) {
	b, err := readSecret(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPSK, err)
	}
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(b))
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			err = errors.New("key shorter than 32 bytes")
		}
		return nil, fmt.Errorf("%w: %s: %v (want the lines %q, %q and 64 hex digits)",
			ErrPSK, path, err, "/key/swarm/psk/1.0.0/", "/base16/")
	}
	return []byte(psk), nil
}

// NewPSK returns a fresh random pre-shared key.
func NewPSK() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails
	return k
}

// EncodePSK returns psk in the file format LoadPSK reads.
func EncodePSK(psk []byte) []byte {
	return []byte(pskHeader + hex.EncodeToString(psk) + "\n")
}

// WritePSK writes psk to path in the format LoadPSK reads, with mode 0600;
// it refuses to replace an existing file.
func WritePSK(path string, psk []byte) error {
	if len(psk) != 32 {
		return fmt.Errorf("%w: %d bytes, want 32", ErrPSK, len(psk))
	}
	if err := writeSecret(path, EncodePSK(psk)); err != nil {
		return fmt.Errorf("%w: %w", ErrPSK, err)
	}
	return nil
}
