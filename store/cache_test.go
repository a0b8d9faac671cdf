package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// With the cache, a blob the store wrote reads back without touching the
// file; a file damaged behind the store's back is still found corrupt at
// its next read from disk: after a reopen, or once the cache let it go.
func TestBlobCacheCorruptFoundOnDiskRead(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{NoSync: true, BlobCache: 1 << 20})
	data := bytes.Repeat([]byte("masked input "), 1000)
	d, err := db.PutBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "blobs", hex.EncodeToString(d[:]))
	bad := bytes.Clone(data)
	bad[7] ^= 1 // same size
	if err := os.WriteFile(p, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	// The cached copy is of the bytes PutBlob hashed: right for d.
	if got, err := db.Blob(d); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("cached Blob = %v, want the bytes put", err)
	}
	if db.cache.bytes() != int64(len(data)) {
		t.Fatalf("cache holds %d bytes, want %d", db.cache.bytes(), len(data))
	}

	// Let it go: other blobs fill the cache. The disk read finds the damage.
	for i := range 3 {
		if _, err := db.PutBlob(bytes.Repeat([]byte{byte(i)}, 400<<10)); err != nil {
			t.Fatal(err)
		}
	}
	if db.cache.bytes() > 1<<20 {
		t.Fatalf("cache holds %d bytes, over its bound", db.cache.bytes())
	}
	if _, err := db.Blob(d); !errors.Is(err, ErrCorruptBlob) {
		t.Fatalf("Blob of a corrupt file evicted from the cache: err = %v, want ErrCorruptBlob", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("corrupt blob file still there: %v", err)
	}

	// Stored again, damaged again, and the store reopened: an empty cache,
	// so the first read is from disk and finds it.
	if _, err := db.PutBlob(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, Options{NoSync: true, BlobCache: 1 << 20})
	if _, err := db.Blob(d); !errors.Is(err, ErrCorruptBlob) {
		t.Fatalf("Blob of a corrupt file after reopen: err = %v, want ErrCorruptBlob", err)
	}
}

// A cached blob whose file is gone or has another size is not served from
// the cache: the disk decides (missing, or read and verified).
func TestBlobCacheFollowsTheFile(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{NoSync: true, BlobCache: 1 << 20})
	data := []byte("a share blob")
	d, err := db.PutBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "blobs", hex.EncodeToString(d[:]))
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Blob(d); !errors.Is(err, ErrNoBlob) {
		t.Fatalf("Blob of a cached blob whose file is gone: err = %v, want ErrNoBlob", err)
	}
	if _, err := db.PutBlob(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data[:4], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Blob(d); !errors.Is(err, ErrCorruptBlob) {
		t.Fatalf("Blob of a cached blob whose file was truncated: err = %v, want ErrCorruptBlob", err)
	}
	// DeleteBlob forgets it.
	if _, err := db.PutBlob(data); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteBlob(d); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Blob(d); !errors.Is(err, ErrNoBlob) {
		t.Fatalf("Blob after DeleteBlob: err = %v, want ErrNoBlob", err)
	}
	if db.cache.bytes() != 0 {
		t.Fatalf("cache holds %d bytes after DeleteBlob", db.cache.bytes())
	}
}

// PutBlobVerified stores the bytes under the digest given, durable and
// readable as PutBlob's; a blob read from disk enters the cache.
func TestPutBlobVerified(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{NoSync: true, BlobCache: 1 << 20})
	data := bytes.Repeat([]byte{3}, 5000)
	d := sha256.Sum256(data)
	if err := db.PutBlobVerified(d, data); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, Options{NoSync: true, BlobCache: 1 << 20})
	if got, err := db.Blob(d); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Blob after PutBlobVerified and reopen: %v", err)
	}
	if db.cache.bytes() != int64(len(data)) {
		t.Fatalf("a verified disk read is not cached: cache holds %d bytes", db.cache.bytes())
	}
	assertNoTemps(t, dir)
}

// Without the option nothing is cached: every read hashes the file.
func TestBlobNoCache(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{NoSync: true})
	data := []byte("plain update")
	d, err := db.PutBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	if db.cache != nil {
		t.Fatal("a cache without Options.BlobCache")
	}
	p := filepath.Join(dir, "blobs", hex.EncodeToString(d[:]))
	bad := bytes.Clone(data)
	bad[0] ^= 1
	if err := os.WriteFile(p, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Blob(d); !errors.Is(err, ErrCorruptBlob) {
		t.Fatalf("err = %v, want ErrCorruptBlob", err)
	}
}

func TestBlobCacheConcurrent(t *testing.T) {
	db := open(t, t.TempDir(), Options{NoSync: true, BlobCache: 64 << 10})
	errc := make(chan error, 8)
	for g := range 8 {
		go func() {
			var err error
			for i := 0; i < 50 && err == nil; i++ {
				data := bytes.Repeat([]byte{byte(g), byte(i)}, 4000)
				var d [32]byte
				if d, err = db.PutBlob(data); err != nil {
					break
				}
				var got []byte
				if got, err = db.Blob(d); err == nil && !bytes.Equal(got, data) {
					err = errors.New("wrong bytes")
				}
				if i%3 == 0 && err == nil {
					err = db.DeleteBlob(d)
				}
			}
			errc <- err
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if db.cache.bytes() > 64<<10 {
		t.Fatalf("cache holds %d bytes, over its bound", db.cache.bytes())
	}
}
