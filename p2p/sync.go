package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/globalbrain/globalbrain/wire"
)

// syncName is the protocol name under which syncService counts in Stats.
const syncName = "sync"

const (
	syncRequestMax  = 64   // largest sync request frame
	syncMaxMessages = 4096 // most messages in one sync response
	syncBytesFrames = 16   // a response carries at most this many MaxFrame of payload
)

// syncService answers "the current round's gossip messages" so a new leader
// catches up at once. It counts under the protocol name "sync" in Stats.
type syncService struct {
	h        host.Host
	id       protocol.ID
	isMember func(peer.ID) bool
	source   func(ctx context.Context, from peer.ID, round uint64) [][]byte
	lim      Limits
	stats    *Stats
	log      *slog.Logger
	g        *guard
	ctx      context.Context
	cancel   context.CancelFunc
	once     sync.Once
}

// newSyncService registers the sync protocol id on h, answering member from
// with source(ctx, from, round); ctx ends when the service closes. source
// may be nil for a node that only pulls.
func newSyncService(h host.Host, id protocol.ID, isMember func(peer.ID) bool, source func(ctx context.Context, from peer.ID, round uint64) [][]byte, lim Limits, stats *Stats, log *slog.Logger) *syncService {
	lim = lim.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if stats == nil {
		stats = new(Stats)
	}
	if isMember == nil {
		isMember = func(peer.ID) bool { return false }
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &syncService{
		h: h, id: id, isMember: isMember, source: source,
		lim: lim, stats: stats, log: log,
		g:   newGuard(syncName, isMember, lim, stats, log),
		ctx: ctx, cancel: cancel,
	}
	h.SetStreamHandler(id, s.handle)
	return s
}

// maxBytes is the payload cap of one response.
func (s *syncService) maxBytes() int64 { return int64(syncBytesFrames) * int64(s.lim.MaxFrame) }

// Close removes the handler, cuts the streams being served and ends the
// pulls in progress.
func (s *syncService) Close() error {
	s.once.Do(func() {
		s.h.RemoveStreamHandler(s.id)
		s.cancel()
		s.g.close()
	})
	return nil
}

// handle answers one sync request.
func (s *syncService) handle(st network.Stream) {
	if !s.g.admit(st) {
		return
	}
	defer s.g.release(st)
	_ = st.SetReadDeadline(time.Now().Add(s.lim.ReadTimeout))
	req, err := readFrame(st, syncRequestMax)
	if err != nil {
		s.g.fail(st, err, ReasonBadRequest)
		return
	}
	if len(req) != 8 {
		s.g.refuse(st, ReasonBadRequest)
		return
	}
	_ = st.CloseRead()
	round := binary.BigEndian.Uint64(req)
	var msgs [][]byte
	if s.source != nil {
		msgs = s.source(s.ctx, st.Conn().RemotePeer(), round)
	}

	// Keep what fits the caps the client enforces.
	var total int64
	keep := msgs[:0:0]
	truncated := false
	for _, m := range msgs {
		if len(m) > s.lim.MaxFrame || total+int64(len(m)) > s.maxBytes() || len(keep) == syncMaxMessages {
			truncated = true
			continue
		}
		keep = append(keep, m)
		total += int64(len(m))
	}
	if truncated {
		s.stats.Inc(syncName, ReasonTruncated)
		s.log.Warn("sync response truncated", "round", round, "messages", len(msgs), "kept", len(keep))
	}

	w := &deadlineWriter{s: st, idle: s.lim.IdleTimeout,
		total: time.Now().Add(s.lim.IdleTimeout + transferTime(total, s.lim.MinRate))}
	buf := binary.BigEndian.AppendUint32(make([]byte, 0, 64<<10), uint32(len(keep)))
	for _, m := range keep {
		if len(buf)+frameHeaderLen+len(m) > cap(buf) && len(buf) > 0 {
			if _, err := w.Write(buf); err != nil {
				s.g.fail(st, err, ReasonStreamError)
				return
			}
			buf = buf[:0]
		}
		buf = appendFrame(buf, m)
	}
	if _, err := w.Write(buf); err != nil {
		s.g.fail(st, err, ReasonStreamError)
		return
	}
	s.stats.AddBytes(0, total)
	_ = st.Close()
	s.stats.Inc(syncName, ReasonServed)
}

// Pull asks peer from for its gossip messages of round. It refuses a response
// above the caps (4096 messages, MaxFrame bytes each, 16 x MaxFrame in all).
func (s *syncService) Pull(ctx context.Context, from peer.ID, round uint64) ([][]byte, error) {
	if !s.isMember(from) {
		s.stats.Inc(syncName, wire.ReasonNotMember)
		return nil, fmt.Errorf("p2p: sync from %s: not a member", from)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	msgs, err := s.pull(ctx, from, round)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("p2p: sync round %d from %s: %w", round, from, err)
	}
	return msgs, nil
}

func (s *syncService) pull(ctx context.Context, from peer.ID, round uint64) ([][]byte, error) {
	st, err := s.h.NewStream(ctx, from, s.id)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = st.Reset()
		}
	}()
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() })
	defer stop()

	_ = st.SetWriteDeadline(time.Now().Add(s.lim.ReadTimeout))
	if err := writeFrame(st, binary.BigEndian.AppendUint64(nil, round)); err != nil {
		return nil, s.cut(err)
	}
	_ = st.CloseWrite()

	_ = st.SetReadDeadline(time.Now().Add(s.lim.ReadTimeout))
	var hdr [4]byte
	if _, err := io.ReadFull(st, hdr[:]); err != nil {
		return nil, s.cut(err)
	}
	count := binary.BigEndian.Uint32(hdr[:])
	if count > syncMaxMessages {
		s.stats.Inc(syncName, ReasonFrameTooLarge)
		return nil, frameTooLarge(uint64(count), syncMaxMessages)
	}
	// Each frame must arrive in time, and the whole response within the
	// time its largest allowed size takes at MinRate.
	overall := time.Now().Add(s.lim.IdleTimeout + transferTime(s.maxBytes(), s.lim.MinRate))
	deadline := func(d time.Duration) {
		t := time.Now().Add(d)
		if overall.Before(t) {
			t = overall
		}
		_ = st.SetReadDeadline(t)
	}
	msgs := make([][]byte, 0, count)
	var total int64
	for range count {
		deadline(s.lim.ReadTimeout)
		limit := min(int64(s.lim.MaxFrame), s.maxBytes()-total)
		n, err := readFrameHeader(st, int(limit))
		if err != nil {
			return nil, s.cut(err)
		}
		deadline(s.lim.ReadTimeout + transferTime(int64(n), s.lim.MinRate))
		m := make([]byte, n)
		if _, err := io.ReadFull(st, m); err != nil {
			return nil, s.cut(err)
		}
		total += int64(n)
		msgs = append(msgs, m)
	}
	s.stats.AddBytes(total, 0)
	ok = true
	_ = st.Close()
	return msgs, nil
}

// cut counts why a pull failed (timeout, frame_too_large or stream_error) and returns err.
func (s *syncService) cut(err error) error {
	switch {
	case isTimeout(err):
		s.stats.Inc(syncName, ReasonTimeout)
	case errors.Is(err, ErrFrameTooLarge):
		s.stats.Inc(syncName, ReasonFrameTooLarge)
	default:
		s.stats.Inc(syncName, ReasonStreamError)
	}
	return err
}
