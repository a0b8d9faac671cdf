package p2p

import (
	"context"
	"errors"
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

// raftName is the protocol name under which raftService counts in Stats.
const raftName = "raft"

// raftQueueLen is the number of messages queued per destination peer.
const raftQueueLen = 256

// ErrQueueFull reports a message dropped because its peer's queue was full.
var ErrQueueFull = errors.New("p2p: send queue full, message dropped")

// ErrClosed reports a call on a closed service.
var ErrClosed = errors.New("p2p: service closed")

// raftWarnEvery limits the "over its message rate" warning to one line per
// interval: a flooding member would otherwise log every message it sends.
const raftWarnEvery = 10 * time.Second

// raftService carries encoded Raft messages, one frame each, over one
// protocol: one long-lived outbound stream per peer, fed by a bounded queue.
// It counts under the protocol name "raft" in Stats. Inbound, a frame is at
// most MaxRaftFrame bytes (a larger one cuts the stream, frame_too_large),
// stream openings are limited by StreamsPerPeer and RequestsPerSecond, and
// a peer's messages, over all its streams, by RaftPerSecond: the excess is
// read, dropped without being allocated and counted rate_limited, so a
// member that floods cannot fill the node's inbox ahead of the others.
type raftService struct {
	h        host.Host
	id       protocol.ID
	isMember func(peer.ID) bool
	deliver  func(from peer.ID, msg []byte)
	lim      Limits
	stats    *Stats
	log      *slog.Logger
	g        *guard
	ctx      context.Context
	cancel   context.CancelFunc

	mu      sync.Mutex
	out     map[peer.ID]chan []byte
	closed  bool
	warned  time.Time // last "over its message rate" warning
	writers sync.WaitGroup
}

// newRaftService registers the Raft protocol id on h. Messages from members
// are passed to deliver in the order each peer sent them; deliver runs on the
// stream's goroutine and should not block for long.
func newRaftService(h host.Host, id protocol.ID, isMember func(peer.ID) bool, deliver func(from peer.ID, msg []byte), lim Limits, stats *Stats, log *slog.Logger) *raftService {
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
	if deliver == nil {
		deliver = func(peer.ID, []byte) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &raftService{
		h: h, id: id, isMember: isMember, deliver: deliver,
		lim: lim, stats: stats, log: log,
		g:   newGuard(raftName, isMember, lim, stats, log),
		ctx: ctx, cancel: cancel,
		out: make(map[peer.ID]chan []byte),
	}
	h.SetStreamHandler(id, r.handle)
	return r
}

// Send queues msg for peer to. The slice is copied. When the peer's queue
// (256 messages) is full the message is dropped, counted as queue_full and
// ErrQueueFull returned: Raft retransmits. A message above MaxRaftFrame is
// refused (frame_too_large): no member would accept it. Send never waits on
// the network.
func (r *raftService) Send(to peer.ID, msg []byte) error {
	if len(msg) > r.lim.MaxRaftFrame {
		r.stats.Inc(raftName, ReasonFrameTooLarge)
		return frameTooLarge(uint64(len(msg)), int64(r.lim.MaxRaftFrame))
	}
	frame := appendFrame(make([]byte, 0, frameHeaderLen+len(msg)), msg)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	q := r.out[to]
	if q == nil {
		q = make(chan []byte, raftQueueLen)
		r.out[to] = q
		r.writers.Add(1)
		go r.writer(to, q)
	}
	select {
	case q <- frame:
		r.mu.Unlock()
		return nil
	default:
		r.mu.Unlock()
		r.stats.Inc(raftName, ReasonQueueFull)
		return ErrQueueFull
	}
}

// Close stops the writers, removes the handler and cuts the inbound streams.
// Queued messages are dropped.
func (r *raftService) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.h.RemoveStreamHandler(r.id)
	r.cancel()
	r.writers.Wait()
	r.g.close()
	return nil
}

// writer owns the outbound stream to one peer. It exits, closing the stream,
// after IdleTimeout/2 without messages, so the receiver's idle cut never hits
// a healthy stream.
func (r *raftService) writer(to peer.ID, q chan []byte) {
	defer r.writers.Done()
	c := &raftOut{}
	stop := context.AfterFunc(r.ctx, c.reset) // unblocks a Write stuck on flow control
	defer stop()
	defer c.close()
	idle := max(r.lim.IdleTimeout/2, time.Millisecond)
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
			r.mu.Lock()
			if len(q) == 0 {
				delete(r.out, to)
				r.mu.Unlock()
				return
			}
			r.mu.Unlock()
			t.Reset(idle)
		case frame := <-q:
			r.write(to, c, frame)
			t.Reset(idle)
		}
	}
}

// raftOut holds a writer's current stream so Close can reset it.
type raftOut struct {
	mu sync.Mutex
	s  network.Stream
}

func (c *raftOut) get() network.Stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.s
}

func (c *raftOut) set(s network.Stream) {
	c.mu.Lock()
	c.s = s
	c.mu.Unlock()
}

func (c *raftOut) reset() {
	c.mu.Lock()
	if c.s != nil {
		_ = c.s.Reset()
	}
	c.mu.Unlock()
}

func (c *raftOut) close() {
	c.mu.Lock()
	if c.s != nil {
		_ = c.s.Close()
		c.s = nil
	}
	c.mu.Unlock()
}

// write sends one frame on the writer's stream, opening one when there is
// none and retrying once on a fresh stream when an existing one has broken.
func (r *raftService) write(to peer.ID, c *raftOut, frame []byte) {
	for attempt := 0; attempt < 2; attempt++ {
		s := c.get()
		fresh := s == nil
		if fresh {
			ctx, cancel := context.WithTimeout(r.ctx, r.lim.ReadTimeout)
			var err error
			s, err = r.h.NewStream(ctx, to, r.id)
			cancel()
			if err != nil {
				r.stats.Inc(raftName, ReasonStreamError)
				r.log.Debug("raft stream open failed", "peer", to, "err", err)
				return
			}
			c.set(s)
			if r.ctx.Err() != nil {
				c.reset()
				return
			}
		}
		_ = s.SetWriteDeadline(time.Now().Add(r.lim.ReadTimeout + transferTime(int64(len(frame)), r.lim.MinRate)))
		_, err := s.Write(frame)
		if err == nil {
			r.stats.AddBytes(0, int64(len(frame)-frameHeaderLen))
			return
		}
		c.reset()
		c.set(nil)
		if isTimeout(err) {
			r.stats.Inc(raftName, ReasonTimeout)
		} else {
			r.stats.Inc(raftName, ReasonStreamError)
		}
		r.log.Debug("raft send failed", "peer", to, "err", err)
		if fresh || r.ctx.Err() != nil {
			return
		}
	}
}

// handle reads frames from one inbound stream and delivers them in order,
// dropping those over the peer's message rate.
func (r *raftService) handle(s network.Stream) {
	if !r.g.admit(s) {
		return
	}
	defer r.g.release(s)
	from := s.Conn().RemotePeer()
	for {
		_ = s.SetReadDeadline(time.Now().Add(r.lim.IdleTimeout))
		n, err := readFrameHeader(s, r.lim.MaxRaftFrame)
		if err == io.EOF {
			_ = s.Close()
			return
		}
		if err != nil {
			r.g.fail(s, err, ReasonStreamError)
			return
		}
		_ = s.SetReadDeadline(time.Now().Add(r.lim.ReadTimeout + transferTime(int64(n), r.lim.MinRate)))
		if !r.g.allowMessage(from, r.lim.RaftPerSecond) {
			// Over the rate: skip the payload without allocating it. Raft
			// retransmits what an honest peer loses here.
			if _, err := io.CopyN(io.Discard, s, int64(n)); err != nil {
				r.g.fail(s, err, ReasonStreamError)
				return
			}
			r.stats.AddBytes(int64(n), 0)
			r.stats.Inc(raftName, ReasonRateLimited)
			r.warnRate(from)
			continue
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(s, msg); err != nil {
			r.g.fail(s, err, ReasonStreamError)
			return
		}
		if !r.isMember(from) { // membership can change while a stream lives
			r.g.refuse(s, wire.ReasonNotMember)
			return
		}
		r.stats.AddBytes(int64(n), 0)
		r.deliver(from, msg)
	}
}

// warnRate logs, at most once per raftWarnEvery, that from is over its
// message rate.
func (r *raftService) warnRate(from peer.ID) {
	now := time.Now()
	r.mu.Lock()
	warn := now.Sub(r.warned) >= raftWarnEvery
	if warn {
		r.warned = now
	}
	r.mu.Unlock()
	if warn {
		r.log.Warn("raft peer over its message rate; dropping its messages", "peer", from.String(), "limit_per_second", r.lim.RaftPerSecond)
	}
}
