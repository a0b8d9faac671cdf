package fedavg

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"runtime"
	"testing"
)

func TestEncodeLayout(t *testing.T) {
	g := &Global{
		Weights: []float32{1, -2},
		State:   State{Strategy: "ab", Step: 3, Vectors: [][]float32{{0.5, 0}}},
	}
	want := "47424731" + // "GBG1"
		"0100" + "0200" + "6162" + // version 1, name "ab"
		"0300000000000000" + // step 3
		"0200000000000000" + // dim 2
		"01000000" + // 1 vector
		"0000803f" + "000000c0" + // weights 1, -2
		"0000003f" + "00000000" // vector 0.5, 0
	if got := hex.EncodeToString(g.Encode()); got != want {
		t.Errorf("Encode =\n%s\nwant\n%s", got, want)
	}
	if got := hex.EncodeToString(NewGlobal(nil).Encode()); got != "47424731"+"0100"+"0000"+"0000000000000000"+"0000000000000000"+"00000000" {
		t.Errorf("Encode(empty) = %s", got)
	}
}

func randGlobal(seed uint64, dim, nvec int) *Global {
	r := newRand(seed)
	g := &Global{Weights: randVector(r, dim), State: State{Strategy: "fedadam", Step: r.Uint64()}}
	for range nvec {
		g.State.Vectors = append(g.State.Vectors, randVector(r, dim))
	}
	return g
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, tc := range []struct{ dim, nvec int }{{0, 0}, {1, 0}, {3, 2}, {5000, 1}, {20000, 2}, {0, 16}} {
		g := randGlobal(uint64(tc.dim), tc.dim, tc.nvec)
		b := g.Encode()
		if len(b) != g.encodedLen() {
			t.Errorf("len(Encode) = %d, encodedLen = %d", len(b), g.encodedLen())
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("dim %d nvec %d: Decode: %v", tc.dim, tc.nvec, err)
		}
		if !reflect.DeepEqual(got, g) && !(tc.dim == 0 && len(got.Weights) == 0) {
			t.Errorf("dim %d nvec %d: Decode(Encode(g)) differs from g", tc.dim, tc.nvec)
		}
		if !bytes.Equal(got.Encode(), b) {
			t.Errorf("dim %d nvec %d: re-encoding differs", tc.dim, tc.nvec)
		}
		if got.Digest() != g.Digest() || g.Digest() != DigestBytes(b) {
			t.Errorf("dim %d nvec %d: digests differ", tc.dim, tc.nvec)
		}
		b[len(b)-1] ^= 1 // Decode does not alias its input
		if got.Digest() != g.Digest() {
			t.Errorf("decoded G aliases the encoding")
		}
	}
}

func TestDigest(t *testing.T) {
	g := randGlobal(1, 3*encodeChunk+5, 2)
	if g.Digest() != DigestBytes(g.Encode()) {
		t.Fatal("Digest differs from DigestBytes(Encode)")
	}
	s := g.Digest().String()
	if len(s) != 64 {
		t.Errorf("String() = %q, want 64 hex digits", s)
	}
	c := g.Clone()
	c.State.Vectors[1][7] += 1
	if c.Digest() == g.Digest() {
		t.Error("a change in the strategy state does not change the digest")
	}
	c = g.Clone()
	c.State.Step++
	if c.Digest() == g.Digest() {
		t.Error("a change in the step does not change the digest")
	}
}

func TestClone(t *testing.T) {
	g := randGlobal(2, 10, 2)
	c := g.Clone()
	if !reflect.DeepEqual(c, g) {
		t.Fatal("Clone differs")
	}
	c.Weights[0]++
	c.State.Vectors[0][0]++
	c.State.Vectors = append(c.State.Vectors, nil)
	if g.Weights[0] == c.Weights[0] || g.State.Vectors[0][0] == c.State.Vectors[0][0] || len(g.State.Vectors) != 2 {
		t.Error("Clone shares memory with the original")
	}
	if NewGlobal(nil).Clone().State.Vectors != nil {
		t.Error("Clone of an empty state has vectors")
	}
}

// header builds an encoding header by hand.
func header(name string, step, dim uint64, nvec uint32) []byte {
	g := &Global{State: State{Strategy: name, Step: step}}
	b := g.appendHeader(nil)
	b = b[:len(b)-12]
	b = append(b, byte(dim), byte(dim>>8), byte(dim>>16), byte(dim>>24), byte(dim>>32), byte(dim>>40), byte(dim>>48), byte(dim>>56))
	return append(b, byte(nvec), byte(nvec>>8), byte(nvec>>16), byte(nvec>>24))
}

func TestDecodeErrors(t *testing.T) {
	valid := randGlobal(9, 4, 1).Encode()
	nanWeights := NewGlobal([]float32{1, 2}).Encode()
	copy(nanWeights[len(nanWeights)-4:], []byte{0, 0, 0xc0, 0x7f})
	infState := (&Global{Weights: []float32{1}, State: State{Strategy: "x", Vectors: [][]float32{{1}}}}).Encode()
	copy(infState[len(infState)-4:], []byte{0, 0, 0x80, 0x7f})
	with := func(b []byte, i int, v byte) []byte {
		c := bytes.Clone(b)
		c[i] = v
		return c
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrEncoding},
		{"short", []byte("GBG"), ErrEncoding},
		{"bad magic", with(valid, 0, 'X'), ErrEncoding},
		{"bad version", with(valid, 4, 2), ErrEncoding},
		{"name too long", with(valid, 6, maxNameLen+1), ErrEncoding},
		{"truncated header", valid[:20], ErrEncoding},
		{"truncated values", valid[:len(valid)-1], ErrEncoding},
		{"trailing byte", append(bytes.Clone(valid), 0), ErrEncoding},
		{"dim too small for values", append(header("", 0, 1, 0), make([]byte, 8)...), ErrEncoding},
		{"dim too large for values", append(header("", 0, 3, 0), make([]byte, 8)...), ErrEncoding},
		{"vectors missing", append(header("", 0, 2, 1), make([]byte, 8)...), ErrEncoding},
		{"too many vectors", header("", 0, 0, maxVectors+1), ErrEncoding},
		{"absurd dim", header("", 0, 1<<61, 0), ErrEncoding},
		{"dim overflowing size", header("", 0, math.MaxUint64/4+1, 1), ErrEncoding},
		{"absurd dim just allowed", header("", 0, maxDecodedDim, maxVectors), ErrEncoding},
		{"NaN weight", nanWeights, ErrNonFinite},
		{"Inf state", infState, ErrNonFinite},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Decode(tc.b)
			if !errors.Is(err, tc.want) || g != nil {
				t.Fatalf("Decode = %v, %v; want error %v", g, err, tc.want)
			}
		})
	}
}

func TestDecodeChecksSizesBeforeAllocating(t *testing.T) {
	b := header("", 0, maxDecodedDim, maxVectors) // claims 68 TiB of values
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if _, err := Decode(b); err == nil {
			t.Fatal("Decode accepted an absurd size")
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Errorf("100 rejected decodes allocated %d bytes", got)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(NewGlobal(nil).Encode())
	f.Add(NewGlobal([]float32{1, 2, 3}).Encode())
	f.Add(randGlobal(1, 7, 2).Encode())
	f.Add((&Global{Weights: []float32{-0.0}, State: State{Strategy: "fedavgm", Step: 9, Vectors: [][]float32{{1e-45}}}}).Encode())
	f.Add(header("fedadam", 1, 1<<40, 16))
	f.Add([]byte("GBG1"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := Decode(b)
		if err != nil {
			if g != nil {
				t.Fatal("Decode returned a model and an error")
			}
			return
		}
		if !bytes.Equal(g.Encode(), b) {
			t.Fatalf("Encode(Decode(b)) != b for %x", b)
		}
		if g.Digest() != DigestBytes(b) {
			t.Fatal("Digest differs from DigestBytes")
		}
	})
}
