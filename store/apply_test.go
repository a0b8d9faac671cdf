package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/globalbrain/globalbrain/fedavg"
)

// outcome builds the Applied for round r at raft index idx, chained to prev,
// after storing its model blob.
func outcome(t *testing.T, db *DB, idx, r uint64, prev fedavg.Digest) Applied {
	t.Helper()
	d, err := db.PutBlob(fmt.Appendf(nil, "model G(%d)", r))
	if err != nil {
		t.Fatal(err)
	}
	rec := fmt.Appendf(nil, "commit round %d", r)
	return Applied{Index: idx, Round: r, Model: d, ChainHash: sha256.Sum256(append(prev[:], rec...)), Record: rec}
}

func sameApplied(t *testing.T, got, want Applied) {
	t.Helper()
	if got.Index != want.Index || got.Round != want.Round || got.Model != want.Model ||
		got.ChainHash != want.ChainHash || !bytes.Equal(got.Record, want.Record) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestApply(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{})
	if a, err := db.LastApplied(); err != nil || a.Index != 0 || a.Record != nil || a.Model != (fedavg.Digest{}) {
		t.Fatalf("LastApplied of a new store = %+v, %v; want the zero value", a, err)
	}

	a1 := outcome(t, db, 3, 1, fedavg.Digest{})
	if err := db.Apply(a1); err != nil {
		t.Fatal(err)
	}
	a2 := outcome(t, db, 5, 2, a1.ChainHash)
	if err := db.Apply(a2); err != nil {
		t.Fatal(err)
	}
	la, err := db.LastApplied()
	if err != nil {
		t.Fatal(err)
	}
	sameApplied(t, la, a2)

	// Going backwards, or repeating, is stale and changes nothing.
	for _, a := range []Applied{a2, a1, {Index: 4, Round: 3, Model: a2.Model}, {Index: 6, Round: 2, Model: a2.Model}} {
		if err := db.Apply(a); !errors.Is(err, ErrStale) {
			t.Errorf("Apply(index %d, round %d): err = %v, want ErrStale", a.Index, a.Round, err)
		}
	}
	// The model blob must be stored first.
	if err := db.Apply(Applied{Index: 9, Round: 9, Model: sha256.Sum256([]byte("absent"))}); !errors.Is(err, ErrNoBlob) {
		t.Errorf("Apply without its model blob: err = %v, want ErrNoBlob", err)
	}

	// An entry that decides no round advances the index only.
	if err := db.SetAppliedIndex(6); err != nil {
		t.Fatal(err)
	}
	if err := db.SetAppliedIndex(6); !errors.Is(err, ErrStale) {
		t.Errorf("SetAppliedIndex(6) twice: err = %v, want ErrStale", err)
	}
	want := a2
	want.Index = 6
	la, err = db.LastApplied()
	if err != nil {
		t.Fatal(err)
	}
	sameApplied(t, la, want)

	a3 := outcome(t, db, 8, 3, a2.ChainHash)
	if err := db.Apply(a3); err != nil {
		t.Fatal(err)
	}

	// Reopen.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, Options{})
	la, err = db.LastApplied()
	if err != nil {
		t.Fatal(err)
	}
	sameApplied(t, la, a3)
	for _, a := range []Applied{a1, a2, a3} {
		o, err := db.Outcome(a.Round)
		if err != nil {
			t.Fatal(err)
		}
		sameApplied(t, o, a)
	}
	if _, err := db.Outcome(4); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Outcome(4): err = %v, want ErrNotFound", err)
	}

	// Returned bytes are copies.
	o, _ := db.Outcome(1)
	o.Record[0] = 'X'
	if o, _ = db.Outcome(1); !bytes.Equal(o.Record, a1.Record) {
		t.Fatal("changing a returned Record changed the store")
	}

	// Prune: records below the boundary go, blobs and applied state stay.
	if err := db.PruneRounds(3); err != nil {
		t.Fatal(err)
	}
	for r := uint64(1); r <= 2; r++ {
		if _, err := db.Outcome(r); !errors.Is(err, ErrNotFound) {
			t.Errorf("Outcome(%d) after PruneRounds(3): err = %v, want ErrNotFound", r, err)
		}
	}
	if _, err := db.Outcome(3); err != nil {
		t.Fatal(err)
	}
	if !db.HasBlob(a1.Model) {
		t.Error("PruneRounds removed a blob")
	}
	if err := db.PruneRounds(10); err != nil {
		t.Fatal(err)
	}
	la, err = db.LastApplied()
	if err != nil {
		t.Fatal(err)
	}
	want = a3
	want.Record = nil
	sameApplied(t, la, want)
	// A round at or below the last applied one stays refused after pruning.
	if err := db.Apply(Applied{Index: 20, Round: 2, Model: a1.Model}); !errors.Is(err, ErrStale) {
		t.Errorf("Apply of a pruned round: err = %v, want ErrStale", err)
	}
}

func TestApplyCrashIsAtomic(t *testing.T) {
	boom := errors.New("boom")
	var at string
	db := open(t, t.TempDir(), Options{NoSync: true, Crash: func(p string) error {
		if p == at {
			return boom
		}
		return nil
	}})
	a1 := outcome(t, db, 1, 1, fedavg.Digest{})
	at = CrashApplyBeforeCommit
	if err := db.Apply(a1); !errors.Is(err, boom) {
		t.Fatalf("Apply: err = %v, want the hook's error", err)
	}
	if la, _ := db.LastApplied(); la.Index != 0 {
		t.Fatalf("an uncommitted Apply is visible: %+v", la)
	}
	if _, err := db.Outcome(1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an uncommitted Apply left its record: %v", err)
	}
	at = CrashApplyCommitted
	if err := db.Apply(a1); !errors.Is(err, boom) {
		t.Fatalf("Apply: err = %v, want the hook's error", err)
	}
	la, _ := db.LastApplied()
	sameApplied(t, la, a1)
}
