package fedavg

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	peer := []byte("some-peer")
	ok := []float32{0.5, -1, 0}
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, tc := range []struct {
		name string
		u    Update
		max  int64
		want error
	}{
		{"ok", Update{peer, ok, 10}, 100, nil},
		{"at cap", Update{peer, ok, 100}, 100, nil},
		{"no cap", Update{peer, ok, math.MaxInt64}, 0, nil},
		{"negative cap is no cap", Update{peer, ok, 1e12}, -1, nil},
		{"short", Update{peer, ok[:2], 10}, 100, ErrDimension},
		{"long", Update{peer, append(ok, 1), 10}, 100, ErrDimension},
		{"nil delta", Update{peer, nil, 10}, 100, ErrDimension},
		{"NaN", Update{peer, []float32{0, nan, 0}, 10}, 100, ErrNonFinite},
		{"+Inf", Update{peer, []float32{0, 0, inf}, 10}, 100, ErrNonFinite},
		{"-Inf", Update{peer, []float32{-inf, 0, 0}, 10}, 100, ErrNonFinite},
		{"zero examples", Update{peer, ok, 0}, 100, ErrNoExamples},
		{"negative examples", Update{peer, ok, -5}, 100, ErrNoExamples},
		{"above cap", Update{peer, ok, 101}, 100, ErrTooManyExamples},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.u, 3, tc.max)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "fedavg: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestValidateTooManyExamplesIsTyped(t *testing.T) {
	u := Update{Peer: []byte{1, 2, 3}, Delta: []float32{1}, Examples: 5000}
	err := Validate(u, 1, 4000)
	var ee *ExamplesError
	if !errors.As(err, &ee) {
		t.Fatalf("Validate = %v, want an *ExamplesError", err)
	}
	if ee.Got != 5000 || ee.Max != 4000 || !bytes.Equal(ee.Peer, u.Peer) {
		t.Errorf("ExamplesError = %+v", ee)
	}
	if !errors.Is(err, ErrTooManyExamples) {
		t.Error("not errors.Is(ErrTooManyExamples)")
	}
	if u.Examples != 5000 {
		t.Error("Validate changed the update")
	}
	if want := "fedavg: peer 010203: 5000 examples exceed the cap of 4000"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
}

func TestUpdateLogValue(t *testing.T) {
	peer := []byte("\x00\x24\x08\x01\x12\x20 a long libp2p-like peer id")
	u := Update{Peer: peer, Delta: []float32{0.123456, 7.654321, 1e-3}, Examples: 42}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("update", "update", u)
	out := buf.String()
	for _, want := range []string{
		`"dim":3`, `"examples":42`, `"delta":"` + deltaDigest(u.Delta).short() + `"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log %s lacks %s", out, want)
		}
	}
	// libp2p peer IDs share their leading bytes: the log shows the end.
	if want := `"peer":"..656572206964"`; !strings.Contains(out, want) {
		t.Errorf("log %s lacks %s", out, want)
	}
	for _, secret := range []string{"0.123456", "7.654321", "0.001", "1e-3", "1e-03"} {
		if strings.Contains(out, secret) {
			t.Errorf("log %s shows a weight (%s)", out, secret)
		}
	}
}

func TestDeltaDigestMatchesEncoding(t *testing.T) {
	r := newRand(3)
	for _, dim := range []int{0, 1, 2047, 2048, 2049, 10000} {
		xs := randVector(r, dim)
		g := NewGlobal(xs)
		b := g.Encode()
		values := b[len(b)-4*dim:]
		if deltaDigest(xs) != DigestBytes(values) {
			t.Errorf("dim %d: deltaDigest differs from the SHA-256 of the little-endian values", dim)
		}
	}
}
