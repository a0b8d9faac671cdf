package p2p

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/globalbrain/globalbrain/wire"
)

const testSyncProto = protocol.ID("/globalbrain-test/sync/1")

func syncSource(perRound map[uint64][][]byte) func(context.Context, peer.ID, uint64) [][]byte {
	return func(_ context.Context, _ peer.ID, r uint64) [][]byte { return perRound[r] }
}

func TestSyncPullReturnsSourceMessages(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 2)
	members := spMembers(hs...)
	msgs := [][]byte{[]byte("announce-a"), {}, bytes.Repeat([]byte{9}, 100000)}
	srvStats := new(Stats)
	srv := newSyncService(hs[0], testSyncProto, members, syncSource(map[uint64][][]byte{7: msgs}), Limits{}, srvStats, nil)
	defer srv.Close()
	cli := newSyncService(hs[1], testSyncProto, members, nil, Limits{}, nil, nil)
	defer cli.Close()
	got, err := cli.Pull(context.Background(), hs[0].ID(), 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(msgs) {
		t.Fatalf("got %d messages, want %d", len(got), len(msgs))
	}
	for i := range msgs {
		if !bytes.Equal(got[i], msgs[i]) {
			t.Fatalf("message %d differs", i)
		}
	}
	got, err = cli.Pull(context.Background(), hs[0].ID(), 8)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty round: %d messages, %v", len(got), err)
	}
	spWait(t, 2*time.Second, "served counted", func() bool { return srvStats.Get(syncName, ReasonServed) == 2 })
}

func TestSyncServerCapsResponse(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 2)
	members := spMembers(hs...)
	lim := Limits{MaxFrame: 1024} // response cap 16 KiB
	var msgs [][]byte
	msgs = append(msgs, make([]byte, 2000)) // above MaxFrame: left out
	for i := 0; i < 40; i++ {
		msgs = append(msgs, bytes.Repeat([]byte{byte(i)}, 1000))
	}
	srvStats := new(Stats)
	srv := newSyncService(hs[0], testSyncProto, members, syncSource(map[uint64][][]byte{1: msgs}), lim, srvStats, nil)
	defer srv.Close()
	cli := newSyncService(hs[1], testSyncProto, members, nil, lim, nil, nil)
	defer cli.Close()
	got, err := cli.Pull(context.Background(), hs[0].ID(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 16 {
		t.Fatalf("got %d messages, want the 16 that fit in 16 KiB", len(got))
	}
	for i, m := range got {
		if !bytes.Equal(m, msgs[i+1]) {
			t.Fatalf("message %d differs", i)
		}
	}
	if srvStats.Get(syncName, ReasonTruncated) != 1 {
		t.Fatalf("stats %v", srvStats.Snapshot())
	}
}

func TestSyncClientCapsResponse(t *testing.T) {
	cases := []struct {
		name string
		resp []byte
	}{
		{"count 4G", []byte{0xFF, 0xFF, 0xFF, 0xFF}},
		{"frame 4G", []byte{0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF}},
		{"frame above MaxFrame", []byte{0, 0, 0, 1, 0, 0, 0x04, 0x01}},
		{"total above 16 x MaxFrame", func() []byte {
			b := binary.BigEndian.AppendUint32(nil, 17)
			for i := 0; i < 17; i++ {
				b = appendFrame(b, make([]byte, 1024))
			}
			return b
		}()},
	}
	hs := spHosts(t, 2)
	members := spMembers(hs...)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			proto := protocol.ID(fmt.Sprintf("/globalbrain-test/sync-evil/%d", i))
			hs[0].SetStreamHandler(proto, func(s network.Stream) {
				_, _ = readFrame(s, 64)
				_, _ = s.Write(c.resp)
				time.Sleep(500 * time.Millisecond)
				_ = s.Reset()
			})
			stats := new(Stats)
			cli := newSyncService(hs[1], proto, members, nil, Limits{MaxFrame: 1024}, stats, nil)
			defer cli.Close()
			before := spTotalAlloc()
			_, err := cli.Pull(context.Background(), hs[0].ID(), 1)
			if !errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("err = %v, want ErrFrameTooLarge", err)
			}
			if grew := spTotalAlloc() - before; grew > 64<<20 {
				t.Fatalf("allocated %d MiB", grew>>20)
			}
			if stats.Get(syncName, ReasonFrameTooLarge) != 1 {
				t.Fatalf("stats %v", stats.Snapshot())
			}
		})
	}
}

func TestSyncHugeLengthPrefixRefusedWithoutAllocating(t *testing.T) {
	hs := spHosts(t, 2)
	stats := new(Stats)
	srv := newSyncService(hs[0], testSyncProto, spMembers(hs...), syncSource(nil), Limits{}, stats, nil)
	defer srv.Close()
	spHugePrefix(t, hs[1], hs[0].ID(), testSyncProto, nil)
	spWait(t, 5*time.Second, "frame_too_large counted", func() bool { return stats.Get(syncName, ReasonFrameTooLarge) == 1 })
}

func TestSyncOneBytePerSecondWriterCut(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 2)
	stats := new(Stats)
	srv := newSyncService(hs[0], testSyncProto, spMembers(hs...), syncSource(nil), spFastLimits(), stats, nil)
	defer srv.Close()
	s, err := hs[1].NewStream(context.Background(), hs[0].ID(), testSyncProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	select {
	case <-slowWrite(s, 12):
	case <-time.After(5 * time.Second):
		t.Fatal("slow writer was not cut off")
	}
	spWait(t, 2*time.Second, "timeout counted", func() bool { return stats.Get(syncName, ReasonTimeout) == 1 })
	spWait(t, 2*time.Second, "handler exit", func() bool { return srv.g.live.Load() == 0 })
}

func TestSyncNonMemberRefused(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 2)
	stats := new(Stats)
	srv := newSyncService(hs[0], testSyncProto, spMembers(hs[0]), syncSource(map[uint64][][]byte{1: {[]byte("secret")}}), Limits{}, stats, nil)
	defer srv.Close()
	cli := newSyncService(hs[1], testSyncProto, spMembers(hs...), nil, Limits{}, nil, nil)
	defer cli.Close()
	if _, err := cli.Pull(context.Background(), hs[0].ID(), 1); err == nil {
		t.Fatal("non-member pulled")
	}
	if stats.Get(syncName, wire.ReasonNotMember) != 1 {
		t.Fatalf("stats %v", stats.Snapshot())
	}
}

func TestSyncRateLimit(t *testing.T) {
	hs := spHosts(t, 2)
	members := spMembers(hs...)
	stats := new(Stats)
	srv := newSyncService(hs[0], testSyncProto, members, syncSource(map[uint64][][]byte{1: {[]byte("m")}}), Limits{RequestsPerSecond: 1}, stats, nil)
	defer srv.Close()
	cli := newSyncService(hs[1], testSyncProto, members, nil, Limits{}, nil, nil)
	defer cli.Close()
	ok, refused := 0, 0
	for i := 0; i < 5; i++ {
		if _, err := cli.Pull(context.Background(), hs[0].ID(), 1); err == nil {
			ok++
		} else {
			refused++
		}
	}
	// Burst 2, refilling at 1/s: the first two pass, most of the rest do not.
	if ok < 2 || refused == 0 || uint64(refused) != stats.Get(syncName, ReasonRateLimited) {
		t.Fatalf("ok %d, refused %d, stats %v", ok, refused, stats.Snapshot())
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := cli.Pull(context.Background(), hs[0].ID(), 1); err != nil {
		t.Fatalf("after refill: %v", err)
	}
}

func TestSyncBadRequest(t *testing.T) {
	t.Parallel()
	hs := spHosts(t, 2)
	stats := new(Stats)
	srv := newSyncService(hs[0], testSyncProto, spMembers(hs...), syncSource(nil), Limits{}, stats, nil)
	defer srv.Close()
	s, err := hs[1].NewStream(context.Background(), hs[0].ID(), testSyncProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	if err := writeFrame(s, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(s); err == nil {
		t.Fatal("no reset after a malformed request")
	}
	spWait(t, 2*time.Second, "bad_request counted", func() bool { return stats.Get(syncName, ReasonBadRequest) == 1 })
}
