package p2p

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/wire"
)

// blobName is the protocol name under which blobService counts in Stats.
const blobName = "blob"

// Blob response status codes (see the wire format in frame.go).
const (
	blobOK          byte = 0
	blobNotServable byte = 1 // unknown digest, or one the node may not serve
	blobBadRequest  byte = 2 // offset beyond the blob's size
	blobTooLarge    byte = 3 // the blob is larger than the server's MaxBlob
	blobUnavailable byte = 4 // the server failed to read the blob
)

const (
	blobRequestLen   = 32 + 8
	blobMaxReason    = 256
	blobChunk        = 256 << 10
	blobAttempts     = 4        // one request plus three resumptions
	blobInitialAlloc = 16 << 20 // the receive buffer starts at most this large, then grows once to the full size
)

// ErrHashMismatch reports fetched bytes whose SHA-256 differs from the digest asked for.
var ErrHashMismatch = errors.New("p2p: blob hash mismatch")

// RemoteError is a refusal sent by a blob server (a non-zero status byte).
type RemoteError struct {
	Code   byte   // the status byte
	Reason string // the server's short explanation
}

// Error implements error.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("p2p: remote refused (status %d): %s", e.Code, e.Reason)
}

// permanent marks a fetch error that a retry cannot fix.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// BlobSource opens a stored, verified blob for reading.
type BlobSource interface {
	// OpenBlob returns a reader positioned at the start of the blob with
	// digest d and the blob's size.
	OpenBlob(d fedavg.Digest) (io.ReadSeekCloser, int64, error)
}

// blobService serves and fetches content-addressed blobs over one protocol.
// It counts under the protocol name "blob" in Stats.
type blobService struct {
	h        host.Host
	id       protocol.ID
	src      BlobSource
	isMember func(peer.ID) bool
	servable func([32]byte) bool
	lim      Limits
	stats    *Stats
	log      *slog.Logger
	g        *guard
	slots    *fetchSlots
	ctx      context.Context
	cancel   context.CancelFunc
	once     sync.Once
}

// newBlobService serves the blobs of src over protocol id on h to members for
// which servable(d) is true, and fetches blobs from other members. src may be
// nil for a node that only fetches.
func newBlobService(h host.Host, id protocol.ID, src BlobSource, isMember func(peer.ID) bool, servable func([32]byte) bool, lim Limits, stats *Stats, log *slog.Logger) *blobService {
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
	b := &blobService{
		h: h, id: id, src: src, isMember: isMember, servable: servable,
		lim: lim, stats: stats, log: log,
		g:     newGuard(blobName, isMember, lim, stats, log),
		slots: newFetchSlots(lim.FetchPerPeer, lim.fetchSlots()),
		ctx:   ctx, cancel: cancel,
	}
	h.SetStreamHandler(id, b.handle)
	return b
}

// Close removes the handler, cuts the streams being served and ends the
// fetches in progress.
func (b *blobService) Close() error {
	b.once.Do(func() {
		b.h.RemoveStreamHandler(b.id)
		b.cancel()
		b.g.close()
	})
	return nil
}

// handle serves one blob request.
func (b *blobService) handle(s network.Stream) {
	if !b.g.admit(s) {
		return
	}
	defer b.g.release(s)

	var req [blobRequestLen]byte
	_ = s.SetReadDeadline(time.Now().Add(b.lim.ReadTimeout))
	if _, err := io.ReadFull(s, req[:]); err != nil {
		b.g.fail(s, err, ReasonBadRequest)
		return
	}
	_ = s.CloseRead()
	var d [32]byte
	copy(d[:], req[:32])
	off := binary.BigEndian.Uint64(req[32:])

	if b.src == nil || b.servable == nil || !b.servable(d) {
		b.refuse(s, blobNotServable, ReasonNotServable, "not servable")
		return
	}
	rc, size, err := b.src.OpenBlob(d)
	if err != nil {
		b.log.Warn("blob source failed", "digest", fmt.Sprintf("%x", d[:8]), "err", err)
		b.refuse(s, blobUnavailable, ReasonSourceError, "unavailable")
		return
	}
	defer rc.Close()
	if size < 0 || size > b.lim.MaxBlob {
		b.refuse(s, blobTooLarge, ReasonFrameTooLarge, "blob too large")
		return
	}
	if off > uint64(size) {
		b.refuse(s, blobBadRequest, ReasonBadRequest, "offset beyond size")
		return
	}
	if off > 0 {
		if _, err := rc.Seek(int64(off), io.SeekStart); err != nil {
			b.refuse(s, blobUnavailable, ReasonSourceError, "unavailable")
			return
		}
	}

	remaining := size - int64(off)
	w := &deadlineWriter{s: s, idle: b.lim.IdleTimeout,
		total: time.Now().Add(b.lim.IdleTimeout + transferTime(remaining, b.lim.MinRate))}
	bufp := blobBufPool.Get().(*[]byte)
	defer blobBufPool.Put(bufp)
	buf := *bufp
	buf[0] = blobOK
	binary.BigEndian.PutUint64(buf[1:9], uint64(size))
	head := 9
	for {
		n := int64(len(buf) - head)
		if n > remaining {
			n = remaining
		}
		if n > 0 {
			if _, err := io.ReadFull(rc, buf[head:head+int(n)]); err != nil {
				b.g.fail(s, err, ReasonSourceError)
				return
			}
		}
		m := head + int(n)
		if m == 0 {
			break
		}
		if _, err := w.Write(buf[:m]); err != nil {
			b.g.fail(s, err, ReasonStreamError)
			return
		}
		b.stats.AddBytes(0, n)
		remaining -= n
		head = 0
		if remaining == 0 {
			break
		}
	}
	_ = s.CloseWrite()
	_ = s.Close()
	b.stats.Inc(blobName, ReasonServed)
}

var blobBufPool = sync.Pool{New: func() any { b := make([]byte, blobChunk); return &b }}

// refuse answers a request with a non-zero status and a reason frame, and counts reason.
func (b *blobService) refuse(s network.Stream, code byte, reason, text string) {
	b.stats.Inc(blobName, reason)
	msg := append([]byte{code}, appendFrame(nil, []byte(text))...)
	_ = s.SetWriteDeadline(time.Now().Add(b.lim.ReadTimeout))
	if _, err := s.Write(msg); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// fetchState is what a fetch has received so far, kept across resumptions.
type fetchState struct {
	want int64 // the length the blob must have, 0 if unknown
	buf  []byte
	size int64 // -1 until the first response
	sum  hash.Hash
	offs []uint64 // offsets requested, for tests
}

// Fetch gets the blob with digest d from peer from, verifies SHA-256 while
// reading, resumes from the received offset after a broken stream (up to three
// times, then errors), never holds more than MaxBlob bytes, and runs at most
// FetchPerPeer fetches from one peer and max(FetchConcurrency, 2 x
// FetchPerPeer) in all: a member that accepts requests and then trickles
// holds at most half of the slots, and fetches from the others go on. It
// returns the verified bytes. The receive buffer starts at 16 MiB and grows
// to the announced size only once those bytes have arrived, so a peer that
// announces a large blob and stalls costs little memory.
func (b *blobService) Fetch(ctx context.Context, from peer.ID, d [32]byte) ([]byte, error) {
	buf, _, err := b.fetchSize(ctx, from, d, 0)
	return buf, err
}

// FetchSize is Fetch of a blob whose length is known (an update's signed
// length): a server that announces another size is refused before a byte of
// the blob is read (counted "size_mismatch"). size 0 is Fetch.
func (b *blobService) FetchSize(ctx context.Context, from peer.ID, d [32]byte, size int64) ([]byte, error) {
	buf, _, err := b.fetchSize(ctx, from, d, size)
	return buf, err
}

// fetch is Fetch that also returns the offsets it requested.
func (b *blobService) fetch(ctx context.Context, from peer.ID, d [32]byte) ([]byte, []uint64, error) {
	return b.fetchSize(ctx, from, d, 0)
}

func (b *blobService) fetchSize(ctx context.Context, from peer.ID, d [32]byte, want int64) ([]byte, []uint64, error) {
	if !b.isMember(from) {
		b.stats.Inc(blobName, wire.ReasonNotMember)
		return nil, nil, fmt.Errorf("p2p: fetch from %s: not a member", from)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(b.ctx, cancel)
	defer stop()
	release, err := b.slots.acquire(ctx, from)
	if err != nil {
		return nil, nil, err
	}
	defer release()

	f := &fetchState{size: -1, want: want, sum: sha256.New()}
	for attempt := 1; ; attempt++ {
		err := b.fetchOnce(ctx, from, d, f)
		if err == nil {
			break
		}
		var p permanent
		if errors.As(err, &p) {
			return nil, f.offs, fmt.Errorf("p2p: fetch %x from %s: %w", d[:8], from, p.error)
		}
		if ctx.Err() != nil {
			return nil, f.offs, fmt.Errorf("p2p: fetch %x from %s: %w", d[:8], from, ctx.Err())
		}
		if attempt >= blobAttempts {
			return nil, f.offs, fmt.Errorf("p2p: fetch %x from %s: %d attempts: %w", d[:8], from, attempt, err)
		}
		b.stats.Inc(blobName, ReasonResumed)
		b.log.Debug("blob fetch resuming", "peer", from, "digest", fmt.Sprintf("%x", d[:8]), "offset", len(f.buf), "err", err)
		t := time.NewTimer(time.Duration(attempt) * 50 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, f.offs, fmt.Errorf("p2p: fetch %x from %s: %w", d[:8], from, ctx.Err())
		}
	}
	var got [32]byte
	f.sum.Sum(got[:0])
	if got != d {
		b.stats.Inc(blobName, ReasonHashMismatch)
		return nil, f.offs, fmt.Errorf("p2p: fetch %x from %s: %w", d[:8], from, ErrHashMismatch)
	}
	return f.buf, f.offs, nil
}

// fetchOnce sends one request from offset len(f.buf) and reads until the end
// of the blob or an error. Errors wrapped in permanent end the fetch.
func (b *blobService) fetchOnce(ctx context.Context, from peer.ID, d [32]byte, f *fetchState) (err error) {
	s, err := b.h.NewStream(ctx, from, b.id)
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			_ = s.Reset()
		}
	}()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()

	off := uint64(len(f.buf))
	f.offs = append(f.offs, off)
	var req [blobRequestLen]byte
	copy(req[:32], d[:])
	binary.BigEndian.PutUint64(req[32:], off)
	_ = s.SetWriteDeadline(time.Now().Add(b.lim.ReadTimeout))
	if _, err := s.Write(req[:]); err != nil {
		return b.cut(err)
	}
	_ = s.CloseWrite()

	_ = s.SetReadDeadline(time.Now().Add(b.lim.ReadTimeout))
	var hdr [9]byte
	if _, err := io.ReadFull(s, hdr[:1]); err != nil {
		return b.cut(err)
	}
	if hdr[0] != blobOK {
		reason, err := readFrame(s, blobMaxReason)
		if err != nil {
			b.stats.Inc(blobName, ReasonBadRequest)
			return permanent{&RemoteError{Code: hdr[0], Reason: "(unreadable reason)"}}
		}
		return permanent{&RemoteError{Code: hdr[0], Reason: string(reason)}}
	}
	if _, err := io.ReadFull(s, hdr[1:]); err != nil {
		return b.cut(err)
	}
	size := binary.BigEndian.Uint64(hdr[1:])
	if size > uint64(b.lim.MaxBlob) {
		b.stats.Inc(blobName, ReasonFrameTooLarge)
		return permanent{frameTooLarge(size, b.lim.MaxBlob)}
	}
	if f.want > 0 && int64(size) != f.want {
		b.stats.Inc(blobName, ReasonSizeMismatch)
		return permanent{fmt.Errorf("p2p: blob is %d bytes, its signed length %d", size, f.want)}
	}
	if (f.size >= 0 && int64(size) != f.size) || int64(size) < int64(len(f.buf)) {
		b.stats.Inc(blobName, ReasonBadRequest)
		return permanent{fmt.Errorf("p2p: blob size changed from %d to %d", f.size, size)}
	}
	f.size = int64(size)
	if f.buf == nil {
		f.buf = make([]byte, 0, min(f.size, blobInitialAlloc))
	}

	r := &deadlineReader{s: s, idle: b.lim.IdleTimeout,
		total: time.Now().Add(b.lim.IdleTimeout + transferTime(f.size-int64(len(f.buf)), b.lim.MinRate))}
	for int64(len(f.buf)) < f.size {
		if len(f.buf) == cap(f.buf) {
			// The first blobInitialAlloc bytes have arrived: the peer is
			// really sending, so commit the announced size (at most MaxBlob).
			nb := make([]byte, len(f.buf), f.size)
			copy(nb, f.buf)
			f.buf = nb
		}
		end := min(int64(cap(f.buf)), f.size)
		n, rerr := r.Read(f.buf[len(f.buf):end])
		if n > 0 {
			f.sum.Write(f.buf[len(f.buf) : len(f.buf)+n])
			f.buf = f.buf[:len(f.buf)+n]
			b.stats.AddBytes(int64(n), 0)
		}
		if rerr != nil {
			if int64(len(f.buf)) == f.size {
				break
			}
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			return b.cut(rerr)
		}
	}
	done = true
	_ = s.Close()
	return nil
}

// cut counts a broken outbound transfer as timeout or stream_error and returns err.
func (b *blobService) cut(err error) error {
	if isTimeout(err) {
		b.stats.Inc(blobName, ReasonTimeout)
	} else {
		b.stats.Inc(blobName, ReasonStreamError)
	}
	return err
}

// fetchSlots bounds concurrent outbound fetches per server peer and in all.
// A fetch takes its peer's slot first and a global one second, so fetches
// waiting for a busy peer hold no global slot and cannot starve fetches
// from other peers.
type fetchSlots struct {
	perPeer int
	global  chan struct{}

	mu    sync.Mutex
	peers map[peer.ID]*peerSlots // peers with a fetch running or waiting; removed when none is
}

// peerSlots is one server peer's slots and the fetches that use or await them.
type peerSlots struct {
	sem  chan struct{}
	refs int
}

func newFetchSlots(perPeer, global int) *fetchSlots {
	return &fetchSlots{perPeer: perPeer, global: make(chan struct{}, global), peers: map[peer.ID]*peerSlots{}}
}

// acquire waits for a slot of p and a global slot, or for ctx to end. On
// success the caller must call release once.
func (f *fetchSlots) acquire(ctx context.Context, p peer.ID) (release func(), err error) {
	f.mu.Lock()
	ps := f.peers[p]
	if ps == nil {
		ps = &peerSlots{sem: make(chan struct{}, f.perPeer)}
		f.peers[p] = ps
	}
	ps.refs++
	f.mu.Unlock()
	unref := func() {
		f.mu.Lock()
		if ps.refs--; ps.refs == 0 {
			delete(f.peers, p)
		}
		f.mu.Unlock()
	}
	select {
	case ps.sem <- struct{}{}:
	case <-ctx.Done():
		unref()
		return nil, ctx.Err()
	}
	select {
	case f.global <- struct{}{}:
	case <-ctx.Done():
		<-ps.sem
		unref()
		return nil, ctx.Err()
	}
	return func() {
		<-f.global
		<-ps.sem
		unref()
	}, nil
}
