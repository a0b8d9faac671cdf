package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/globalbrain/globalbrain/wire"
)

const testRaftProto = protocol.ID("/globalbrain-test/raft/1")

// raftInbox collects delivered messages per sender.
type raftInbox struct {
	mu   sync.Mutex
	msgs map[peer.ID][]string
	gate chan struct{} // when non-nil, deliver waits on it
}

func (in *raftInbox) deliver(from peer.ID, msg []byte) {
	if in.gate != nil {
		<-in.gate
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.msgs == nil {
		in.msgs = make(map[peer.ID][]string)
	}
	in.msgs[from] = append(in.msgs[from], string(msg))
}

func (in *raftInbox) count(from peer.ID) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.msgs[from])
}

func TestRaftDeliversInOrderPerPeer(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 3)
	members := spMembers(hs...)
	inbox := &raftInbox{}
	recvStats := new(Stats)
	recv := newRaftService(hs[0], testRaftProto, members, inbox.deliver, Limits{}, recvStats, nil)
	defer recv.Close()
	const n = 200
	var wg sync.WaitGroup
	for _, h := range hs[1:] {
		snd := newRaftService(h, testRaftProto, members, nil, Limits{}, nil, nil)
		defer snd.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 64)
			for i := 0; i < n; i++ {
				buf = fmt.Appendf(buf[:0], "%s-%04d-%s", h.ID().ShortString(), i, make([]byte, i%50))
				if err := snd.Send(hs[0].ID(), buf); err != nil {
					t.Error(err)
				}
				// The slice is reused at once: Send must have copied it.
				clear(buf[:cap(buf)])
			}
		}()
	}
	wg.Wait()
	for _, h := range hs[1:] {
		spWait(t, 5*time.Second, "all messages", func() bool { return inbox.count(h.ID()) == n })
		inbox.mu.Lock()
		for i, m := range inbox.msgs[h.ID()] {
			want := fmt.Sprintf("%s-%04d-%s", h.ID().ShortString(), i, make([]byte, i%50))
			if m != want {
				t.Fatalf("message %d from %s = %q, want %q", i, h.ID().ShortString(), m, want)
			}
		}
		inbox.mu.Unlock()
	}
}

func TestRaftQueueOverflowDropsAndCounts(t *testing.T) {
	hs := spHosts(t, 2)
	members := spMembers(hs...)
	inbox := &raftInbox{gate: make(chan struct{})}
	recv := newRaftService(hs[0], testRaftProto, members, inbox.deliver, Limits{}, nil, nil)
	defer recv.Close()
	sndStats := new(Stats)
	snd := newRaftService(hs[1], testRaftProto, members, nil, Limits{}, sndStats, nil)
	defer snd.Close()

	// The receiver blocks in deliver, so the stream's flow-control window
	// fills after a few 64 KiB messages, the writer stalls, and the queue of
	// 256 fills behind it.
	msg := make([]byte, 64<<10)
	sent, dropped := 0, 0
	for i := 0; i < 400; i++ {
		binary.BigEndian.PutUint32(msg, uint32(i))
		switch err := snd.Send(hs[0].ID(), msg); {
		case err == nil:
			sent++
		case errors.Is(err, ErrQueueFull):
			dropped++
		default:
			t.Fatal(err)
		}
		if i == 20 {
			time.Sleep(200 * time.Millisecond) // let the writer open the stream and stall
		}
	}
	if dropped == 0 || sent < raftQueueLen {
		t.Fatalf("sent %d, dropped %d", sent, dropped)
	}
	if got := sndStats.Get(raftName, ReasonQueueFull); got != uint64(dropped) {
		t.Fatalf("queue_full = %d, dropped %d", got, dropped)
	}
	close(inbox.gate)
	spWait(t, 10*time.Second, "queued messages delivered", func() bool { return inbox.count(hs[1].ID()) == sent })
	// Delivered in order, with gaps only where messages were dropped.
	inbox.mu.Lock()
	defer inbox.mu.Unlock()
	last := -1
	for _, m := range inbox.msgs[hs[1].ID()] {
		i := int(binary.BigEndian.Uint32([]byte(m)))
		if i <= last {
			t.Fatalf("message %d after %d", i, last)
		}
		last = i
	}
}

func TestRaftNonMemberRefused(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 2)
	inbox := &raftInbox{}
	recvStats := new(Stats)
	recv := newRaftService(hs[0], testRaftProto, spMembers(hs[0]), inbox.deliver, Limits{}, recvStats, nil)
	defer recv.Close()
	snd := newRaftService(hs[1], testRaftProto, spMembers(hs...), nil, Limits{}, nil, nil)
	defer snd.Close()
	if err := snd.Send(hs[0].ID(), []byte("vote for me")); err != nil {
		t.Fatal(err)
	}
	spWait(t, 5*time.Second, "not_member counted", func() bool { return recvStats.Get(raftName, wire.ReasonNotMember) > 0 })
	time.Sleep(50 * time.Millisecond)
	if inbox.count(hs[1].ID()) != 0 {
		t.Fatal("delivered a non-member's message")
	}
}

func TestRaftHugeLengthPrefixRefusedWithoutAllocating(t *testing.T) {
	hs := spHosts(t, 2)
	stats := new(Stats)
	inbox := &raftInbox{}
	recv := newRaftService(hs[0], testRaftProto, spMembers(hs...), inbox.deliver, Limits{}, stats, nil)
	defer recv.Close()
	spHugePrefix(t, hs[1], hs[0].ID(), testRaftProto, nil)
	spWait(t, 5*time.Second, "frame_too_large counted", func() bool { return stats.Get(raftName, ReasonFrameTooLarge) == 1 })
	if inbox.count(hs[1].ID()) != 0 {
		t.Fatal("delivered something")
	}
}

// spHugePrefix opens a stream to `to` and sends prefix (a valid message,
// may be nil) followed by a 4 GiB length prefix, and checks that the
// receiver resets the stream and that the process allocated far less than
// 4 GiB meanwhile.
func spHugePrefix(t *testing.T, from interface {
	NewStream(context.Context, peer.ID, ...protocol.ID) (network.Stream, error)
}, to peer.ID, proto protocol.ID, prefix []byte) {
	t.Helper()
	before := spTotalAlloc()
	s, err := from.NewStream(context.Background(), to, proto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	msg := append(append([]byte(nil), prefix...), 0xFF, 0xFF, 0xFF, 0xFF)
	if _, err := s.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err := s.Read(b[:]); err == nil || isTimeout(err) {
		t.Fatalf("stream not reset after a 4 GiB prefix: %v", err)
	}
	if grew := spTotalAlloc() - before; grew > 64<<20 {
		t.Fatalf("allocated %d MiB while refusing a 4 GiB frame", grew>>20)
	}
}

func TestRaftOneBytePerSecondWriterCut(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 2)
	stats := new(Stats)
	recv := newRaftService(hs[0], testRaftProto, spMembers(hs...), nil, spFastLimits(), stats, nil)
	defer recv.Close()
	s, err := hs[1].NewStream(context.Background(), hs[0].ID(), testRaftProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	select {
	case <-slowWrite(s, 100):
	case <-time.After(5 * time.Second):
		t.Fatal("slow writer was not cut off")
	}
	spWait(t, 2*time.Second, "timeout counted", func() bool { return stats.Get(raftName, ReasonTimeout) == 1 })
	spWait(t, 2*time.Second, "handler exit", func() bool { return recv.g.live.Load() == 0 })
}

func TestRaftStreamsPerPeerLimit(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 2)
	stats := new(Stats)
	inbox := &raftInbox{}
	recv := newRaftService(hs[0], testRaftProto, spMembers(hs...), inbox.deliver, Limits{StreamsPerPeer: 2}, stats, nil)
	defer recv.Close()
	frame := appendFrame(nil, []byte("hello"))
	var streams []network.Stream
	for i := 0; i < 3; i++ {
		s, err := hs[1].NewStream(context.Background(), hs[0].ID(), testRaftProto)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Reset()
		if _, err := s.Write(frame); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
		spWait(t, 2*time.Second, "stream handled", func() bool {
			return inbox.count(hs[1].ID())+int(stats.Get(raftName, ReasonTooManyStreams)) == i+1
		})
	}
	if got := stats.Get(raftName, ReasonTooManyStreams); got != 1 {
		t.Fatalf("too_many_streams = %d", got)
	}
	// Closing one stream frees its slot.
	_ = streams[0].Close()
	spWait(t, 2*time.Second, "slot freed", func() bool { return recv.g.live.Load() == 1 })
	s, err := hs[1].NewStream(context.Background(), hs[0].ID(), testRaftProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	if _, err := s.Write(frame); err != nil {
		t.Fatal(err)
	}
	spWait(t, 2*time.Second, "fourth stream admitted", func() bool { return inbox.count(hs[1].ID()) == 3 })
}

func TestRaftIdleSenderReconnects(t *testing.T) {
	hs := spHosts(t, 2)
	members := spMembers(hs...)
	inbox := &raftInbox{}
	recvStats := new(Stats)
	recv := newRaftService(hs[0], testRaftProto, members, inbox.deliver, Limits{IdleTimeout: 400 * time.Millisecond}, recvStats, nil)
	defer recv.Close()
	// The sender closes after IdleTimeout/2 = 100ms without messages.
	snd := newRaftService(hs[1], testRaftProto, members, nil, Limits{IdleTimeout: 200 * time.Millisecond}, nil, nil)
	defer snd.Close()
	for i := 0; i < 2; i++ {
		if err := snd.Send(hs[0].ID(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		spWait(t, 2*time.Second, "delivery", func() bool { return inbox.count(hs[1].ID()) == i+1 })
		time.Sleep(600 * time.Millisecond) // longer than the receiver's idle timeout
	}
	// The sender closed its idle stream before the receiver's cut.
	if got := recvStats.Get(raftName, ReasonTimeout); got != 0 {
		t.Fatalf("receiver cut %d idle streams", got)
	}
	if err := snd.Close(); err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(hs[0].ID(), []byte("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
}

func TestRaftCloseUnblocksStalledWriter(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 2)
	members := spMembers(hs...)
	inbox := &raftInbox{gate: make(chan struct{})}
	recv := newRaftService(hs[0], testRaftProto, members, inbox.deliver, Limits{}, nil, nil)
	snd := newRaftService(hs[1], testRaftProto, members, nil, Limits{}, nil, nil)
	msg := make([]byte, 256<<10)
	for i := 0; i < 8; i++ {
		_ = snd.Send(hs[0].ID(), msg)
	}
	time.Sleep(200 * time.Millisecond) // the writer is now stuck on flow control
	start := time.Now()
	if err := snd.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Close took %v", el)
	}
	close(inbox.gate)
	if err := recv.Close(); err != nil {
		t.Fatal(err)
	}
	if recv.g.live.Load() != 0 {
		t.Fatal("handler still running after Close")
	}
}
