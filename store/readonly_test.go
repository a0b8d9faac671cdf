package store

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A read-only store reads what a node wrote, refuses every write, reports
// a corrupt blob without removing it, and is refused while a node holds
// the store.
func TestOpenReadOnly(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{})
	model, err := db.PutBlob([]byte("model"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Apply(Applied{Index: 3, Round: 1, Model: model, Record: []byte("rec")}); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReadOnly(dir, 50*time.Millisecond); err == nil || !errors.Is(err, bolt.ErrTimeout) {
		t.Fatalf("OpenReadOnly while the store is open = %v, want a timeout that says the store is in use", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	ro, err := OpenReadOnly(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	a, err := ro.LastApplied()
	if err != nil || a.Round != 1 || a.Model != model || string(a.Record) != "rec" {
		t.Fatalf("LastApplied = %+v, %v", a, err)
	}
	if _, err := ro.PutBlob([]byte("x")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("PutBlob = %v, want ErrReadOnly", err)
	}
	if err := ro.DeleteBlob(model); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("DeleteBlob = %v, want ErrReadOnly", err)
	}
	if err := ro.Put("b", "k", []byte("v")); err == nil {
		t.Fatal("Put on a read-only store succeeded")
	}
	if err := ro.Apply(Applied{Index: 4, Round: 2, Model: model}); err == nil {
		t.Fatal("Apply on a read-only store succeeded")
	}
	p := filepath.Join(dir, "blobs", hex.EncodeToString(model[:]))
	if err := os.WriteFile(p, []byte("modeL"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Blob(model); !errors.Is(err, ErrCorruptBlob) {
		t.Fatalf("Blob of a corrupt file = %v, want ErrCorruptBlob", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the corrupt blob was removed from a read-only store: %v", err)
	}
	if _, err := OpenReadOnly(t.TempDir(), 0); err == nil {
		t.Fatal("OpenReadOnly of an empty directory succeeded")
	}
}
