package p2p

// One member, with a valid member key, must not stall or starve another
// member's transport: it may trickle blobs, flood Raft frames or send
// oversized ones, and the other members' traffic still goes through.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/globalbrain/globalbrain/wire"
)

// TestBlobTricklingPeerDoesNotStarveOthers: a member accepts four blob
// requests and then sends one byte a second. A 4 KiB fetch from another
// member, started while the four trickle, completes at once; the trickler
// holds only its FetchPerPeer (2) slots.
func TestBlobTricklingPeerDoesNotStarveOthers(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 3) // 0 fetches, 1 trickles, 2 serves honestly
	members := spMembers(hs...)
	var active, peak atomic.Int64
	stop := make(chan struct{})
	hs[1].SetStreamHandler(testBlobProto, func(s network.Stream) {
		defer s.Reset()
		var req [blobRequestLen]byte
		if _, err := io.ReadFull(s, req[:]); err != nil {
			return
		}
		n := active.Add(1)
		defer active.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		if _, err := s.Write(binary.BigEndian.AppendUint64([]byte{blobOK}, 4096)); err != nil {
			return
		}
		for range 4096 {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			if _, err := s.Write([]byte{0}); err != nil {
				return
			}
		}
	})
	good := randBytes(t, 4096)
	src := newMemSource(good)
	srv := newBlobService(hs[2], testBlobProto, src, members, src.servable, Limits{}, nil, nil)
	cli := newBlobService(hs[0], testBlobProto, nil, members, nil, Limits{}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		close(stop)
		wg.Wait()
		_ = cli.Close()
		_ = srv.Close()
	})

	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = cli.Fetch(ctx, hs[1].ID(), [32]byte{byte(i + 1)})
		}()
	}
	spWait(t, 5*time.Second, "trickling fetches in flight", func() bool { return active.Load() >= 2 })
	time.Sleep(300 * time.Millisecond) // room for the other two to reach the trickler, if they may

	start := time.Now()
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	got, err := cli.Fetch(hctx, hs[2].ID(), sha256.Sum256(good))
	took := time.Since(start)
	t.Logf("honest 4 KiB fetch took %v with %d trickling fetches in flight", took, active.Load())
	if err != nil || !bytes.Equal(got, good) {
		t.Fatalf("honest fetch while a member trickles: %v after %v", err, took)
	}
	if took > 3*time.Second {
		t.Fatalf("honest fetch took %v", took)
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("the trickler held %d fetches at once, want 2 (FetchPerPeer)", p)
	}
}

// TestRaftFloodRateLimited: a member floods 10,000 Raft frames a second for
// 1.5 s into a node that handles about 2,000 messages a second. Most are
// dropped and counted rate_limited; an honest member's messages, sent
// during the flood, all reach the inbox.
func TestRaftFloodRateLimited(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 3) // 0 receives, 1 floods, 2 is honest
	members := spMembers(hs...)
	stats := new(Stats)
	in := newInbox(defaultInboxSize, stats, slog.New(slog.DiscardHandler))
	var admitted atomic.Int64 // flood frames handed to the inbox
	recv := newRaftService(hs[0], testRaftProto, members, func(from peer.ID, msg []byte) {
		if from == hs[1].ID() {
			admitted.Add(1)
		}
		in.push(raftName, wire.Inbound{Kind: wire.Raft, From: fromPeer(from), Data: msg})
	}, Limits{}, stats, nil)
	defer recv.Close()

	// The node takes about half a millisecond per message.
	var mu sync.Mutex
	honest := map[string]bool{}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case m := <-in.ch:
				if toPeer(m.From) == hs[2].ID() {
					mu.Lock()
					honest[string(m.Data)] = true
					mu.Unlock()
				}
				time.Sleep(500 * time.Microsecond)
			}
		}
	}()

	s, err := hs[1].NewStream(context.Background(), hs[0].ID(), testRaftProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	frame := appendFrame(nil, []byte("vote-for-me-vote-for-me"))
	batch := bytes.Repeat(frame, 100)
	floodStart := time.Now()
	flooded := make(chan int, 1)
	go func() { // 10,000 frames a second, written every 2 ms
		sent := 0
		tk := time.NewTicker(2 * time.Millisecond)
		defer tk.Stop()
		for time.Since(floodStart) < 1500*time.Millisecond {
			<-tk.C
			due := min(int(time.Since(floodStart).Seconds()*10000)-sent, 100)
			if due <= 0 {
				continue
			}
			if _, err := s.Write(batch[:due*len(frame)]); err != nil {
				break
			}
			sent += due
		}
		flooded <- sent
	}()

	snd := newRaftService(hs[2], testRaftProto, members, nil, Limits{}, nil, nil)
	defer snd.Close()
	const n = 25
	time.Sleep(300 * time.Millisecond)
	for i := range n {
		if err := snd.Send(hs[0].ID(), fmt.Appendf(nil, "honest-%02d", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(40 * time.Millisecond)
	}
	sent := <-flooded
	floodTime := time.Since(floodStart)

	deadline := time.Now().Add(3 * time.Second)
	arrived := func() int { mu.Lock(); defer mu.Unlock(); return len(honest) }
	for arrived() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	rateLimited := func() int64 { return int64(stats.Get(raftName, ReasonRateLimited)) }
	spWait(t, 5*time.Second, "every flood frame read", func() bool { return admitted.Load()+rateLimited() == int64(sent) })
	t.Logf("flood: %d frames in %v, %d admitted, %d rate_limited; honest: %d of %d arrived; raft/inbox_full %d",
		sent, floodTime.Round(time.Millisecond), admitted.Load(), rateLimited(), arrived(), n, stats.Get(raftName, ReasonInboxFull))
	if got := arrived(); got != n {
		t.Errorf("%d of the honest member's %d messages reached the inbox", got, n)
	}
	if rl := rateLimited(); rl < int64(sent)*8/10 {
		t.Errorf("rate_limited = %d of %d flood frames, want most", rl, sent)
	}
	// 200 a second with a burst of 400, and some slack.
	if max := 400 + int64(200*(floodTime.Seconds()+0.5)); admitted.Load() > max {
		t.Errorf("admitted %d flood frames, want at most %d", admitted.Load(), max)
	}
}

// TestRaftFrameCap: a Raft message above MaxRaftFrame (2 MiB) is refused
// by the sender and, sent anyway, cuts the receiver's stream before it is
// allocated; a 1.5 MiB one, the size of a full MsgApp, goes through.
func TestRaftFrameCap(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 2)
	members := spMembers(hs...)
	stats := new(Stats)
	inbox := &raftInbox{}
	recv := newRaftService(hs[0], testRaftProto, members, inbox.deliver, Limits{}, stats, nil)
	defer recv.Close()
	sndStats := new(Stats)
	snd := newRaftService(hs[1], testRaftProto, members, nil, Limits{}, sndStats, nil)
	defer snd.Close()

	big := make([]byte, 3<<20)
	if err := snd.Send(hs[0].ID(), big); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("Send of 3 MiB: %v, want ErrFrameTooLarge", err)
	}
	if got := sndStats.Get(raftName, ReasonFrameTooLarge); got != 1 {
		t.Errorf("sender frame_too_large = %d", got)
	}

	s, err := hs[1].NewStream(context.Background(), hs[0].ID(), testRaftProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	go func() { _, _ = s.Write(appendFrame(nil, big)) }()
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err := s.Read(b[:]); err == nil || isTimeout(err) {
		t.Errorf("stream not reset after a 3 MiB frame: %v", err)
	}
	spWait(t, 5*time.Second, "frame_too_large counted", func() bool { return stats.Get(raftName, ReasonFrameTooLarge) == 1 })
	if inbox.count(hs[1].ID()) != 0 {
		t.Fatal("delivered a 3 MiB frame")
	}

	if err := snd.Send(hs[0].ID(), make([]byte, 3<<19)); err != nil {
		t.Fatal(err)
	}
	spWait(t, 5*time.Second, "1.5 MiB message delivered", func() bool { return inbox.count(hs[1].ID()) == 1 })
}

// TestStatsBoundedKeys: counters keyed by ever new reasons stop growing at
// 512 keys; the rest is counted under stats/overflow and the existing
// counters keep counting.
func TestStatsBoundedKeys(t *testing.T) {
	var s Stats
	s.Inc(raftName, ReasonRateLimited)
	for i := range 10000 {
		s.Inc(gossipName, fmt.Sprintf("reason-%d", i))
	}
	s.Inc(raftName, ReasonRateLimited)
	snap := s.Snapshot()
	if len(snap) > 513 {
		t.Fatalf("%d counters", len(snap))
	}
	if got, want := snap["stats/overflow"], uint64(10000-511); got != want {
		t.Fatalf("stats/overflow = %d, want %d", got, want)
	}
	if got := s.Get(raftName, ReasonRateLimited); got != 2 {
		t.Fatalf("raft/rate_limited = %d", got)
	}
}

// TestFetchSlots: at most perPeer slots per peer and global in all; a fetch
// waiting for a busy peer holds no global slot; cancelled and finished
// fetches leave no per-peer state behind.
func TestFetchSlots(t *testing.T) {
	f := newFetchSlots(2, 4)
	ctx := context.Background()
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	var rel []func()
	take := func(p peer.ID) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		r, err := f.acquire(cctx, p)
		if err != nil {
			t.Fatalf("slot of %s: %v", p, err)
		}
		rel = append(rel, r)
	}
	busy := func(p peer.ID) bool {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		r, err := f.acquire(cctx, p)
		if err == nil {
			r()
			return false
		}
		return true
	}
	take(a)
	take(a)
	if !busy(a) {
		t.Fatal("a third slot of one peer")
	}
	// A fetch waiting for a does not take b's global slot.
	wctx, wcancel := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() {
		r, err := f.acquire(wctx, a)
		if err == nil {
			r()
		}
		waited <- err
	}()
	take(b)
	take(b)
	if !busy(c) {
		t.Fatal("a fifth slot in all")
	}
	wcancel()
	if err := <-waited; err == nil {
		t.Fatal("waiting fetch got a slot")
	}
	for _, r := range rel {
		r()
	}
	take(c)
	rel[len(rel)-1]()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.peers) != 0 || len(f.global) != 0 {
		t.Fatalf("left %d peers, %d global slots", len(f.peers), len(f.global))
	}
}
