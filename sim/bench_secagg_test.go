package sim

import (
	"context"
	"testing"

	"github.com/globalbrain/globalbrain/manifest"
)

// The round cost measures both modes: every member applies every round, a
// secagg member publishes more than a plain one (share, masked input of
// 8*(dim+1) bytes, reveal) and fetches at least the others' masked inputs.
func TestMeasureRound(t *testing.T) {
	const members, rounds = 5, 3
	plain, err := MeasureRound(context.Background(), "logreg", members, rounds, manifest.PrivacyNone)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := MeasureRound(context.Background(), "logreg", members, rounds, manifest.PrivacySecAgg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plain %+v", plain)
	t.Logf("secagg %+v", sa)
	dim := plain.UpdateBytes / 4
	if plain.Participants != members || sa.Participants != members {
		t.Fatalf("participants: plain %v, secagg %v, want %d", plain.Participants, sa.Participants, members)
	}
	if plain.PublishedBytes < float64(plain.UpdateBytes) || plain.FetchedBytes < float64((members-1)*plain.UpdateBytes) {
		t.Fatalf("plain: published %v fetched %v per member, want >= %d and >= %d", plain.PublishedBytes, plain.FetchedBytes, plain.UpdateBytes, (members-1)*plain.UpdateBytes)
	}
	if in := float64(8 * (dim + 1)); sa.PublishedBytes < in || sa.FetchedBytes < float64(members-1)*in {
		t.Fatalf("secagg: published %v fetched %v per member, want >= %v and >= %v", sa.PublishedBytes, sa.FetchedBytes, in, float64(members-1)*in)
	}
	if plain.Seconds <= 0 || sa.Seconds <= 0 {
		t.Fatalf("seconds: plain %v, secagg %v", plain.Seconds, sa.Seconds)
	}
}

// BenchmarkSecAggRound is one secure-aggregation round of 10 members with
// the 2NN and a fixed update (go test -bench SecAggRound -cpuprofile to
// see where the round goes); BenchmarkPlainRound the same round plain.
func BenchmarkSecAggRound(b *testing.B) { benchRound(b, manifest.PrivacySecAgg) }

func BenchmarkPlainRound(b *testing.B) { benchRound(b, manifest.PrivacyNone) }

func benchRound(b *testing.B, mode string) {
	rounds := max(b.N, 1) + 1
	rc, err := MeasureRound(context.Background(), "2nn", 10, rounds, mode)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rc.Seconds, "s/round")
	b.ReportMetric(rc.FetchedBytes/1e6, "MB-fetched/member/round")
	b.ReportMetric(rc.PublishedBytes/1e6, "MB-published/member/round")
}
