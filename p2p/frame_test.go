package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// spHosts starts n real libp2p hosts on 127.0.0.1 and connects every pair.
func spHosts(t testing.TB, n int) []host.Host {
	t.Helper()
	hs := make([]host.Host, n)
	for i := range hs {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		h, err := libp2p.New(
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.DisableRelay(),
			libp2p.DisableMetrics(),
			libp2p.Identity(k),
		)
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = h
		t.Cleanup(func() { _ = h.Close() })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range hs {
		for j := i + 1; j < n; j++ {
			if err := hs[i].Connect(ctx, peer.AddrInfo{ID: hs[j].ID(), Addrs: hs[j].Addrs()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return hs
}

// spMembers returns an isMember function admitting exactly the given hosts.
func spMembers(hs ...host.Host) func(peer.ID) bool {
	m := make(map[peer.ID]bool)
	for _, h := range hs {
		m[h.ID()] = true
	}
	return func(p peer.ID) bool { return m[p] }
}

// spFastLimits are limits with short deadlines for tests.
func spFastLimits() Limits {
	l := DefaultLimits()
	l.ReadTimeout = 300 * time.Millisecond
	l.IdleTimeout = 300 * time.Millisecond
	return l
}

// spWait polls cond until it holds or the timeout expires.
func spWait(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// spTotalAlloc returns the bytes allocated by the process so far.
func spTotalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	msgs := [][]byte{{}, []byte("a"), bytes.Repeat([]byte{7}, 70000)}
	for _, m := range msgs {
		if err := writeFrame(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range msgs {
		got, err := readFrame(&buf, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, m) {
			t.Fatalf("got %d bytes, want %d", len(got), len(m))
		}
	}
	if _, err := readFrame(&buf, 1<<20); err != io.EOF {
		t.Fatalf("empty reader: %v, want EOF", err)
	}
}

func TestFrameLimitCheckedBeforeAllocating(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 0xFFFFFFFF)
	before := spTotalAlloc()
	_, err := readFrame(bytes.NewReader(hdr[:]), 4<<20)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	if grew := spTotalAlloc() - before; grew > 1<<20 {
		t.Fatalf("allocated %d bytes for a refused frame", grew)
	}
	// Exactly the limit is accepted; one more is not.
	binary.BigEndian.PutUint32(hdr[:], 5)
	if _, err := readFrame(io.MultiReader(bytes.NewReader(hdr[:]), bytes.NewReader(make([]byte, 5))), 5); err != nil {
		t.Fatal(err)
	}
	if _, err := readFrame(bytes.NewReader(hdr[:]), 4); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	// A short payload is an unexpected EOF.
	if _, err := readFrame(io.MultiReader(bytes.NewReader(hdr[:]), bytes.NewReader(make([]byte, 2))), 5); err != io.ErrUnexpectedEOF {
		t.Fatalf("short frame: %v", err)
	}
}

func TestFrameTransferTime(t *testing.T) {
	if got := transferTime(3<<20, 1<<20); got != 3*time.Second {
		t.Fatalf("3 MiB at 1 MiB/s = %v", got)
	}
	if got := transferTime(1<<19, 1<<20); got != 500*time.Millisecond {
		t.Fatalf("512 KiB at 1 MiB/s = %v", got)
	}
	if got := transferTime(1<<62, 1); got <= 0 {
		t.Fatalf("overflow: %v", got)
	}
}

func TestLimitsDefaults(t *testing.T) {
	l := Limits{MaxFrame: 10}.withDefaults()
	d := DefaultLimits()
	if l.MaxFrame != 10 || l.MaxBlob != d.MaxBlob || l.StreamsPerPeer != 4 || l.RequestsPerSecond != 20 ||
		l.ReadTimeout != 10*time.Second || l.IdleTimeout != 30*time.Second || l.MinRate != 1<<20 || l.FetchConcurrency != 4 ||
		l.FetchPerPeer != 2 || l.RaftPerSecond != 200 || l.MaxRaftFrame != 10 {
		t.Fatalf("withDefaults = %+v", l)
	}
	if d.MaxRaftFrame != 2<<20 || d.fetchSlots() != 4 {
		t.Fatalf("DefaultLimits = %+v", d)
	}
	if got := (Limits{FetchConcurrency: 2, FetchPerPeer: 3}).fetchSlots(); got != 6 {
		t.Fatalf("global fetch slots with 3 per peer = %d, want 6", got)
	}
}

func TestStatsConcurrent(t *testing.T) {
	var s Stats
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				s.Inc("blob", ReasonTimeout)
				s.AddBytes(1, 2)
			}
		}()
	}
	wg.Wait()
	if got := s.Snapshot()["blob/timeout"]; got != 8000 {
		t.Fatalf("blob/timeout = %d", got)
	}
	if in, out := s.Bytes(); in != 8000 || out != 16000 {
		t.Fatalf("bytes = %d, %d", in, out)
	}
	var nilStats *Stats
	nilStats.Inc("x", "y") // must not panic
}
