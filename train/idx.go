package train

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// Sentinel errors for malformed data files. They never appear alone: the
// readers wrap them in a message of the form "train: <path>: <problem>: ..."
// that names the file and the details, so callers test with errors.Is and
// show the message to people.
var (
	// ErrBadMagic reports an IDX file whose magic number is not the one
	// expected (0x00000803 for images, 0x00000801 for labels).
	ErrBadMagic = errors.New("bad magic number")
	// ErrBadDims reports an IDX file with the wrong number of dimensions.
	ErrBadDims = errors.New("wrong dimension count")
	// ErrBadHeader reports an IDX header with a zero dimension.
	ErrBadHeader = errors.New("bad header")
	// ErrTooLarge reports an IDX header declaring more data than the
	// readers accept: 2 GiB of payload.
	ErrTooLarge = errors.New("declared size too large")
	// ErrTruncated reports a file that ends before the data its header
	// declares.
	ErrTruncated = errors.New("truncated")
	// ErrTrailingData reports bytes after the data a header declares.
	ErrTrailingData = errors.New("trailing data")
	// ErrLabelRange reports a label outside [0, classes).
	ErrLabelRange = errors.New("label out of range")
	// ErrCountMismatch reports an images file and a labels file that hold
	// different numbers of examples.
	ErrCountMismatch = errors.New("image and label counts differ")
)

const (
	idxMagicImages = 0x00000803 // unsigned bytes, 3 dimensions
	idxMagicLabels = 0x00000801 // unsigned bytes, 1 dimension

	// maxIDXBytes bounds the payload an IDX header may declare, checked
	// before anything is allocated from it.
	maxIDXBytes = 1 << 31

	// maxUpfront bounds the elements allocated for a gzip payload before
	// its data has arrived: 64 Mi, enough for MNIST's 47 Mi pixels in one
	// allocation.
	maxUpfront = 64 << 20

	// maxDeflateRatio bounds how many bytes a gzip file can decompress to
	// per byte of its own size (deflate's limit is about 1032:1).
	maxDeflateRatio = 1032

	// payloadChunk is the size of the chunks a payload is read in.
	payloadChunk = 256 << 10
)

// pixelScale maps a byte to its [0, 1] float32 value, v/255.
var pixelScale = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(i) / 255
	}
	return t
}()

// ReadIDXImages reads an IDX file of unsigned-byte images (magic
// 0x00000803, dimensions n x height x width), gzip-compressed or not (told
// by the gzip magic bytes, not the file name). It returns the n*height*width
// pixels row-major, each scaled to [0, 1] as v/255.
func ReadIDXImages(path string) (x []float32, n, height, width int, err error) {
	f, err := openData(path)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	defer f.Close()
	dims, want, err := f.readIDXHeader(idxMagicImages, "image")
	if err != nil {
		return nil, 0, 0, 0, err
	}
	x = make([]float32, 0, f.initialCap(want))
	err = f.streamPayload(want, "image", func(p []byte) {
		off := len(x)
		x = extend(x, len(p), want)
		dst := x[off : off+len(p)]
		for i, b := range p {
			dst[i] = pixelScale[b]
		}
	})
	if err != nil {
		return nil, 0, 0, 0, err
	}
	return x, int(dims[0]), int(dims[1]), int(dims[2]), nil
}

// ReadIDXLabels reads an IDX file of unsigned-byte labels (magic
// 0x00000801, one dimension), gzip-compressed or not, and checks that every
// label lies in [0, classes).
func ReadIDXLabels(path string, classes int) ([]uint8, error) {
	if classes < 2 || classes > 256 {
		return nil, fmt.Errorf("train: %s: %d classes, want 2..256", path, classes)
	}
	f, err := openData(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	_, want, err := f.readIDXHeader(idxMagicLabels, "label")
	if err != nil {
		return nil, err
	}
	y := make([]uint8, 0, f.initialCap(want))
	err = f.streamPayload(want, "label", func(p []byte) {
		off := len(y)
		y = extend(y, len(p), want)
		copy(y[off:], p)
	})
	if err != nil {
		return nil, err
	}
	for i, v := range y {
		if int(v) >= classes {
			return nil, fmt.Errorf("train: %s: %w: label %d at index %d, want < %d", path, ErrLabelRange, v, i, classes)
		}
	}
	return y, nil
}

// LoadIDX reads an IDX images file and its labels file into a Dataset with
// one channel, checking that both hold the same number of examples.
func LoadIDX(name, imagesPath, labelsPath string, classes int) (*Dataset, error) {
	x, n, h, w, err := ReadIDXImages(imagesPath)
	if err != nil {
		return nil, err
	}
	y, err := ReadIDXLabels(labelsPath, classes)
	if err != nil {
		return nil, err
	}
	if len(y) != n {
		return nil, fmt.Errorf("train: %s, %s: %w: %d images but %d labels", imagesPath, labelsPath, ErrCountMismatch, n, len(y))
	}
	d := &Dataset{
		Name: name, X: x, Y: y, N: n, Dim: h * w,
		Height: h, Width: w, Channels: 1, Classes: classes,
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return d, nil
}

// dataFile is an open data file read through a buffer, and through a gzip
// decompressor when the file starts with the gzip magic.
type dataFile struct {
	path string
	f    *os.File
	br   *bufio.Reader
	zr   *gzip.Reader // nil for an uncompressed file
	// size is the file's size on disk.
	size int64
	// read counts the (decompressed) bytes read so far.
	read int64
}

// errNotGzip reports bytes after a gzip member that do not start another.
var errNotGzip = errors.New("bytes after the gzip stream that are not gzip data")

// openData opens path, detecting gzip compression by its magic bytes.
func openData(path string) (*dataFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("train: %w", err)
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("train: %s: is a directory, want a data file", path)
	}
	d := &dataFile{path: path, f: f, br: bufio.NewReaderSize(f, 1<<16), size: st.Size()}
	if d.gzipNext() {
		if d.zr, err = gzip.NewReader(d.br); err != nil {
			f.Close()
			return nil, fmt.Errorf("train: %s: %w", path, err)
		}
		d.zr.Multistream(false)
	}
	return d, nil
}

// gzipNext tells whether the unread part of the file starts with the gzip
// magic bytes.
func (d *dataFile) gzipNext() bool {
	magic, _ := d.br.Peek(2)
	return len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b
}

// Close closes the underlying file.
func (d *dataFile) Close() error { return d.f.Close() }

// Read reads the file's contents, decompressed if it is gzip. Like gzip's
// own reader it reads concatenated gzip members as one stream, but it
// reports bytes after a member that are not gzip data as errNotGzip rather
// than as a bad gzip header.
func (d *dataFile) Read(p []byte) (int, error) {
	if d.zr == nil {
		n, err := d.br.Read(p)
		d.read += int64(n)
		return n, err
	}
	for {
		n, err := d.zr.Read(p)
		d.read += int64(n)
		if err != io.EOF {
			return n, err
		}
		// End of a member: the file ends, or another member follows.
		if _, perr := d.br.Peek(1); perr == io.EOF {
			return n, io.EOF
		}
		if !d.gzipNext() {
			return n, errNotGzip
		}
		if err := d.zr.Reset(d.br); err != nil {
			return n, err
		}
		d.zr.Multistream(false)
		if n > 0 {
			return n, nil
		}
	}
}

// initialCap returns how many elements to allocate up front for a payload
// whose header declares want. An uncompressed file's size has been checked
// against want by then, so that is exact. A gzip file's decompressed size is
// unknown until it is read, so a header that lies could ask for gigabytes:
// the allocation is bounded by maxUpfront and by what the file could hold
// (maxDeflateRatio times its size), and extend grows it as data arrives.
func (d *dataFile) initialCap(want int64) int64 {
	if d.zr == nil {
		return want
	}
	return min(want, maxUpfront, d.size*maxDeflateRatio)
}

// extend lengthens s by n elements, growing its capacity, if it must, to
// twice its current one, but never past want elements.
func extend[T any](s []T, n int, want int64) []T {
	need := len(s) + n
	if need <= cap(s) {
		return s[:need]
	}
	grown := make([]T, need, min(want, max(int64(2*cap(s)), int64(need))))
	copy(grown, s)
	return grown
}

// readHeader fills p with the next header bytes, reporting a short read as
// ErrTruncated with the header bytes expected so far and those present.
func (d *dataFile) readHeader(p []byte) error {
	n, err := io.ReadFull(d, p)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("train: %s: %w header: expected %d bytes, got %d", d.path, ErrTruncated, d.read-int64(n)+int64(len(p)), d.read)
	default:
		return fmt.Errorf("train: %s: reading header: %w", d.path, err)
	}
}

// readIDXHeader reads an unsigned-byte IDX header and checks its magic
// number. It returns the header's dimensions, each non-zero, and the
// payload size they declare, at most maxIDXBytes and, for an uncompressed
// file, exactly what the rest of the file holds.
func (d *dataFile) readIDXHeader(want uint32, what string) (dims []uint64, size int64, err error) {
	kind := what + "s"
	var m [4]byte
	if err := d.readHeader(m[:]); err != nil {
		return nil, 0, err
	}
	magic := binary.BigEndian.Uint32(m[:])
	if m[0] != 0 || m[1] != 0 || m[2] != 0x08 {
		return nil, 0, fmt.Errorf("train: %s: %w 0x%08x, want 0x%08x (IDX unsigned-byte %s)", d.path, ErrBadMagic, magic, want, kind)
	}
	ndims := int(want & 0xff)
	if int(m[3]) != ndims {
		return nil, 0, fmt.Errorf("train: %s: %w: %d dimensions (magic 0x%08x), want %d (0x%08x, IDX %s)", d.path, ErrBadDims, m[3], magic, ndims, want, kind)
	}
	raw := make([]byte, 4*ndims)
	if err := d.readHeader(raw); err != nil {
		return nil, 0, err
	}
	dims = make([]uint64, ndims)
	for i := range dims {
		dims[i] = uint64(binary.BigEndian.Uint32(raw[4*i:]))
	}
	for i, v := range dims {
		if v == 0 {
			return nil, 0, fmt.Errorf("train: %s: %w: dimension %d of %s is 0", d.path, ErrBadHeader, i, formatDims(dims))
		}
	}
	// Each dimension is below 1<<32, so checking the bound after every
	// product keeps the next product below 1<<64.
	total := uint64(1)
	for _, v := range dims {
		total *= v
		if total > maxIDXBytes || total > math.MaxInt {
			return nil, 0, fmt.Errorf("train: %s: %w: header declares %s bytes of %s data, more than the %d-byte limit", d.path, ErrTooLarge, formatDims(dims), what, uint64(maxIDXBytes))
		}
	}
	size = int64(total)
	if d.zr == nil {
		// The file's size is known: check it before anything is
		// allocated from the header.
		switch got := d.size - d.read; {
		case got < size:
			return nil, 0, fmt.Errorf("train: %s: %w %s data: expected %d bytes after the %d-byte header, got %d", d.path, ErrTruncated, what, size, d.read, got)
		case got > size:
			return nil, 0, fmt.Errorf("train: %s: %w: %d bytes after the %d bytes of %s data the header declares", d.path, ErrTrailingData, got-size, size, what)
		}
	}
	return dims, size, nil
}

// formatDims renders a header's dimensions as "n x rows x cols".
func formatDims(dims []uint64) string {
	s := make([]string, len(dims))
	for i, v := range dims {
		s[i] = strconv.FormatUint(v, 10)
	}
	return strings.Join(s, " x ")
}

// streamPayload reads the want bytes of payload that follow the header,
// handing them to consume in order and in chunks, then checks that nothing
// follows them.
func (d *dataFile) streamPayload(want int64, what string, consume func(p []byte)) error {
	header := d.read
	buf := make([]byte, min(want, payloadChunk))
	for got := int64(0); got < want; {
		n, err := io.ReadFull(d, buf[:min(int64(len(buf)), want-got)])
		got += int64(n)
		consume(buf[:n])
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errNotGzip):
			return fmt.Errorf("train: %s: %w %s data: expected %d bytes after the %d-byte header, got %d", d.path, ErrTruncated, what, want, header, got)
		case err != nil:
			return fmt.Errorf("train: %s: reading %s data: %w", d.path, what, err)
		}
	}
	return d.checkEnd(want, what)
}

// checkEnd reports trailing data after the payload. Reading to the end also
// makes the gzip reader verify its checksum.
func (d *dataFile) checkEnd(want int64, what string) error {
	const limit = 1 << 20
	n, err := io.Copy(io.Discard, io.LimitReader(d, limit))
	switch {
	case errors.Is(err, errNotGzip):
		return fmt.Errorf("train: %s: %w: %w", d.path, ErrTrailingData, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("train: %s: %w gzip stream after the %s data: %w", d.path, ErrTruncated, what, err)
	case err != nil:
		return fmt.Errorf("train: %s: reading after the %s data: %w", d.path, what, err)
	case n >= limit:
		return fmt.Errorf("train: %s: %w: at least %d bytes after the %d bytes of %s data the header declares", d.path, ErrTrailingData, n, want, what)
	case n > 0:
		return fmt.Errorf("train: %s: %w: %d bytes after the %d bytes of %s data the header declares", d.path, ErrTrailingData, n, want, what)
	}
	return nil
}
