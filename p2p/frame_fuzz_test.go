package p2p

// Seed corpus (testdata/fuzz/FuzzReadFrame) regenerates with
//
//	FUZZ_WRITE_SEEDS=1 go test -run '^TestWriteFrameFuzzSeeds$' ./p2p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// frameLimits are the limits the node's readers use: a control frame
// (Raft and each sync message: MaxFrame), a sync request, a blob refusal's
// reason, and a sync response whose byte budget is spent (min(MaxFrame,
// budget left) reaches 0).
var frameLimits = []int{DefaultLimits().MaxFrame, syncRequestMax, blobMaxReason, 0}

// frameAllocSlack is what a read may allocate beyond the payload (the error
// values; a worker's own bookkeeping running concurrently).
const frameAllocSlack = 64 << 10

// FuzzReadFrame reads frames from a bytes.Reader with a real limit (limit
// picks one of frameLimits) until the stream ends or a frame is refused, as
// the Raft stream handler does, alternating readFrame and readFrameHeader.
// Properties: no panic; every frame is at most the limit; a length above
// the limit is refused with ErrFrameTooLarge after reading the 4-byte
// header alone and before allocating; a read allocates at most the limit
// (plus slack) whatever length is announced; a frame written with
// writeFrame reads back the same.
func FuzzReadFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, limit byte, data []byte) {
		max := frameLimits[int(limit)%len(frameLimits)]
		r := bytes.NewReader(data)
		var ms runtime.MemStats
		for i := 0; ; i++ {
			start := r.Len()
			var announced uint64
			if start >= frameHeaderLen {
				announced = uint64(binary.BigEndian.Uint32(data[len(data)-start:]))
			}
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			var n int
			var buf []byte
			var err error
			if i%2 == 0 {
				buf, err = readFrame(r, max)
				n = len(buf)
			} else {
				n, err = readFrameHeader(r, max)
				if err == nil {
					buf = make([]byte, n) // as the Raft and sync readers do
					_, err = io.ReadFull(r, buf)
				}
			}
			runtime.ReadMemStats(&ms)
			if alloc := ms.TotalAlloc - before; alloc > uint64(max)+frameAllocSlack {
				t.Fatalf("limit %d, announced %d: allocated %d bytes", max, announced, alloc)
			}
			consumed := start - r.Len()
			switch {
			case start < frameHeaderLen:
				if err == nil || consumed != start {
					t.Fatalf("short header of %d bytes: %v, consumed %d", start, err, consumed)
				}
			case announced > uint64(max):
				if !errors.Is(err, ErrFrameTooLarge) || consumed != frameHeaderLen || buf != nil {
					t.Fatalf("limit %d, announced %d: err %v, consumed %d, buf %d", max, announced, err, consumed, len(buf))
				}
			case err == nil:
				if uint64(n) != announced || cap(buf) > max || consumed != frameHeaderLen+n ||
					!bytes.Equal(buf, data[len(data)-start+frameHeaderLen:][:n]) {
					t.Fatalf("limit %d, announced %d: frame of %d (cap %d), consumed %d", max, announced, n, cap(buf), consumed)
				}
			default: // the payload was cut short
				if start-frameHeaderLen >= int(announced) || consumed != start {
					t.Fatalf("limit %d, announced %d of %d: %v, consumed %d", max, announced, start-frameHeaderLen, err, consumed)
				}
			}
			if err != nil {
				break
			}
		}

		if len(data) <= max {
			var w bytes.Buffer
			if err := writeFrame(&w, data); err != nil {
				t.Fatal(err)
			}
			got, err := readFrame(bytes.NewReader(w.Bytes()), max)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("writeFrame/readFrame of %d bytes: %v", len(data), err)
			}
		}
	})
}

// TestWriteFrameFuzzSeeds regenerates the checked-in seed corpus: real
// frames (an encoded sync request, a blob refusal's reason, Raft-sized
// frames, a sync response's frames) and malformed ones.
func TestWriteFrameFuzzSeeds(t *testing.T) {
	if os.Getenv("FUZZ_WRITE_SEEDS") == "" {
		t.Skip("set FUZZ_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	frames := func(ps ...[]byte) []byte {
		var b []byte
		for _, p := range ps {
			b = appendFrame(b, p)
		}
		return b
	}
	syncReq := binary.BigEndian.AppendUint64(nil, 7)
	msg := []byte(`{"kind":"have","round":7,"digest":[1,2,3],"author":"ACQIARIg","sig":"c2ln"}`)
	seeds := map[string][]any{
		"sync-request":         {byte(1), frames(syncReq)},
		"blob-reason":          {byte(2), frames([]byte("not servable"))},
		"raft-frames":          {byte(0), frames([]byte("\x08\x03\x10\x01\x18\x02"), []byte{}, bytes.Repeat([]byte{0x5a}, 300))},
		"sync-messages":        {byte(0), frames(msg, msg, msg)},
		"empty-frame":          {byte(3), frames([]byte{})},
		"budget-spent":         {byte(3), frames([]byte("x"))},
		"max-announced":        {byte(0), []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3}},
		"one-over-maxframe":    {byte(0), binary.BigEndian.AppendUint32(nil, uint32(DefaultLimits().MaxFrame)+1)},
		"maxframe-truncated":   {byte(0), binary.BigEndian.AppendUint32(nil, uint32(DefaultLimits().MaxFrame))},
		"one-over-sync-req":    {byte(1), frames(make([]byte, syncRequestMax+1))},
		"reason-at-limit":      {byte(2), frames(make([]byte, blobMaxReason))},
		"truncated-payload":    {byte(2), frames([]byte("abcdef"))[:7]},
		"short-header":         {byte(0), []byte{0, 0}},
		"empty":                {byte(0), []byte{}},
		"second-frame-too-big": {byte(1), append(frames(syncReq), 0, 0, 1, 0)},
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReadFrame")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, vals := range seeds {
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		fmt.Fprintf(&b, "byte('\\x%02x')\n", vals[0].(byte))
		fmt.Fprintf(&b, "[]byte(%q)\n", vals[1].([]byte))
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
