package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/globalbrain/globalbrain/fedavg"
)

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

func (b *bytesSource) OpenBlob(d fedavg.Digest) (io.ReadSeekCloser, int64, error) {
	if d != b.d {
		return nil, 0, errors.New("p2p: no such blob")
	}
	return nopSeekCloser{bytes.NewReader(b.data)}, int64(len(b.data)), nil
}

// blobBench is a server host holding one blob and client hosts, connected to
// it, ready to fetch the blob.
type blobBench struct {
	hosts   []host.Host
	srv     *blobService
	clients []*blobService
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
	b.srv = newBlobService(b.hosts[0], benchBlobProto, src, isMember, func(d [32]byte) bool { return d == b.d }, lim, nil, nil)
	server := peer.AddrInfo{ID: b.hosts[0].ID(), Addrs: b.hosts[0].Addrs()}
	for _, h := range b.hosts[1:] {
		if err := h.Connect(ctx, server); err != nil {
			return nil, err
		}
		b.clients = append(b.clients, newBlobService(h, benchBlobProto, nil, isMember, nil, lim, nil, nil))
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
