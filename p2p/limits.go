package p2p

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/globalbrain/globalbrain/wire"
)

// Limits bound what every stream protocol accepts. Zero values get the defaults.
type Limits struct {
	MaxFrame          int           // largest frame accepted, checked BEFORE allocating (default 4 MiB for control frames)
	MaxBlob           int64         // largest blob fetched/served (default 1 GiB)
	StreamsPerPeer    int           // concurrent inbound streams per peer per protocol (default 4)
	RequestsPerSecond float64       // per peer per protocol, token bucket, burst = 2x (default 20)
	ReadTimeout       time.Duration // per frame header/small frame read deadline (default 10s)
	IdleTimeout       time.Duration // a stream with no progress for this long is cut (default 30s)
	MinRate           int64         // bytes/s a blob transfer must sustain: its deadline is IdleTimeout + size/MinRate (default 1 MiB/s)
	FetchConcurrency  int           // concurrent outbound fetches (default 4; raised to 2 x FetchPerPeer if lower)
	FetchPerPeer      int           // concurrent outbound fetches from one server peer (default 2)
	MaxRaftFrame      int           // largest Raft message sent or accepted (default 2 MiB, or MaxFrame if that is lower)
	RaftPerSecond     float64       // Raft messages accepted per peer, token bucket, burst = 2x; the excess is read and dropped (default 200)
}

// defaultMaxRaftFrame is MaxRaftFrame's default: twice the 1 MiB that
// round gives raft as MaxSizePerMsg (raft.Config), which bounds a MsgApp's
// entries; votes, heartbeats and the small snapshots round makes are far
// below it.
const defaultMaxRaftFrame = 2 << 20

// fetchSlots is the global cap on concurrent outbound fetches:
// FetchConcurrency, raised so that one server peer, holding its
// FetchPerPeer slots, never holds more than half of them.
func (l Limits) fetchSlots() int { return max(l.FetchConcurrency, 2*l.FetchPerPeer) }

// DefaultLimits returns the limits used for every zero field of a Limits.
func DefaultLimits() Limits {
	return Limits{
		MaxFrame:          4 << 20,
		MaxBlob:           1 << 30,
		StreamsPerPeer:    4,
		RequestsPerSecond: 20,
		ReadTimeout:       10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MinRate:           1 << 20,
		FetchConcurrency:  4,
		FetchPerPeer:      2,
		MaxRaftFrame:      defaultMaxRaftFrame,
		// At round's default 100 ms tick a leader sends each follower
		// about 10 heartbeats a second, plus its appends, and the
		// follower answers each: 200 leaves a wide margin, and a burst
		// of 400 covers raft's 256 in-flight appends. A tick below
		// about 10 ms needs more.
		RaftPerSecond: 200,
	}
}

// withDefaults replaces zero or negative fields by their defaults.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFrame <= 0 {
		l.MaxFrame = d.MaxFrame
	}
	if l.MaxBlob <= 0 {
		l.MaxBlob = d.MaxBlob
	}
	if l.StreamsPerPeer <= 0 {
		l.StreamsPerPeer = d.StreamsPerPeer
	}
	if l.RequestsPerSecond <= 0 {
		l.RequestsPerSecond = d.RequestsPerSecond
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.MinRate <= 0 {
		l.MinRate = d.MinRate
	}
	if l.FetchConcurrency <= 0 {
		l.FetchConcurrency = d.FetchConcurrency
	}
	if l.FetchPerPeer <= 0 {
		l.FetchPerPeer = d.FetchPerPeer
	}
	if l.MaxRaftFrame <= 0 {
		l.MaxRaftFrame = min(d.MaxRaftFrame, l.MaxFrame)
	}
	if l.RaftPerSecond <= 0 {
		l.RaftPerSecond = d.RaftPerSecond
	}
	return l
}

// Reasons counted in Stats, besides wire.ReasonNotMember (the remote peer is
// not a member). Services may count further reasons.
const (
	ReasonFrameTooLarge  = "frame_too_large"  // an announced length above the limit
	ReasonTooManyStreams = "too_many_streams" // over StreamsPerPeer
	ReasonRateLimited    = "rate_limited"     // over RequestsPerSecond (streams) or RaftPerSecond (Raft messages)
	ReasonNotServable    = "not_servable"     // a blob the node may not serve
	ReasonTimeout        = "timeout"          // a read or write deadline expired
	ReasonBadRequest     = "bad_request"      // a malformed request or response
	ReasonHashMismatch   = "hash_mismatch"    // fetched bytes do not match the digest
	ReasonSizeMismatch   = "size_mismatch"    // the server announced another length than the signed one
	ReasonQueueFull      = "queue_full"       // an outbound queue was full; the message was dropped
	ReasonStreamError    = "stream_error"     // the stream broke (reset, EOF, closed connection)
	ReasonSourceError    = "source_error"     // the local store failed to produce a blob
	ReasonTruncated      = "truncated"        // a response was cut to the protocol's caps
	ReasonServed         = "served"           // a request answered in full
	ReasonResumed        = "resumed"          // a fetch resumed after a broken stream
	ReasonInboxFull      = "inbox_full"       // the node's inbox was full; what arrived was dropped
	ReasonUnanswered     = "unanswered"       // the node did not answer a sync request in time; the reply was empty
)

// maxStatsKeys bounds the distinct counters of a Stats. Reasons come from
// p2p's constants, pubsub's and the Gate's, and the keys become metric
// labels (/metrics): should a reason ever carry data a peer chose, the
// counters stop growing here, and what no longer fits is counted under
// statsOverflow.
const maxStatsKeys = 512

// statsOverflow is the counter of increments whose key did not fit.
const statsOverflow = "stats/overflow"

// Stats counts what each protocol served and cut off, by reason
// ("frame_too_large", "too_many_streams", "rate_limited", "not_member",
// "not_servable", "timeout", "bad_request", "hash_mismatch", ...), and the
// payload bytes received and sent. It keeps at most 512 distinct counters;
// increments of further keys are counted under "stats/overflow". Safe for
// concurrent use. The zero value is ready to use.
type Stats struct {
	mu      sync.RWMutex
	counts  map[string]*atomic.Uint64
	in, out atomic.Int64
}

// Inc adds one to the counter of reason for protocolName.
func (s *Stats) Inc(protocolName, reason string) {
	if s == nil {
		return
	}
	key := protocolName + "/" + reason
	s.mu.RLock()
	c := s.counts[key]
	s.mu.RUnlock()
	if c == nil {
		s.mu.Lock()
		if s.counts == nil {
			s.counts = make(map[string]*atomic.Uint64)
		}
		if c = s.counts[key]; c == nil {
			if len(s.counts) >= maxStatsKeys {
				key = statsOverflow
			}
			if c = s.counts[key]; c == nil {
				c = new(atomic.Uint64)
				s.counts[key] = c
			}
		}
		s.mu.Unlock()
	}
	c.Add(1)
}

// Snapshot returns a copy of all counters, keyed "protocol/reason".
func (s *Stats) Snapshot() map[string]uint64 {
	m := make(map[string]uint64)
	if s == nil {
		return m
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for k, c := range s.counts {
		m[k] = c.Load()
	}
	return m
}

// Get returns one counter; the key is "protocol/reason".
func (s *Stats) Get(protocolName, reason string) uint64 {
	if s == nil {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c := s.counts[protocolName+"/"+reason]; c != nil {
		return c.Load()
	}
	return 0
}

// AddBytes adds payload bytes received (in) and sent (out).
func (s *Stats) AddBytes(in, out int64) {
	if s == nil {
		return
	}
	s.in.Add(in)
	s.out.Add(out)
}

// Bytes returns the payload bytes received and sent so far.
func (s *Stats) Bytes() (in, out int64) {
	if s == nil {
		return 0, 0
	}
	return s.in.Load(), s.out.Load()
}

// tokenBucket admits rate events per second with a burst of 2 x rate (at
// least 1). It starts full. The caller serializes calls.
type tokenBucket struct {
	tokens float64
	last   time.Time
	primed bool
}

// take admits one event at now, or reports false when the bucket is empty.
func (b *tokenBucket) take(now time.Time, rate float64) bool {
	burst := max(2*rate, 1)
	if !b.primed {
		b.tokens, b.last, b.primed = burst, now, true
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(burst, b.tokens+dt*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// peerGate is one peer's state in a guard: open inbound streams, a token
// bucket of stream openings (RequestsPerSecond) and one of messages read on
// those streams (allowMessage), shared by all of the peer's streams.
type peerGate struct {
	streams  int
	requests tokenBucket
	messages tokenBucket
}

// guard admits inbound streams of one protocol: membership first, then the
// per-peer stream count, then the per-peer request rate. It also tracks the
// streams it admitted so Close can cut them and wait for their handlers.
type guard struct {
	name     string
	isMember func(peer.ID) bool
	lim      Limits
	stats    *Stats
	log      *slog.Logger
	now      func() time.Time

	mu     sync.Mutex
	peers  map[peer.ID]*peerGate
	active map[network.Stream]struct{}
	closed bool
	wg     sync.WaitGroup
	live   atomic.Int64 // handlers running, for tests
}

func newGuard(name string, isMember func(peer.ID) bool, lim Limits, stats *Stats, log *slog.Logger) *guard {
	if isMember == nil {
		isMember = func(peer.ID) bool { return false }
	}
	return &guard{
		name:     name,
		isMember: isMember,
		lim:      lim,
		stats:    stats,
		log:      log,
		now:      time.Now,
		peers:    make(map[peer.ID]*peerGate),
		active:   make(map[network.Stream]struct{}),
	}
}

// admit decides whether the handler may serve s. On refusal it resets the
// stream, counts the reason and returns false. On success the caller must
// call release(s) when it is done with the stream.
func (g *guard) admit(s network.Stream) bool {
	p := s.Conn().RemotePeer()
	if !g.isMember(p) {
		g.refuse(s, wire.ReasonNotMember)
		return false
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		_ = s.Reset()
		return false
	}
	pg := g.peers[p]
	if pg == nil {
		pg = &peerGate{}
		g.peers[p] = pg
	}
	if pg.streams >= g.lim.StreamsPerPeer {
		g.mu.Unlock()
		g.refuse(s, ReasonTooManyStreams)
		return false
	}
	if !pg.requests.take(g.now(), g.lim.RequestsPerSecond) {
		g.mu.Unlock()
		g.refuse(s, ReasonRateLimited)
		return false
	}
	pg.streams++
	g.active[s] = struct{}{}
	g.wg.Add(1)
	g.live.Add(1)
	g.mu.Unlock()
	return true
}

// allowMessage takes one token of peer p's message bucket (rate per second,
// burst 2 x rate), shared by all of p's streams of this protocol. It
// reports false when p is over its rate; p must have an admitted stream.
func (g *guard) allowMessage(p peer.ID, rate float64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	pg := g.peers[p]
	if pg == nil {
		return false
	}
	return pg.messages.take(g.now(), rate)
}

// release ends an admitted stream's accounting.
func (g *guard) release(s network.Stream) {
	p := s.Conn().RemotePeer()
	g.mu.Lock()
	if pg := g.peers[p]; pg != nil {
		pg.streams--
	}
	delete(g.active, s)
	g.mu.Unlock()
	g.live.Add(-1)
	g.wg.Done()
}

// refuse resets s and counts reason.
func (g *guard) refuse(s network.Stream, reason string) {
	g.stats.Inc(g.name, reason)
	_ = s.Reset()
	g.log.Debug("stream refused", "protocol", g.name, "peer", s.Conn().RemotePeer(), "reason", reason)
}

// fail resets s after an error while serving it and counts the reason:
// timeout, frame_too_large, or the given fallback.
func (g *guard) fail(s network.Stream, err error, fallback string) {
	reason := fallback
	switch {
	case isTimeout(err):
		reason = ReasonTimeout
	case errors.Is(err, ErrFrameTooLarge):
		reason = ReasonFrameTooLarge
	}
	g.stats.Inc(g.name, reason)
	_ = s.Reset()
	g.log.Debug("stream cut", "protocol", g.name, "peer", s.Conn().RemotePeer(), "reason", reason, "err", err)
}

// close refuses new streams, resets the admitted ones and waits for their
// handlers to return.
func (g *guard) close() {
	g.mu.Lock()
	g.closed = true
	for s := range g.active {
		_ = s.Reset()
	}
	g.mu.Unlock()
	g.wg.Wait()
}
