package modelfile

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/globalbrain/globalbrain/train"
)

// WriteNPZ writes weights, the flat parameter vector of spec's model, to w
// as a NumPy .npz archive (what numpy.savez writes: a zip of one .npy file
// per tensor, stored uncompressed), the tensors named and shaped as Layout
// says, little-endian float32.
func WriteNPZ(w io.Writer, spec train.Spec, weights []float32) error {
	lay, err := checkWeights(spec, weights)
	if err != nil {
		return err
	}
	zw := zip.NewWriter(w)
	vals := make([]float32, 0)
	buf := make([]byte, 0)
	for _, t := range lay {
		f, err := zw.CreateHeader(&zip.FileHeader{Name: t.Name + ".npy", Method: zip.Store})
		if err != nil {
			return fmt.Errorf("modelfile: npz: %w", err)
		}
		vals = append(vals[:0], make([]float32, t.Len)...)
		t.toFile(vals, weights[t.Offset:t.Offset+t.Len])
		buf = append(npyHeader(buf[:0], t.Shape), make([]byte, 4*t.Len)...)
		data := buf[len(buf)-4*t.Len:]
		for i, v := range vals {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
		}
		if _, err := f.Write(buf); err != nil {
			return fmt.Errorf("modelfile: npz: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("modelfile: npz: %w", err)
	}
	return nil
}

// npyHeader appends the header of a .npy file (format version 1.0) of a
// C-ordered little-endian float32 array of shape: the magic, the version,
// the header's length and the header dict, padded with spaces to a
// multiple of 64 bytes and ended by a newline, as NumPy writes it.
func npyHeader(b []byte, shape []int) []byte {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	var h bytes.Buffer
	fmt.Fprintf(&h, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", tuple)
	const prefix = 6 + 2 + 2 // magic, version, header length
	for (prefix+h.Len()+1)%64 != 0 {
		h.WriteByte(' ')
	}
	h.WriteByte('\n')
	b = append(b, "\x93NUMPY\x01\x00"...)
	b = binary.LittleEndian.AppendUint16(b, uint16(h.Len()))
	return append(b, h.Bytes()...)
}
