package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/globalbrain/globalbrain/fedavg"
)

func TestBlobRoundTrip(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{})
	data := bytes.Repeat([]byte("weights "), 1000)
	d, err := db.PutBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	if d != sha256.Sum256(data) {
		t.Fatalf("digest = %x, want the SHA-256 of the data", d)
	}
	p := filepath.Join(dir, "blobs", hex.EncodeToString(d[:]))
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("blob mode %v, want 0600", fi.Mode().Perm())
	}
	if !db.HasBlob(d) {
		t.Fatal("HasBlob = false after PutBlob")
	}
	got, err := db.Blob(d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Blob = %d bytes, %v; want the data back", len(got), err)
	}

	// Idempotent: same digest, one file, no temp files.
	d2, err := db.PutBlob(data)
	if err != nil || d2 != d {
		t.Fatalf("second PutBlob = %x, %v", d2, err)
	}
	empty, err := db.PutBlob(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := db.Blob(empty); err != nil || len(got) != 0 {
		t.Fatalf("Blob(empty) = %q, %v", got, err)
	}
	list, err := db.Blobs()
	if err != nil {
		t.Fatal(err)
	}
	want := []fedavg.Digest{d, empty}
	slices.SortFunc(want, func(a, b fedavg.Digest) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(list, want) {
		t.Fatalf("Blobs = %x, want %x", list, want)
	}
	assertNoTemps(t, dir)

	// Survives a reopen.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, Options{})
	if got, err := db.Blob(d); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Blob after reopen: %v", err)
	}

	if err := db.DeleteBlob(d); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteBlob(d); err != nil {
		t.Fatalf("DeleteBlob of a missing blob: %v", err)
	}
	if db.HasBlob(d) {
		t.Fatal("HasBlob = true after DeleteBlob")
	}
}

func TestBlobMissing(t *testing.T) {
	db := open(t, t.TempDir(), Options{NoSync: true})
	d := sha256.Sum256([]byte("never stored"))
	_, err := db.Blob(d)
	if !errors.Is(err, ErrNoBlob) {
		t.Fatalf("Blob of a missing digest: err = %v, want ErrNoBlob", err)
	}
	if !strings.Contains(err.Error(), hex.EncodeToString(d[:])) {
		t.Errorf("error %q does not name the digest", err)
	}
	if db.HasBlob(d) {
		t.Error("HasBlob = true for a missing blob")
	}
}

func TestBlobCorrupt(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{NoSync: true})
	data := []byte("the global model, round 7")
	d, err := db.PutBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "blobs", hex.EncodeToString(d[:]))
	bad := bytes.Clone(data)
	bad[3] ^= 1 // same size: PutBlob's existence check cannot tell
	if err := os.WriteFile(p, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = db.Blob(d)
	if !errors.Is(err, ErrCorruptBlob) {
		t.Fatalf("Blob of a corrupt file: err = %v, want ErrCorruptBlob", err)
	}
	if !strings.Contains(err.Error(), hex.EncodeToString(d[:])) {
		t.Errorf("error %q does not name the digest", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("corrupt blob file still there: %v", err)
	}
	if _, err := db.Blob(d); !errors.Is(err, ErrNoBlob) {
		t.Fatalf("Blob after removal: err = %v, want ErrNoBlob", err)
	}
	// Fetching it again repairs it.
	if _, err := db.PutBlob(data); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Blob(d); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Blob after re-put: %v", err)
	}

	// A truncated file is rewritten by PutBlob.
	if err := os.WriteFile(p, data[:5], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PutBlob(data); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Blob(d); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Blob after re-put over a truncated file: %v", err)
	}
}

func TestOpenRemovesTemps(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{NoSync: true})
	d, err := db.PutBlob([]byte("kept"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	blobs := filepath.Join(dir, "blobs")
	for _, name := range []string{"abc.tmp", hex.EncodeToString(d[:]) + ".123.tmp"} {
		if err := os.WriteFile(filepath.Join(blobs, name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	db = open(t, dir, Options{NoSync: true})
	assertNoTemps(t, dir)
	if !db.HasBlob(d) {
		t.Fatal("Open removed a complete blob")
	}
	list, err := db.Blobs()
	if err != nil || len(list) != 1 || list[0] != d {
		t.Fatalf("Blobs = %x, %v; want [%x]", list, err, d)
	}
}

func TestPutBlobConcurrent(t *testing.T) {
	db := open(t, t.TempDir(), Options{NoSync: true})
	data := bytes.Repeat([]byte{7}, 1<<16)
	errc := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := db.PutBlob(data)
			errc <- err
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if got, err := db.Blob(sha256.Sum256(data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Blob after concurrent puts: %v", err)
	}
	assertNoTemps(t, db.Dir())
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	tmps, err := filepath.Glob(filepath.Join(dir, "blobs", "*.tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tmps) > 0 {
		t.Fatalf("temp files left: %v", tmps)
	}
}
