package store

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

func open(t *testing.T, dir string, opts Options) *DB {
	t.Helper()
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestOpenCreatesLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	db := open(t, dir, Options{})
	for _, p := range []string{dir, filepath.Join(dir, "blobs")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want a 0700 directory", p, fi.Mode())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "meta.db")); err != nil {
		t.Fatal(err)
	}
	if db.Dir() != dir {
		t.Errorf("Dir() = %q, want %q", db.Dir(), dir)
	}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketRaft, bucketRounds, bucketKV} {
			if tx.Bucket(b) == nil {
				t.Errorf("bucket %s missing", b)
			}
		}
		if v := tx.Bucket(bucketMeta).Get(keySchema); !bytes.Equal(v, u64(SchemaVersion)) {
			t.Errorf("schema version = %x, want %x", v, u64(SchemaVersion))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSchemaMismatch(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, u64(SchemaVersion+1))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	db2, err := Open(dir, Options{})
	if !errors.Is(err, ErrSchema) {
		if db2 != nil {
			db2.Close()
		}
		t.Fatalf("Open of a newer schema: err = %v, want ErrSchema", err)
	}
	// The failed Open released the lock.
	b, err = bolt.Open(filepath.Join(dir, "meta.db"), 0o600, &bolt.Options{Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("lock still held after a failed Open: %v", err)
	}
	b.Close()
}

func TestSecondOpenTimesOut(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{})
	// A temp file of an in-flight PutBlob of the first DB.
	tmp := filepath.Join(dir, "blobs", "inflight.tmp")
	if err := os.WriteFile(tmp, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	const timeout = 100 * time.Millisecond
	start := time.Now()
	db2, err := Open(dir, Options{Timeout: timeout})
	if err == nil {
		db2.Close()
		t.Fatal("second Open of an open store succeeded")
	}
	if !errors.Is(err, bolterrors.ErrTimeout) {
		t.Errorf("second Open: err = %v, want a timeout", err)
	}
	// bbolt retries the lock every 50ms and gives up one retry early.
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("second Open took %v with a %v timeout", el, timeout)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("the failed Open removed the open store's temp file: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db3 := open(t, dir, Options{Timeout: timeout})
	db3.Close()
}

func TestCloseIdempotent(t *testing.T) {
	db := open(t, t.TempDir(), Options{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := db.LastApplied(); !errors.Is(err, ErrClosed) {
		t.Errorf("LastApplied after Close: err = %v, want ErrClosed", err)
	}
	if _, err := db.PutBlob([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("PutBlob after Close: err = %v, want ErrClosed", err)
	}
	if db.HasBlob(fedavg.Digest{}) {
		t.Error("HasBlob after Close = true")
	}
}

func TestKV(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{})
	if _, err := db.Get("peers", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get from a missing bucket: err = %v, want ErrNotFound", err)
	}
	val := []byte("record a")
	if err := db.Put("peers", "a", val); err != nil {
		t.Fatal(err)
	}
	val[0] = 'X' // Put copied it
	if err := db.Put("peers", "empty", nil); err != nil {
		t.Fatal(err)
	}
	// Bucket names do not collide with the store's own buckets.
	if err := db.Put("meta", "schema", []byte("not a version")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get("peers", "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing key: err = %v, want ErrNotFound", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, Options{}) // the schema version is intact
	got, err := db.Get("peers", "a")
	if err != nil || string(got) != "record a" {
		t.Fatalf("Get = %q, %v; want %q", got, err, "record a")
	}
	got, err = db.Get("peers", "empty")
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Get of an empty value = %#v, %v; want empty, non-nil", got, err)
	}
	if err := db.Delete("peers", "a"); err != nil {
		t.Fatal(err)
	}
	if err := db.Delete("nobucket", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get("peers", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: err = %v, want ErrNotFound", err)
	}
}

func TestOpenBlob(t *testing.T) {
	db, err := Open(t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	data := []byte("an update's bytes")
	d, err := db.PutBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	r, n, err := db.OpenBlob(d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || n != int64(len(data)) || string(got) != string(data) {
		t.Fatalf("OpenBlob: %q, %d, %v", got, n, err)
	}
	if _, _, err := db.OpenBlob(fedavg.Digest{1}); !errors.Is(err, ErrNoBlob) {
		t.Fatalf("missing blob: %v", err)
	}
}
