package member

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/globalbrain/globalbrain/api"
	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/train/local"
)

// Libp2p configures a member's libp2p host.
type Libp2p struct {
	Listen      []string
	AddressBook []string
	PSK         []byte
	Limits      p2p.Limits
}

// Options assemble a member. Identity, Manifest, StoreDir, Trainer and one
// transport (Libp2p or MemNet) are required.
type Options struct {
	Identity identity.Identity
	Manifest *manifest.Manifest
	// Genesis is G(0); nil computes it from the manifest's model and seed.
	Genesis  *fedavg.Global
	StoreDir string
	// Store opens the store; a zero BlobCache is store.DefaultBlobCache
	// (negative: none).
	Store store.Options
	// WrapStore, if set, wraps the store the node writes to (benchmarks
	// count its bytes).
	WrapStore func(*store.DB) node.Store

	Libp2p *Libp2p      // a libp2p host, or
	MemNet *node.MemNet // the in-memory network of one process

	Trainer   node.Trainer
	Evaluator *local.Evaluator // nil: applied models are not evaluated
	// HTTP, if set, serves the local API (/status, /metrics,
	// /member/submit); the member owns and closes it.
	HTTP net.Listener
	// Tick, if positive, ticks the node in real time; 0 leaves ticking to
	// the caller (virtual time).
	Tick   time.Duration
	Logger *slog.Logger
	// Joining: a member added after genesis.
	Joining bool
	// Crash is handed to the node and the store (tests).
	Crash func(point string) error
	// OnApply, if set, hears of every applied outcome, on the node's loop.
	OnApply func(node.Applied)
	// Board, if set, receives the node's status (a log handler built
	// before the member reads it).
	Board *node.Board
	// EpsilonCeiling is the node's privacy budget (node.Config); 0: the
	// manifest's.
	EpsilonCeiling float64
	// Rand is the privacy noise's randomness; nil: crypto/rand (tests).
	Rand io.Reader
}

// Member is an assembled member.
type Member struct {
	o     Options
	log   *slog.Logger
	db    *store.DB
	gate  *round.Gate
	host  *p2p.Host // nil on the in-memory network
	node  *node.Node
	api   *api.Server
	http  *http.Server
	close sync.Once
}

// Open assembles a member: nothing runs yet but the transport, which
// listens. On error it closes what it opened.
func Open(ctx context.Context, o Options) (_ *Member, err error) {
	if o.Manifest == nil || o.Trainer == nil || o.StoreDir == "" || (o.Libp2p == nil) == (o.MemNet == nil) {
		return nil, errors.New("member: Options need Manifest, Trainer, StoreDir and exactly one of Libp2p and MemNet")
	}
	man := o.Manifest
	if o.Trainer, err = wirePrivacy(man, o.Identity, o.Trainer); err != nil {
		return nil, err
	}
	if o.Genesis == nil {
		if o.Genesis, err = local.Genesis(local.Spec(man), man.Model.InitSeed); err != nil {
			return nil, err
		}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Member{o: o, log: log}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	so := o.Store
	if so.Crash == nil {
		so.Crash = o.Crash
	}
	if so.BlobCache == 0 {
		so.BlobCache = store.DefaultBlobCache
	}
	if m.db, err = store.Open(o.StoreDir, so); err != nil {
		return nil, err
	}
	if err := checkStoreOwner(m.db, o.Identity, man); err != nil {
		return nil, err
	}
	cid := man.ConsortiumID()
	m.gate = round.NewGate(cid, man.MemberIDs())
	var reg *prometheus.Registry
	var metrics *api.Metrics
	if o.HTTP != nil {
		reg = prometheus.NewRegistry()
		metrics = api.NewMetrics(reg)
	}
	var network node.Network
	if o.Libp2p != nil {
		m.host, err = p2p.New(ctx, p2p.Config{
			Identity:    o.Identity,
			Consortium:  cid,
			ListenAddrs: o.Libp2p.Listen,
			AddressBook: o.Libp2p.AddressBook,
			PSK:         o.Libp2p.PSK,
			Members:     man.MemberIDs(),
			Gate:        countingGate{gate: m.gate, self: o.Identity.ID, metrics: metrics},
			Blobs:       m.db,
			Limits:      o.Libp2p.Limits,
			Logger:      log,
		})
		if err != nil {
			return nil, err
		}
		network = m.host
	} else {
		db := m.db
		network = o.MemNet.Join(o.Identity.ID, m.gate, func(d round.Digest) ([]byte, error) { return db.Blob(d) })
	}
	var st node.Store = m.db
	if o.WrapStore != nil {
		st = o.WrapStore(m.db)
	}
	m.node, err = node.New(node.Config{
		Identity: o.Identity, Manifest: man, Genesis: o.Genesis, Gate: m.gate,
		Store: st, Network: network, Trainer: o.Trainer, Logger: log,
		Joining: o.Joining, Crash: o.Crash, Board: o.Board,
		EpsilonCeiling: o.EpsilonCeiling, Rand: o.Rand,
		OnApply: func(a node.Applied) {
			if metrics != nil {
				metrics.ObserveApplied(a)
			}
			if o.Evaluator != nil {
				o.Evaluator.Submit(a.Round, a.Model)
			}
			if o.OnApply != nil {
				o.OnApply(a)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	if o.HTTP != nil {
		m.api = api.NewServer(m.source(), reg, metrics, log)
		m.http = &http.Server{Handler: m.api, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	}
	if o.Evaluator != nil {
		// The model applied before a restart is evaluated too, so /status
		// shows an accuracy at once.
		if s := m.node.Status(); s.Applied > 0 {
			if g, err := loadModel(m.db, s.Model); err == nil {
				o.Evaluator.Submit(s.Applied, g)
			}
		}
	}
	return m, nil
}

// Node returns the member's node.
func (m *Member) Node() *node.Node { return m.node }

// Host returns the member's libp2p host, nil on the in-memory network.
func (m *Member) Host() *p2p.Host { return m.host }

// Store returns the member's store.
func (m *Member) Store() *store.DB { return m.db }

// API returns the member's HTTP API, nil without Options.HTTP.
func (m *Member) API() *api.Server { return m.api }

// Close releases what Open opened, in reverse order: HTTP listener,
// transport, store. Run calls it; it is idempotent.
func (m *Member) Close() {
	m.close.Do(func() {
		if m.o.HTTP != nil && m.http == nil {
			m.o.HTTP.Close()
		}
		if m.host != nil {
			if err := m.host.Close(); err != nil {
				m.log.Warn("closing the transport", "err", err)
			}
		}
		if m.o.MemNet != nil {
			m.o.MemNet.Leave(m.o.Identity.ID)
		}
		if m.db != nil {
			if err := m.db.Close(); err != nil {
				m.log.Warn("closing the store", "err", err)
			}
		}
	})
}

func loadModel(db *store.DB, digest string) (*fedavg.Global, error) {
	var d fedavg.Digest
	if h, err := hex.DecodeString(digest); err != nil || len(h) != len(d) {
		return nil, fmt.Errorf("model digest %q", digest)
	} else {
		copy(d[:], h)
	}
	b, err := db.Blob(d)
	if err != nil {
		return nil, err
	}
	return fedavg.Decode(b)
}

// HTTPAddr is the address the API listens on, "" without one.
func (m *Member) HTTPAddr() string {
	if m.o.HTTP == nil {
		return ""
	}
	return m.o.HTTP.Addr().String()
}
