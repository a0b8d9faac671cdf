package train

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// idxBytes builds an IDX file: the magic, the dimensions and the payload.
func idxBytes(magic uint32, dims []uint32, payload []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, magic)
	binary.Write(&b, binary.BigEndian, dims)
	b.Write(payload)
	return b.Bytes()
}

// gzipBytes compresses b as one gzip member.
func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return z.Bytes()
}

// writeTestFile writes b to name in a fresh temporary directory.
func writeTestFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// byteRamp returns n bytes 0, 1, 2, ...
func byteRamp(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// requireDataErr fails unless err wraps want (when non-nil) and its message
// names path and contains every one of wants.
func requireDataErr(t *testing.T, err error, want error, path string, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", want)
	}
	if want != nil && !errors.Is(err, want) {
		t.Errorf("error %q does not wrap %q", err, want)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "train: ") {
		t.Errorf("error %q lacks the train: prefix", msg)
	}
	if path != "" && !strings.Contains(msg, path) {
		t.Errorf("error %q does not name the file %s", msg, path)
	}
	for _, w := range wants {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not mention %q", msg, w)
		}
	}
}

func TestReadIDXImagesPlainAndGzip(t *testing.T) {
	pixels := []byte{0, 255, 128, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	raw := idxBytes(0x803, []uint32{3, 2, 2}, pixels)
	for _, tc := range []struct {
		name string
		file []byte
	}{
		{"plain", raw},
		{"gzip", gzipBytes(t, raw)},
		// Detection goes by content, not by name.
		{"plain.gz", raw},
		{"gzip-without-suffix", gzipBytes(t, raw)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, n, h, w, err := ReadIDXImages(writeTestFile(t, tc.name, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if n != 3 || h != 2 || w != 2 || len(x) != 12 {
				t.Fatalf("got n=%d %dx%d, %d pixels; want 3 2x2, 12", n, h, w, len(x))
			}
			for i, p := range pixels {
				if want := float32(p) / 255; x[i] != want {
					t.Errorf("pixel %d = %v, want %v", i, x[i], want)
				}
			}
			if x[0] != 0 || x[1] != 1 {
				t.Errorf("pixels 0 and 255 map to %v and %v, want 0 and 1", x[0], x[1])
			}
		})
	}
}

func TestReadIDXLabelsPlainAndGzip(t *testing.T) {
	raw := idxBytes(0x801, []uint32{5}, []byte{5, 0, 4, 1, 9})
	for name, file := range map[string][]byte{"plain": raw, "gzip": gzipBytes(t, raw)} {
		t.Run(name, func(t *testing.T) {
			y, err := ReadIDXLabels(writeTestFile(t, "labels", file), 10)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(y, []byte{5, 0, 4, 1, 9}) {
				t.Errorf("labels %v", y)
			}
		})
	}
}

// idxErrorCase is a malformed IDX file and the error reading it must give.
type idxErrorCase struct {
	name  string
	file  []byte // uncompressed contents; also tried gzip-compressed
	only  string // "plain" or "gzip" to try one variant only
	err   error
	wants []string
}

// runIDXErrorCases reads every case, plain and gzip-compressed, with read.
func runIDXErrorCases(t *testing.T, cases []idxErrorCase, read func(path string) error) {
	for _, tc := range cases {
		for _, variant := range []string{"plain", "gzip"} {
			if tc.only != "" && tc.only != variant {
				continue
			}
			t.Run(tc.name+"/"+variant, func(t *testing.T) {
				file := tc.file
				if variant == "gzip" {
					file = gzipBytes(t, file)
				}
				path := writeTestFile(t, "data-"+variant, file)
				requireDataErr(t, read(path), tc.err, path, tc.wants...)
			})
		}
	}
}

func TestReadIDXImagesErrors(t *testing.T) {
	good := idxBytes(0x803, []uint32{3, 2, 2}, byteRamp(12))
	cases := []idxErrorCase{
		{name: "empty", file: nil, only: "plain", err: ErrTruncated,
			wants: []string{"truncated header", "expected 4 bytes, got 0"}},
		{name: "short-magic", file: []byte{0, 0, 8}, err: ErrTruncated,
			wants: []string{"truncated header", "expected 4 bytes, got 3"}},
		{name: "short-dims", file: good[:10], err: ErrTruncated,
			wants: []string{"truncated header", "expected 16 bytes, got 10"}},
		{name: "bad-magic", file: idxBytes(0x12345678, []uint32{3, 2, 2}, byteRamp(12)), err: ErrBadMagic,
			wants: []string{"bad magic number 0x12345678", "want 0x00000803"}},
		{name: "little-endian-magic", file: idxBytes(0x03080000, []uint32{3, 2, 2}, byteRamp(12)), err: ErrBadMagic,
			wants: []string{"0x03080000", "want 0x00000803"}},
		{name: "float-type", file: idxBytes(0x0d03, []uint32{3, 2, 2}, byteRamp(48)), err: ErrBadMagic,
			wants: []string{"0x00000d03", "unsigned-byte images"}},
		{name: "labels-file", file: idxBytes(0x801, []uint32{12}, byteRamp(12)), err: ErrBadDims,
			wants: []string{"wrong dimension count", "1 dimensions", "want 3"}},
		{name: "four-dims", file: idxBytes(0x804, []uint32{3, 2, 2, 1}, byteRamp(12)), err: ErrBadDims,
			wants: []string{"4 dimensions", "want 3"}},
		{name: "zero-images", file: idxBytes(0x803, []uint32{0, 28, 28}, nil), err: ErrBadHeader,
			wants: []string{"dimension 0 of 0 x 28 x 28 is 0"}},
		{name: "zero-cols", file: idxBytes(0x803, []uint32{5, 28, 0}, nil), err: ErrBadHeader,
			wants: []string{"dimension 2"}},
		{name: "absurd-size", file: idxBytes(0x803, []uint32{0xffffffff, 0xffffffff, 0xffffffff}, byteRamp(12)), err: ErrTooLarge,
			wants: []string{"4294967295 x 4294967295 x 4294967295", "2147483648-byte limit"}},
		{name: "just-over-limit", file: idxBytes(0x803, []uint32{1<<31 + 1, 1, 1}, byteRamp(12)), err: ErrTooLarge,
			wants: []string{"2147483649 x 1 x 1"}},
		{name: "truncated-payload", file: good[:16+7], err: ErrTruncated,
			wants: []string{"truncated image data", "expected 12 bytes after the 16-byte header, got 7"}},
		{name: "no-payload", file: good[:16], err: ErrTruncated,
			wants: []string{"expected 12 bytes", "got 0"}},
		{name: "huge-header-tiny-file", file: idxBytes(0x803, []uint32{2000, 1000, 1000}, byteRamp(100)), err: ErrTruncated,
			wants: []string{"expected 2000000000 bytes", "got 100"}},
		{name: "trailing-garbage", file: append(bytes.Clone(good), 1, 2, 3), err: ErrTrailingData,
			wants: []string{"trailing data", "3 bytes after the 12 bytes of image data"}},
	}
	runIDXErrorCases(t, cases, func(path string) error {
		_, _, _, _, err := ReadIDXImages(path)
		return err
	})
}

func TestReadIDXLabelsErrors(t *testing.T) {
	good := idxBytes(0x801, []uint32{4}, []byte{1, 2, 3, 4})
	cases := []idxErrorCase{
		{name: "short-header", file: good[:6], err: ErrTruncated,
			wants: []string{"truncated header", "expected 8 bytes, got 6"}},
		{name: "bad-magic", file: idxBytes(0x0901, []uint32{4}, byteRamp(4)), err: ErrBadMagic,
			wants: []string{"bad magic number 0x00000901", "want 0x00000801", "labels"}},
		{name: "images-file", file: idxBytes(0x803, []uint32{1, 2, 2}, byteRamp(4)), err: ErrBadDims,
			wants: []string{"3 dimensions", "want 1"}},
		{name: "zero-labels", file: idxBytes(0x801, []uint32{0}, nil), err: ErrBadHeader},
		{name: "absurd-size", file: idxBytes(0x801, []uint32{0xffffffff}, byteRamp(4)), err: ErrTooLarge,
			wants: []string{"4294967295 bytes of label data"}},
		{name: "truncated", file: good[:10], err: ErrTruncated,
			wants: []string{"truncated label data", "expected 4 bytes after the 8-byte header, got 2"}},
		{name: "trailing", file: append(bytes.Clone(good), 0), err: ErrTrailingData,
			wants: []string{"1 bytes after the 4 bytes of label data"}},
		{name: "label-out-of-range", file: idxBytes(0x801, []uint32{4}, []byte{1, 9, 10, 3}), err: ErrLabelRange,
			wants: []string{"label out of range", "label 10 at index 2", "want < 10"}},
		{name: "label-255", file: idxBytes(0x801, []uint32{2}, []byte{255, 0}), err: ErrLabelRange,
			wants: []string{"label 255 at index 0"}},
	}
	runIDXErrorCases(t, cases, func(path string) error {
		_, err := ReadIDXLabels(path, 10)
		return err
	})
}

// TestReadIDXGzipErrors covers damage to the gzip layer itself.
func TestReadIDXGzipErrors(t *testing.T) {
	raw := idxBytes(0x803, []uint32{30, 10, 10}, byteRamp(3000))
	z := gzipBytes(t, raw)

	badCRC := bytes.Clone(z)
	badCRC[len(badCRC)-8] ^= 0xff // the CRC-32 in the trailer

	for _, tc := range []struct {
		name  string
		file  []byte
		err   error
		wants []string
	}{
		{"cut-stream", z[:len(z)/2], ErrTruncated, []string{"expected 3000 bytes"}},
		{"cut-trailer", z[:len(z)-4], ErrTruncated, []string{"truncated gzip stream after the image data"}},
		{"bad-checksum", badCRC, gzip.ErrChecksum, []string{"invalid checksum"}},
		{"garbage-after-stream", append(bytes.Clone(z), "garbage"...), ErrTrailingData, []string{"not gzip data"}},
		{"one-byte-after-stream", append(bytes.Clone(z), 0), ErrTrailingData, []string{"not gzip data"}},
		{"garbage-mid-payload", append(bytes.Clone(gzipBytes(t, raw[:1000])), "garbage"...), ErrTruncated, []string{"expected 3000 bytes after the 16-byte header, got 984"}},
		{"bad-gzip-header", []byte{0x1f, 0x8b, 0, 0}, nil, []string{"gzip"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTestFile(t, "images.gz", tc.file)
			_, _, _, _, err := ReadIDXImages(path)
			requireDataErr(t, err, tc.err, path, tc.wants...)
		})
	}
}

// TestReadIDXConcatenatedGzip reads a file of two gzip members, as
// concatenating two .gz files makes.
func TestReadIDXConcatenatedGzip(t *testing.T) {
	raw := idxBytes(0x803, []uint32{2, 3, 3}, byteRamp(18))
	file := append(gzipBytes(t, raw[:10]), gzipBytes(t, raw[10:])...)
	x, n, _, _, err := ReadIDXImages(writeTestFile(t, "two-members.gz", file))
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || x[17] != float32(17)/255 {
		t.Errorf("n=%d x[17]=%v", n, x[17])
	}
}

// TestReadIDXHugeHeaderBoundedAllocation checks that a small file whose
// header declares nearly the 2 GiB limit fails without allocating anything
// near what the header declares.
func TestReadIDXHugeHeaderBoundedAllocation(t *testing.T) {
	raw := idxBytes(0x803, []uint32{2000, 1000, 1000}, byteRamp(1000))
	for name, file := range map[string][]byte{"plain": raw, "gzip": gzipBytes(t, raw)} {
		t.Run(name, func(t *testing.T) {
			path := writeTestFile(t, "huge", file)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, _, _, err := ReadIDXImages(path)
			runtime.ReadMemStats(&after)
			requireDataErr(t, err, ErrTruncated, path, "expected 2000000000 bytes", "got 1000")
			if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
				t.Errorf("allocated %d bytes reading a %d-byte file", got, len(file))
			}
		})
	}
}

func TestReadIDXMissingAndDirectory(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope-idx3-ubyte")
	_, _, _, _, err := ReadIDXImages(missing)
	requireDataErr(t, err, fs.ErrNotExist, missing)
	_, err = ReadIDXLabels(missing, 10)
	requireDataErr(t, err, fs.ErrNotExist, missing)
	_, _, _, _, err = ReadIDXImages(dir)
	requireDataErr(t, err, nil, dir, "is a directory")
}

func TestReadIDXLabelsBadClasses(t *testing.T) {
	path := writeTestFile(t, "labels", idxBytes(0x801, []uint32{1}, []byte{0}))
	for _, classes := range []int{-1, 0, 1, 257} {
		_, err := ReadIDXLabels(path, classes)
		requireDataErr(t, err, nil, path, "classes, want 2..256")
	}
	if _, err := ReadIDXLabels(path, 256); err != nil {
		t.Errorf("256 classes: %v", err)
	}
}

func TestLoadIDX(t *testing.T) {
	images := writeTestFile(t, "images.gz", gzipBytes(t, idxBytes(0x803, []uint32{3, 2, 3}, byteRamp(18))))
	labels := writeTestFile(t, "labels", idxBytes(0x801, []uint32{3}, []byte{2, 0, 1}))
	d, err := LoadIDX("tiny", images, labels, 3)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "tiny" || d.N != 3 || d.Dim != 6 || d.Height != 2 || d.Width != 3 || d.Channels != 1 || d.Classes != 3 {
		t.Errorf("data set %+v", *d)
	}
	if got, want := d.Row(2)[0], float32(12)/255; got != want {
		t.Errorf("Row(2)[0] = %v, want %v", got, want)
	}
	if !bytes.Equal(d.Y, []byte{2, 0, 1}) {
		t.Errorf("labels %v", d.Y)
	}
}

func TestLoadIDXErrors(t *testing.T) {
	images := writeTestFile(t, "images", idxBytes(0x803, []uint32{3, 2, 2}, byteRamp(12)))
	labels4 := writeTestFile(t, "labels4", idxBytes(0x801, []uint32{4}, []byte{0, 1, 0, 1}))
	_, err := LoadIDX("x", images, labels4, 2)
	requireDataErr(t, err, ErrCountMismatch, images, labels4, "3 images but 4 labels")

	badLabels := writeTestFile(t, "labels-bad", idxBytes(0x801, []uint32{3}, []byte{0, 1, 2}))
	_, err = LoadIDX("x", images, badLabels, 2)
	requireDataErr(t, err, ErrLabelRange, badLabels, "label 2 at index 2")

	// Swapped arguments: each file fails the other's magic check.
	_, err = LoadIDX("x", labels4, images, 2)
	requireDataErr(t, err, ErrBadDims, labels4)
}

// FuzzReadIDX checks that no input makes the IDX readers panic, and that
// whatever they accept is consistent with its header.
func FuzzReadIDX(f *testing.F) {
	f.Add(idxBytes(0x803, []uint32{2, 2, 2}, byteRamp(8)))
	f.Add(idxBytes(0x801, []uint32{3}, []byte{1, 2, 3}))
	f.Add(idxBytes(0x803, []uint32{0xffffffff, 1, 1}, nil))
	f.Add(gzipBytes(f, idxBytes(0x803, []uint32{1, 3, 3}, byteRamp(9))))
	f.Add([]byte{0x1f, 0x8b})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "fuzz")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		x, n, h, w, err := ReadIDXImages(path)
		if err == nil && len(x) != n*h*w {
			t.Errorf("%d pixels for %d x %d x %d", len(x), n, h, w)
		}
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the file", err)
		}
		y, err := ReadIDXLabels(path, 256)
		if err == nil && len(y) == 0 {
			t.Error("no labels and no error")
		}
	})
}

// TestIDXExtend checks the growth rule used past a gzip payload's initial
// allocation: double, but never past what the header declares.
func TestIDXExtend(t *testing.T) {
	s := make([]byte, 0, 4)
	s = extend(s, 3, 100)
	if len(s) != 3 || cap(s) != 4 {
		t.Fatalf("len %d cap %d, want 3 4", len(s), cap(s))
	}
	s[0] = 7
	s = extend(s, 2, 100)
	if len(s) != 5 || cap(s) != 8 || s[0] != 7 {
		t.Fatalf("len %d cap %d s[0] %d, want 5 8 7", len(s), cap(s), s[0])
	}
	s = extend(s, 20, 100)
	if len(s) != 25 || cap(s) != 25 {
		t.Fatalf("len %d cap %d, want 25 25", len(s), cap(s))
	}
	s = extend(s, 70, 100)
	if len(s) != 95 || cap(s) != 95 {
		t.Fatalf("len %d cap %d, want 95 95", len(s), cap(s))
	}
	s = extend(s, 1, 100)
	if len(s) != 96 || cap(s) != 100 {
		t.Fatalf("len %d cap %d, want 96 100", len(s), cap(s))
	}
}
