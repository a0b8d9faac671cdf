package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/globalbrain/globalbrain/fedavg"
)

// Crash points of PutBlob, in order.
const (
	CrashBlobTmpWritten = "blob.tmp-written" // temp file written and fsynced, not yet renamed
	CrashBlobRenamed    = "blob.renamed"     // renamed into place, directory not yet fsynced
	CrashBlobDirSynced  = "blob.dir-synced"  // durable; PutBlob has not returned yet
)

func (db *DB) blobPath(d fedavg.Digest) string {
	return filepath.Join(db.blobs, hex.EncodeToString(d[:]))
}

// PutBlob stores data as the file blobs/<hex of its SHA-256> and returns the
// digest. The bytes are durable when it returns: they are written to a temp
// file, fsynced, renamed into place and the directory fsynced. If a file of
// that name and size already exists PutBlob does nothing, so calling it again
// after a crash is safe. The store may keep data (Options.BlobCache) and
// hand it to readers: the caller must not change it afterwards.
func (db *DB) PutBlob(data []byte) (fedavg.Digest, error) {
	d := sha256.Sum256(data)
	return d, db.putBlob(d, data)
}

// PutBlobVerified is PutBlob for bytes the caller has already hashed and
// found to be d (a fetched blob checked against the digest it was asked
// for, a model whose digest was computed over its encoding): it stores
// them as blob d without hashing them again. Bytes that do not hash to d
// must never be passed: the store would keep them under d, and only a read
// from disk (after a restart, or once the cache let them go) would find
// them corrupt.
func (db *DB) PutBlobVerified(d fedavg.Digest, data []byte) error {
	return db.putBlob(d, data)
}

// putBlob stores data, which hashes to d, as blob d and keeps it in the
// cache once it is durable.
func (db *DB) putBlob(d fedavg.Digest, data []byte) error {
	if err := db.checkWrite(); err != nil {
		return err
	}
	if err := db.writeBlob(d, data); err != nil {
		return err
	}
	db.cache.put(d, data)
	return nil
}

func (db *DB) writeBlob(d fedavg.Digest, data []byte) error {
	final := db.blobPath(d)
	if fi, err := os.Stat(final); err == nil && fi.Mode().IsRegular() && fi.Size() == int64(len(data)) {
		return nil
	}
	// A unique temp name lets concurrent PutBlobs of the same bytes proceed;
	// the last rename wins with identical content.
	f, err := os.CreateTemp(db.blobs, hex.EncodeToString(d[:])+".*"+tmpExt)
	if err != nil {
		return fmt.Errorf("store: %s: %w", db.blobs, err)
	}
	tmp := f.Name()
	if err := writeSync(f, data, !db.opts.NoSync); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: %s: %w", tmp, err)
	}
	if err := db.crash(CrashBlobTmpWritten); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: %s: %w", final, err)
	}
	if err := db.crash(CrashBlobRenamed); err != nil {
		return err
	}
	if !db.opts.NoSync {
		if err := syncDir(db.blobs); err != nil {
			return err
		}
	}
	if err := db.crash(CrashBlobDirSynced); err != nil {
		return err
	}
	return nil
}

func writeSync(f *os.File, data []byte, sync bool) error {
	_, err := f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: %s: %w", dir, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store: %s: %w", dir, err)
	}
	return nil
}

// Blob returns the bytes of blob d, which hash to d; the caller may read
// them but must not change them (they may be the cache's). A missing blob
// is ErrNoBlob. Bytes read from disk are hashed and a blob whose bytes do not
// match is removed and reported as ErrCorruptBlob. A blob this process
// wrote or verified recently comes from the cache instead, without reading
// or hashing the file, as long as the file is still there with the same
// size: the copy is of bytes hashed when they were stored (or read), so it
// is right whatever has become of the file since; a file damaged behind
// the store's back is found at its first read from disk (after a restart,
// or once the cache let the blob go) and by every member that fetches it,
// as peers verify what they receive.
func (db *DB) Blob(d fedavg.Digest) ([]byte, error) {
	if err := db.check(); err != nil {
		return nil, err
	}
	p := db.blobPath(d)
	if b, ok := db.cache.get(d); ok {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Size() == int64(len(b)) {
			return b, nil
		}
		db.cache.drop(d) // gone or changed: the disk decides
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("store: blob %s: %w", d, ErrNoBlob)
	}
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", p, err)
	}
	if sha256.Sum256(data) != d {
		if db.readOnly {
			return nil, fmt.Errorf("store: blob %s: %w", d, ErrCorruptBlob)
		}
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return nil, fmt.Errorf("store: blob %s: %w (removing it: %v)", d, ErrCorruptBlob, rerr)
		}
		return nil, fmt.Errorf("store: blob %s: %w", d, ErrCorruptBlob)
	}
	db.cache.put(d, data)
	return data, nil
}

// HasBlob reports whether a file for blob d exists. It does not read or
// verify it; Blob does.
func (db *DB) HasBlob(d fedavg.Digest) bool {
	if db.check() != nil {
		return false
	}
	fi, err := os.Stat(db.blobPath(d))
	return err == nil && fi.Mode().IsRegular()
}

// DeleteBlob removes blob d. Removing a missing blob is not an error.
// The caller must not delete a blob that a retained outcome names.
func (db *DB) DeleteBlob(d fedavg.Digest) error {
	if err := db.checkWrite(); err != nil {
		return err
	}
	db.cache.drop(d)
	p := db.blobPath(d)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: %s: %w", p, err)
	}
	return nil
}

// Blobs lists the digests of the stored blobs in ascending order.
func (db *DB) Blobs() ([]fedavg.Digest, error) {
	if err := db.check(); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(db.blobs)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", db.blobs, err)
	}
	var out []fedavg.Digest
	for _, e := range ents { // ReadDir sorts by name, so by digest
		var d fedavg.Digest
		name := e.Name()
		if len(name) != 2*len(d) || !e.Type().IsRegular() {
			continue
		}
		if _, err := hex.Decode(d[:], []byte(name)); err != nil || hex.EncodeToString(d[:]) != name {
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

// OpenBlob opens a stored blob for reading and returns its size, for
// serving it to other members without holding it in memory. The file was
// verified when it was written (PutBlob hashes what it stores); a reader
// that needs certainty verifies the digest of what it receives.
func (db *DB) OpenBlob(d fedavg.Digest) (io.ReadSeekCloser, int64, error) {
	if err := db.check(); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(db.blobPath(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("store: blob %s: %w", d, ErrNoBlob)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("store: blob %s: %w", d, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("store: blob %s: %w", d, err)
	}
	return f, st.Size(), nil
}
