package p2p

import (
	"context"
	"testing"
)

const (
	benchSize  = 100_000_000 // 100 MB
	benchPeers = 9
)

// BenchmarkBlobFetch100MB_9Peers: one server host holds a 100 MB blob and 9
// client hosts fetch it at once over the blob protocol (TCP loopback). MB/s is
// the aggregate over the 9 transfers.
func BenchmarkBlobFetch100MB_9Peers(b *testing.B) {
	ctx := context.Background()
	bb, err := newBlobBench(ctx, benchData(benchSize), benchPeers)
	if err != nil {
		b.Fatal(err)
	}
	defer bb.close()
	b.SetBytes(benchSize * benchPeers)
	for b.Loop() {
		if err := bb.run(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawTCP100MB_9Peers is the same transfer over plain net.Conn on
// 127.0.0.1, with the same framing and SHA-256 check, for the ratio.
func BenchmarkRawTCP100MB_9Peers(b *testing.B) {
	ctx := context.Background()
	tb, err := newTCPBench(benchData(benchSize), benchPeers)
	if err != nil {
		b.Fatal(err)
	}
	defer tb.close()
	b.SetBytes(benchSize * benchPeers)
	for b.Loop() {
		if err := tb.run(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMeasureBlobVsTCP(t *testing.T) {
	blob, tcp, err := MeasureBlobVsTCP(context.Background(), 4<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	if blob <= 0 || tcp <= 0 {
		t.Fatalf("blob %.1f MB/s, tcp %.1f MB/s", blob, tcp)
	}
	t.Logf("4 MiB to 3 peers: blob %.0f MB/s, raw TCP %.0f MB/s", blob, tcp)
	if _, _, err := MeasureBlobVsTCP(context.Background(), 1, 0); err == nil {
		t.Fatal("zero peers accepted")
	}
}
