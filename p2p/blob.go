package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// blobName is the protocol name under which BlobService counts in Stats.
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
	OpenBlob(d [32]byte) (io.ReadSeekCloser, int64, error)
}

// BlobService serves and fetches content-addressed blobs over one protocol.
// It counts under the protocol name "blob" in Stats.
type BlobService struct {
	h        host.Host
	id       protocol.ID
	src      BlobSource
	isMember func(peer.ID) bool
	servable func([32]byte) bool
	lim      Limits
	stats    *Stats
	log      *slog.Logger
	g        *guard
	sem      chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	once     sync.Once
}

// NewBlobService serves the blobs of src over protocol id on h to members for
// which servable(d) is true, and fetches blobs from other members. src may be
// nil for a node that only fetches.
func NewBlobService(h host.Host, id protocol.ID, src BlobSource, isMember func(peer.ID) bool, servable func([32]byte) bool, lim Limits, stats *Stats, log *slog.Logger) *BlobService {
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
	b := &BlobService{
		h: h, id: id, src: src, isMember: isMember, servable: servable,
		lim: lim, stats: stats, log: log,
		g:   newGuard(blobName, isMember, lim, stats, log),
		sem: make(chan struct{}, lim.FetchConcurrency),
		ctx: ctx, cancel: cancel,
	}
	h.SetStreamHandler(id, b.handle)
	return b
}

// Close removes the handler, cuts the streams being served and ends the
// fetches in progress.
func (b *BlobService) Close() error {
	b.once.Do(func() {
		b.h.RemoveStreamHandler(b.id)
		b.cancel()
		b.g.close()
	})
	return nil
}

// handle serves one blob request.
func (b *BlobService) handle(s network.Stream) {
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
func (b *BlobService) refuse(s network.Stream, code byte, reason, text string) {
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
	buf  []byte
	size int64 // -1 until the first response
	sum  hash.Hash
	offs []uint64 // offsets requested, for tests
}

// Fetch gets the blob with digest d from peer from, verifies SHA-256 while
// reading, resumes from the received offset after a broken stream (up to three
// times, then errors), never holds more than MaxBlob bytes and runs at most
// FetchConcurrency fetches at once. It returns the verified bytes. The receive
// buffer starts at 16 MiB and grows to the announced size only once those
// bytes have arrived, so a peer that announces a large blob and stalls costs
// little memory.
func (b *BlobService) Fetch(ctx context.Context, from peer.ID, d [32]byte) ([]byte, error) {
	buf, _, err := b.fetch(ctx, from, d)
	return buf, err
}

// fetch is Fetch that also returns the offsets it requested.
func (b *BlobService) fetch(ctx context.Context, from peer.ID, d [32]byte) ([]byte, []uint64, error) {
	if !b.isMember(from) {
		b.stats.Inc(blobName, ReasonNotMember)
		return nil, nil, fmt.Errorf("p2p: fetch from %s: not a member", from)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(b.ctx, cancel)
	defer stop()
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	defer func() { <-b.sem }()

	f := &fetchState{size: -1, sum: sha256.New()}
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
func (b *BlobService) fetchOnce(ctx context.Context, from peer.ID, d [32]byte, f *fetchState) (err error) {
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
func (b *BlobService) cut(err error) error {
	if isTimeout(err) {
		b.stats.Inc(blobName, ReasonTimeout)
	} else {
		b.stats.Inc(blobName, ReasonStreamError)
	}
	return err
}

// MeasureBlobVsTCP measures the blob protocol against plain TCP on loopback:
// one server holds a random blob of sizeBytes, and peers clients fetch it
// concurrently, once over the blob protocol (real libp2p hosts on
// 127.0.0.1/tcp/0: TCP, TLS or Noise, yamux) and once over plain net.Conn
// connections on 127.0.0.1. Both clients verify SHA-256 as they read. The
// results are aggregate MB/s (10^6 bytes per second, all peers together).
func MeasureBlobVsTCP(ctx context.Context, sizeBytes int64, peers int) (blobMBps, tcpMBps float64, err error) {
	if sizeBytes < 0 || peers < 1 {
		return 0, 0, fmt.Errorf("p2p: measure: bad size %d or peers %d", sizeBytes, peers)
	}
	data := benchData(sizeBytes)

	tb, err := newTCPBench(data, peers)
	if err != nil {
		return 0, 0, err
	}
	defer tb.close()
	bb, err := newBlobBench(ctx, data, peers)
	if err != nil {
		return 0, 0, err
	}
	defer bb.close()

	total := float64(sizeBytes) * float64(peers)
	runtime.GC()
	start := time.Now()
	if err := bb.run(ctx); err != nil {
		return 0, 0, err
	}
	blobMBps = total / time.Since(start).Seconds() / 1e6
	runtime.GC()
	start = time.Now()
	if err := tb.run(ctx); err != nil {
		return 0, 0, err
	}
	tcpMBps = total / time.Since(start).Seconds() / 1e6
	return blobMBps, tcpMBps, nil
}

// benchData returns n pseudo-random bytes.
func benchData(n int64) []byte {
	data := make([]byte, n)
	_, _ = mrand.NewChaCha8([32]byte{'g', 'b'}).Read(data)
	return data
}

// bytesSource serves one in-memory blob.
type bytesSource struct {
	d    [32]byte
	data []byte
}

type nopSeekCloser struct{ *bytes.Reader }

func (nopSeekCloser) Close() error { return nil }

func (b *bytesSource) OpenBlob(d [32]byte) (io.ReadSeekCloser, int64, error) {
	if d != b.d {
		return nil, 0, errors.New("p2p: no such blob")
	}
	return nopSeekCloser{bytes.NewReader(b.data)}, int64(len(b.data)), nil
}

// blobBench is a server host holding one blob and client hosts, connected to
// it, ready to fetch the blob.
type blobBench struct {
	hosts   []host.Host
	srv     *BlobService
	clients []*BlobService
	d       [32]byte
	size    int
}

const benchBlobProto = protocol.ID("/globalbrain/bench-blob/1")

func newBlobBench(ctx context.Context, data []byte, peers int) (_ *blobBench, err error) {
	b := &blobBench{d: sha256.Sum256(data), size: len(data)}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	members := make(map[peer.ID]bool)
	for i := 0; i <= peers; i++ {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, err
		}
		h, err := libp2p.New(
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.DisableRelay(),
			libp2p.DisableMetrics(),
			libp2p.Identity(k),
		)
		if err != nil {
			return nil, err
		}
		b.hosts = append(b.hosts, h)
		members[h.ID()] = true
	}
	isMember := func(p peer.ID) bool { return members[p] }
	lim := Limits{MaxBlob: max(int64(len(data)), DefaultLimits().MaxBlob)}
	src := &bytesSource{d: b.d, data: data}
	b.srv = NewBlobService(b.hosts[0], benchBlobProto, src, isMember, func(d [32]byte) bool { return d == b.d }, lim, nil, nil)
	server := peer.AddrInfo{ID: b.hosts[0].ID(), Addrs: b.hosts[0].Addrs()}
	for _, h := range b.hosts[1:] {
		if err := h.Connect(ctx, server); err != nil {
			return nil, err
		}
		b.clients = append(b.clients, NewBlobService(h, benchBlobProto, nil, isMember, nil, lim, nil, nil))
	}
	return b, nil
}

// run has every client fetch the blob at once.
func (b *blobBench) run(ctx context.Context) error {
	errs := make(chan error, len(b.clients))
	for _, c := range b.clients {
		go func() {
			got, err := c.Fetch(ctx, b.hosts[0].ID(), b.d)
			if err == nil && len(got) != b.size {
				err = fmt.Errorf("p2p: bench fetched %d bytes, want %d", len(got), b.size)
			}
			errs <- err
		}()
	}
	var first error
	for range b.clients {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (b *blobBench) close() {
	for _, c := range b.clients {
		_ = c.Close()
	}
	if b.srv != nil {
		_ = b.srv.Close()
	}
	for _, h := range b.hosts {
		_ = h.Close()
	}
}

// tcpBench serves one blob over plain TCP on 127.0.0.1 with the blob
// protocol's framing (request: digest and offset; response: status, size,
// bytes), so the comparison isolates libp2p's security and multiplexing.
type tcpBench struct {
	ln    net.Listener
	data  []byte
	d     [32]byte
	peers int
	wg    sync.WaitGroup
}

func newTCPBench(data []byte, peers int) (*tcpBench, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &tcpBench{ln: ln, data: data, d: sha256.Sum256(data), peers: peers}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				defer c.Close()
				var req [blobRequestLen]byte
				if _, err := io.ReadFull(c, req[:]); err != nil {
					return
				}
				off := min(binary.BigEndian.Uint64(req[32:]), uint64(len(t.data)))
				hdr := binary.BigEndian.AppendUint64([]byte{blobOK}, uint64(len(t.data)))
				if _, err := c.Write(hdr); err != nil {
					return
				}
				_, _ = c.Write(t.data[off:])
			}()
		}
	}()
	return t, nil
}

// run has every client fetch the blob at once over its own connection.
func (t *tcpBench) run(ctx context.Context) error {
	errs := make(chan error, t.peers)
	for range t.peers {
		go func() { errs <- t.fetch(ctx) }()
	}
	var first error
	for range t.peers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (t *tcpBench) fetch(ctx context.Context) error {
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp", t.ln.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	req := binary.BigEndian.AppendUint64(t.d[:], 0)
	if _, err := c.Write(req); err != nil {
		return err
	}
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	buf := make([]byte, binary.BigEndian.Uint64(hdr[1:]))
	sum := sha256.New()
	for n := 0; n < len(buf); {
		m, err := c.Read(buf[n:])
		sum.Write(buf[n : n+m])
		n += m
		if err != nil && n < len(buf) {
			return err
		}
	}
	var got [32]byte
	if sum.Sum(got[:0]); got != t.d {
		return ErrHashMismatch
	}
	return nil
}

func (t *tcpBench) close() {
	_ = t.ln.Close()
	t.wg.Wait()
}
