package p2p

// Wire formats of the node's own stream protocols.
//
// Frame. Every length-delimited message is a frame: a 4-byte big-endian
// unsigned length n, then n bytes of payload. The receiver reads the 4-byte
// header alone and compares n with its limit before it allocates anything, so a
// peer that announces 0xFFFFFFFF bytes costs the receiver 4 bytes of reading
// and a reset stream, never a 4 GiB buffer.
//
// Blob protocol (BlobService), one request per stream:
//
//	request:  digest [32]byte | offset uint64 (big-endian)
//	response: status byte
//	          status == 0: total size uint64 (big-endian), then the raw bytes
//	                       of the blob from offset to the end, in chunks
//	          status != 0: a frame holding a short reason (at most 256 bytes)
//
// The client half-closes after its request. The server refuses an offset beyond
// the total size (status 2) and a digest it may not serve (status 1); the client
// refuses a total size above its MaxBlob, verifies SHA-256 over all bytes, and
// after a broken stream sends a new request whose offset is the number of bytes
// already received.
//
// Raft protocol (RaftService): one long-lived stream per sender and receiver,
// written by the sender only; each encoded Raft message is one frame of at
// most MaxRaftFrame bytes. The receiver reads and drops, without allocating
// them, the frames of a peer beyond its RaftPerSecond.
//
// Sync protocol (SyncService), one request per stream:
//
//	request:  a frame holding round uint64 (big-endian); the frame may be at
//	          most 64 bytes
//	response: count uint32 (big-endian), then count frames, one gossip
//	          message each
//
// A sync response holds at most 4096 messages and 16 x MaxFrame bytes of
// payload; each message is at most MaxFrame bytes.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// frameHeaderLen is the size of a frame's length prefix.
const frameHeaderLen = 4

// ErrFrameTooLarge reports a frame, blob or response whose announced length is
// above the receiver's limit. The receiver detects it before allocating.
var ErrFrameTooLarge = errors.New("p2p: announced length exceeds limit")

// frameTooLarge wraps ErrFrameTooLarge with the sizes involved.
func frameTooLarge(n uint64, max int64) error {
	return fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, n, max)
}

// readFrameHeader reads a frame's 4-byte length and checks it against max
// without allocating.
func readFrameHeader(r io.Reader, max int) (int, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if max < 0 || uint64(n) > uint64(max) {
		return 0, frameTooLarge(uint64(n), int64(max))
	}
	return int(n), nil
}

// readFrame reads one frame of at most max bytes. The length is checked
// before the payload buffer is allocated.
func readFrame(r io.Reader, max int) ([]byte, error) {
	n, err := readFrameHeader(r, max)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// appendFrame appends p as one frame to dst.
func appendFrame(dst, p []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(p)))
	return append(dst, p...)
}

// writeFrame writes p as one frame with a single Write call.
func writeFrame(w io.Writer, p []byte) error {
	if uint64(len(p)) > 0xFFFFFFFF {
		return frameTooLarge(uint64(len(p)), 0xFFFFFFFF)
	}
	_, err := w.Write(appendFrame(make([]byte, 0, frameHeaderLen+len(p)), p))
	return err
}

// isTimeout reports whether err comes from a deadline that expired.
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// transferTime is how long n bytes may take at rate bytes per second.
func transferTime(n, rate int64) time.Duration {
	if rate <= 0 || n <= 0 {
		return 0
	}
	sec := n / rate
	rem := n % rate
	if sec > int64(time.Duration(1<<62)/time.Second) {
		return time.Duration(1 << 62)
	}
	return time.Duration(sec)*time.Second + time.Duration(rem)*time.Second/time.Duration(rate)
}

// deadlineReader reads from a stream while keeping its read deadline at the
// earlier of idle after the last call and a fixed overall deadline: a peer
// must keep making progress and must finish in time.
type deadlineReader struct {
	s     network.Stream
	idle  time.Duration
	total time.Time
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	dl := time.Now().Add(d.idle)
	if !d.total.IsZero() && d.total.Before(dl) {
		dl = d.total
	}
	_ = d.s.SetReadDeadline(dl)
	return d.s.Read(p)
}

// deadlineWriter is the write-side twin of deadlineReader.
type deadlineWriter struct {
	s     network.Stream
	idle  time.Duration
	total time.Time
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	dl := time.Now().Add(d.idle)
	if !d.total.IsZero() && d.total.Before(dl) {
		dl = d.total
	}
	_ = d.s.SetWriteDeadline(dl)
	return d.s.Write(p)
}
