package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/wire"
)

const testBlobProto = protocol.ID("/globalbrain-test/blob/1")

// memSource is a BlobSource over in-memory blobs. Hooks let tests corrupt,
// break or slow the reads.
type memSource struct {
	mu    sync.Mutex
	blobs map[[32]byte][]byte
	// wrap, when set, wraps the reader of every open (n counts opens from 1).
	wrap   func(n int, r io.ReadSeeker) io.ReadSeeker
	opens  int
	deny   bool // servable answers false for every digest
	active atomic.Int64
	peak   atomic.Int64
}

func newMemSource(blobs ...[]byte) *memSource {
	m := &memSource{blobs: make(map[[32]byte][]byte)}
	for _, b := range blobs {
		m.blobs[sha256.Sum256(b)] = b
	}
	return m
}

func (m *memSource) servable(d [32]byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.blobs[d]
	return ok && !m.deny
}

// memReader counts a transfer as active from its open until the server has
// read the last byte (or closed it), which happens before the client can
// finish its fetch.
type memReader struct {
	io.ReadSeeker
	m         *memSource
	pos, size int64
	ended     bool
}

func (r *memReader) end() {
	if !r.ended {
		r.ended = true
		r.m.active.Add(-1)
	}
}

func (r *memReader) Read(p []byte) (int, error) {
	n, err := r.ReadSeeker.Read(p)
	r.pos += int64(n)
	if r.pos >= r.size {
		r.end()
	}
	return n, err
}

func (r *memReader) Seek(off int64, whence int) (int64, error) {
	pos, err := r.ReadSeeker.Seek(off, whence)
	r.pos = pos
	return pos, err
}

func (r *memReader) Close() error { r.end(); return nil }

func (m *memSource) OpenBlob(d fedavg.Digest) (io.ReadSeekCloser, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	m.opens++
	if !ok {
		return nil, 0, errors.New("no such blob")
	}
	var r io.ReadSeeker = bytes.NewReader(b)
	if m.wrap != nil {
		r = m.wrap(m.opens, r)
	}
	if a := m.active.Add(1); a > m.peak.Load() { // increments are serialized by m.mu
		m.peak.Store(a)
	}
	return &memReader{ReadSeeker: r, m: m, size: int64(len(b))}, int64(len(b)), nil
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// blobPair starts a server and a client blobService on two real hosts.
func blobPair(t *testing.T, src *memSource, serverLim, clientLim Limits) (srv, cli *blobService, srvStats, cliStats *Stats) {
	t.Helper()
	hs := spHosts(t, 2)
	members := spMembers(hs...)
	srvStats, cliStats = new(Stats), new(Stats)
	srv = newBlobService(hs[0], testBlobProto, src, members, src.servable, serverLim, srvStats, nil)
	cli = newBlobService(hs[1], testBlobProto, nil, members, nil, clientLim, cliStats, nil)
	t.Cleanup(func() { _ = cli.Close(); _ = srv.Close() })
	return
}

func TestBlobRoundTrip(t *testing.T) {
	t.Parallel()
	data := randBytes(t, 5<<20+123)
	src := newMemSource(data)
	srv, cli, srvStats, cliStats := blobPair(t, src, Limits{}, Limits{})
	got, err := cli.Fetch(context.Background(), srv.h.ID(), sha256.Sum256(data))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("fetched bytes differ")
	}
	spWait(t, 2*time.Second, "served counted", func() bool { return srvStats.Get(blobName, ReasonServed) == 1 })
	if in, _ := cliStats.Bytes(); in != int64(len(data)) {
		t.Fatalf("client bytes in = %d", in)
	}
	if _, out := srvStats.Bytes(); out != int64(len(data)) {
		t.Fatalf("server bytes out = %d", out)
	}
	// An empty blob round-trips too.
	empty := []byte{}
	src.mu.Lock()
	src.blobs[sha256.Sum256(empty)] = empty
	src.mu.Unlock()
	got, err = cli.Fetch(context.Background(), srv.h.ID(), sha256.Sum256(empty))
	if err != nil || len(got) != 0 {
		t.Fatalf("empty blob: %d bytes, %v", len(got), err)
	}
}

// corruptReader flips one byte in the middle of the stream.
type corruptReader struct {
	io.ReadSeeker
	pos, at int64
}

func (c *corruptReader) Read(p []byte) (int, error) {
	n, err := c.ReadSeeker.Read(p)
	if c.at >= c.pos && c.at < c.pos+int64(n) {
		p[c.at-c.pos] ^= 0xFF
	}
	c.pos += int64(n)
	return n, err
}

func TestBlobCorruptedBytesHashMismatch(t *testing.T) {
	t.Parallel()
	data := randBytes(t, 1<<20)
	src := newMemSource(data)
	src.wrap = func(_ int, r io.ReadSeeker) io.ReadSeeker { return &corruptReader{ReadSeeker: r, at: 1000} }
	srv, cli, _, cliStats := blobPair(t, src, Limits{}, Limits{})
	_, err := cli.Fetch(context.Background(), srv.h.ID(), sha256.Sum256(data))
	if !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("err = %v, want ErrHashMismatch", err)
	}
	if got := cliStats.Get(blobName, ReasonHashMismatch); got != 1 {
		t.Fatalf("hash_mismatch = %d", got)
	}
}

func TestBlobNonMemberRefused(t *testing.T) {
	t.Parallel()
	data := randBytes(t, 1000)
	src := newMemSource(data)
	hs := spHosts(t, 2)
	srvStats := new(Stats)
	srv := newBlobService(hs[0], testBlobProto, src, spMembers(hs[0]), src.servable, Limits{}, srvStats, nil)
	defer srv.Close()
	cli := newBlobService(hs[1], testBlobProto, nil, spMembers(hs...), nil, Limits{}, nil, nil)
	defer cli.Close()
	if _, err := cli.Fetch(context.Background(), hs[0].ID(), sha256.Sum256(data)); err == nil {
		t.Fatal("non-member fetched a blob")
	}
	if got := srvStats.Get(blobName, wire.ReasonNotMember); got == 0 {
		t.Fatalf("not_member not counted: %v", srvStats.Snapshot())
	}
	if srvStats.Get(blobName, ReasonServed) != 0 {
		t.Fatal("served a non-member")
	}
	// The client side refuses to fetch from a non-member without dialling.
	cliStats := new(Stats)
	cli2 := newBlobService(hs[1], "/globalbrain-test/blob/other", nil, spMembers(hs[1]), nil, Limits{}, cliStats, nil)
	defer cli2.Close()
	if _, err := cli2.Fetch(context.Background(), hs[0].ID(), sha256.Sum256(data)); err == nil || cliStats.Get(blobName, wire.ReasonNotMember) != 1 {
		t.Fatalf("fetch from non-member: %v %v", err, cliStats.Snapshot())
	}
}

func TestBlobNotServableRefused(t *testing.T) {
	t.Parallel()
	data := randBytes(t, 1000)
	src := newMemSource(data)
	src.deny = true // stored, but not named in a valid announcement
	srv, cli, srvStats, _ := blobPair(t, src, Limits{}, Limits{})
	_, err := cli.Fetch(context.Background(), srv.h.ID(), sha256.Sum256(data))
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != blobNotServable {
		t.Fatalf("err = %v, want RemoteError not servable", err)
	}
	if got := srvStats.Get(blobName, ReasonNotServable); got != 1 {
		t.Fatalf("not_servable = %d", got)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.opens != 0 {
		t.Fatal("source opened for a non-servable digest")
	}
}

// breakingReader fails once after limit bytes, after a pause that lets the
// bytes already written reach the client.
type breakingReader struct {
	io.ReadSeeker
	left int64
}

func (b *breakingReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		time.Sleep(200 * time.Millisecond)
		return 0, errors.New("disk on fire")
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadSeeker.Read(p)
	b.left -= int64(n)
	return n, err
}

func TestBlobResumeAfterBrokenStream(t *testing.T) {
	t.Parallel()
	data := randBytes(t, 3<<20)
	src := newMemSource(data)
	src.wrap = func(n int, r io.ReadSeeker) io.ReadSeeker {
		if n == 1 {
			return &breakingReader{ReadSeeker: r, left: 1 << 20}
		}
		return r
	}
	srv, cli, srvStats, cliStats := blobPair(t, src, Limits{}, Limits{})
	got, offs, err := cli.fetch(context.Background(), srv.h.ID(), sha256.Sum256(data))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("resumed fetch returned wrong bytes")
	}
	if len(offs) != 2 || offs[0] != 0 || offs[1] == 0 {
		t.Fatalf("requested offsets %v, want [0, >0]", offs)
	}
	if srvStats.Get(blobName, ReasonSourceError) != 1 || cliStats.Get(blobName, ReasonResumed) != 1 {
		t.Fatalf("server %v, client %v", srvStats.Snapshot(), cliStats.Snapshot())
	}
	if in, _ := cliStats.Bytes(); in != int64(len(data)) {
		t.Fatalf("client received %d bytes in total, want %d (no byte twice)", in, len(data))
	}
}

func TestBlobResumeGivesUp(t *testing.T) {
	t.Parallel()
	data := randBytes(t, 1<<20)
	src := newMemSource(data)
	src.wrap = func(int, io.ReadSeeker) io.ReadSeeker {
		return &breakingReader{ReadSeeker: bytes.NewReader(data), left: 0}
	}
	srv, cli, _, _ := blobPair(t, src, Limits{}, Limits{})
	_, offs, err := cli.fetch(context.Background(), srv.h.ID(), sha256.Sum256(data))
	if err == nil || len(offs) != blobAttempts {
		t.Fatalf("err = %v after %d requests, want an error after %d", err, len(offs), blobAttempts)
	}
}

func TestBlobMaxBlob(t *testing.T) {
	t.Parallel()
	data := randBytes(t, 2<<20)
	src := newMemSource(data)
	// The client refuses a blob above its MaxBlob as soon as it reads the size.
	srv, cli, _, cliStats := blobPair(t, src, Limits{}, Limits{MaxBlob: 1 << 20})
	if _, err := cli.Fetch(context.Background(), srv.h.ID(), sha256.Sum256(data)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("client MaxBlob: %v", err)
	}
	if cliStats.Get(blobName, ReasonFrameTooLarge) != 1 {
		t.Fatalf("client stats %v", cliStats.Snapshot())
	}
	// The server refuses to serve a blob above its MaxBlob.
	srv2, cli2, srvStats2, _ := blobPair(t, src, Limits{MaxBlob: 1 << 20}, Limits{})
	_, err := cli2.Fetch(context.Background(), srv2.h.ID(), sha256.Sum256(data))
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != blobTooLarge || srvStats2.Get(blobName, ReasonFrameTooLarge) != 1 {
		t.Fatalf("server MaxBlob: %v %v", err, srvStats2.Snapshot())
	}
}

func TestBlobOffsetBeyondSizeRefused(t *testing.T) {
	t.Parallel()
	data := randBytes(t, 1000)
	src := newMemSource(data)
	srv, cli, srvStats, _ := blobPair(t, src, Limits{}, Limits{})
	s, err := cli.h.NewStream(context.Background(), srv.h.ID(), testBlobProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	d := sha256.Sum256(data)
	req := binary.BigEndian.AppendUint64(d[:], 1001)
	if _, err := s.Write(req); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	resp, _ := io.ReadAll(s)
	if len(resp) < 1 || resp[0] != blobBadRequest {
		t.Fatalf("response %q", resp)
	}
	if srvStats.Get(blobName, ReasonBadRequest) != 1 {
		t.Fatalf("stats %v", srvStats.Snapshot())
	}
}

// slowReader sleeps before its first read.
type slowReader struct {
	io.ReadSeeker
	once sync.Once
	d    time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	s.once.Do(func() { time.Sleep(s.d) })
	return s.ReadSeeker.Read(p)
}

func TestBlobFetchConcurrency(t *testing.T) {
	t.Parallel()
	var blobs [][]byte
	for i := 0; i < 6; i++ {
		blobs = append(blobs, randBytes(t, 10000))
	}
	src := newMemSource(blobs...)
	src.wrap = func(_ int, r io.ReadSeeker) io.ReadSeeker {
		return &slowReader{ReadSeeker: r, d: 150 * time.Millisecond}
	}
	srv, cli, _, _ := blobPair(t, src, Limits{StreamsPerPeer: 10, RequestsPerSecond: 100}, Limits{FetchConcurrency: 2})
	var wg sync.WaitGroup
	errs := make(chan error, len(blobs))
	for _, b := range blobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := cli.Fetch(context.Background(), srv.h.ID(), sha256.Sum256(b))
			if err == nil && !bytes.Equal(got, b) {
				err = errors.New("wrong bytes")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p := src.peak.Load(); p != 2 {
		t.Fatalf("peak concurrent transfers = %d, want 2", p)
	}
}

func TestBlobHugeSizeFieldRefusedWithoutAllocating(t *testing.T) {
	hs := spHosts(t, 2)
	members := spMembers(hs...)
	// A member that claims a 4 GiB blob and then stalls.
	hs[0].SetStreamHandler(testBlobProto, func(s network.Stream) {
		var req [blobRequestLen]byte
		_, _ = io.ReadFull(s, req[:])
		resp := binary.BigEndian.AppendUint64([]byte{blobOK}, 1<<32)
		_, _ = s.Write(resp)
		time.Sleep(time.Second)
		_ = s.Reset()
	})
	stats := new(Stats)
	cli := newBlobService(hs[1], testBlobProto, nil, members, nil, Limits{}, stats, nil)
	defer cli.Close()
	before := spTotalAlloc()
	_, err := cli.Fetch(context.Background(), hs[0].ID(), [32]byte{1})
	grew := spTotalAlloc() - before
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	if grew > 64<<20 {
		t.Fatalf("allocated %d MiB while refusing a 4 GiB blob", grew>>20)
	}
	if stats.Get(blobName, ReasonFrameTooLarge) != 1 {
		t.Fatalf("stats %v", stats.Snapshot())
	}
}

func TestBlobOneBytePerSecondWriterCut(t *testing.T) {
	t.Parallel()
	src := newMemSource([]byte("x"))
	srv, cli, srvStats, _ := blobPair(t, src, spFastLimits(), Limits{})
	s, err := cli.h.NewStream(context.Background(), srv.h.ID(), testBlobProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	cut := slowWrite(s, blobRequestLen)
	select {
	case <-cut:
	case <-time.After(5 * time.Second):
		t.Fatal("slow writer was not cut off")
	}
	spWait(t, 2*time.Second, "timeout counted", func() bool { return srvStats.Get(blobName, ReasonTimeout) == 1 })
	spWait(t, 2*time.Second, "handler exit", func() bool { return srv.g.live.Load() == 0 })
}

// slowWrite writes one byte per second to s (up to n bytes) and closes the
// returned channel once the stream is cut: a write or a read fails.
func slowWrite(s network.Stream, n int) <-chan struct{} {
	cut := make(chan struct{})
	var once sync.Once
	done := func() { once.Do(func() { close(cut) }) }
	go func() {
		var b [1]byte
		_, _ = s.Read(b[:]) // returns when the server resets the stream
		done()
	}()
	go func() {
		for i := 0; i < n; i++ {
			if _, err := s.Write([]byte{byte(i)}); err != nil {
				done()
				return
			}
			select {
			case <-cut:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return cut
}

func TestBlobCloseEndsFetches(t *testing.T) {
	t.Parallel()
	data := randBytes(t, 1000)
	src := newMemSource(data)
	src.wrap = func(_ int, r io.ReadSeeker) io.ReadSeeker { return &slowReader{ReadSeeker: r, d: time.Second} }
	srv, cli, _, _ := blobPair(t, src, Limits{}, Limits{})
	errc := make(chan error, 1)
	go func() {
		_, err := cli.Fetch(context.Background(), srv.h.ID(), sha256.Sum256(data))
		errc <- err
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	_ = cli.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("fetch succeeded after Close")
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not end the fetch")
	}
	if time.Since(start) > time.Second {
		t.Fatal("Close was slow")
	}
}

func TestBlobSlowReaderCut(t *testing.T) {
	t.Parallel()
	data := randBytes(t, 8<<20)
	src := newMemSource(data)
	srv, cli, srvStats, _ := blobPair(t, src, spFastLimits(), Limits{})
	s, err := cli.h.NewStream(context.Background(), srv.h.ID(), testBlobProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	d := sha256.Sum256(data)
	if _, err := s.Write(binary.BigEndian.AppendUint64(d[:], 0)); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	// Never read: the server's writes stall on flow control until its write
	// deadline cuts the stream.
	spWait(t, 5*time.Second, "timeout counted", func() bool { return srvStats.Get(blobName, ReasonTimeout) == 1 })
	spWait(t, 2*time.Second, "handler exit", func() bool { return srv.g.live.Load() == 0 })
}

// TestBlobFetchStopsAtSignedLength: a holder that serves a blob of another
// length than the signed one is refused on its size header, before the
// blob's bytes are read; the right length is fetched.
func TestBlobFetchStopsAtSignedLength(t *testing.T) {
	t.Parallel()
	data := randBytes(t, 3<<20)
	srv, cli, _, cliStats := blobPair(t, newMemSource(data), Limits{}, Limits{})
	_, err := cli.FetchSize(context.Background(), srv.h.ID(), sha256.Sum256(data), 4096)
	if err == nil || !strings.Contains(err.Error(), "signed length 4096") {
		t.Fatalf("oversize blob fetched: %v", err)
	}
	if n := cliStats.Get(blobName, ReasonSizeMismatch); n != 1 {
		t.Fatalf("size_mismatch counted %d times", n)
	}
	if in, _ := cliStats.Bytes(); in > 64<<10 {
		t.Fatalf("read %d bytes of a blob refused on its size", in)
	}
	got, err := cli.FetchSize(context.Background(), srv.h.ID(), sha256.Sum256(data), int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the signed length: %d bytes, %v", len(got), err)
	}
}
