package store

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func ent(index, term uint64) *raftpb.Entry {
	return &raftpb.Entry{
		Index: new(index),
		Term:  new(term),
		Type:  raftpb.EntryNormal.Enum(),
		Data:  fmt.Appendf(nil, "entry %d term %d", index, term),
	}
}

func ents(lo, hi, term uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := lo; i <= hi; i++ {
		out = append(out, ent(i, term))
	}
	return out
}

func hardState(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

// rebuild builds a MemoryStorage from what the store holds, as a
// restarting node does.
func rebuild(t *testing.T, db *DB) *raft.MemoryStorage {
	t.Helper()
	hs, snap, es, err := db.LoadRaft()
	if err != nil {
		t.Fatal(err)
	}
	ms := raft.NewMemoryStorage()
	if err := ms.ApplySnapshot(snap); err != nil {
		t.Fatalf("ApplySnapshot: %v", err)
	}
	if err := ms.SetHardState(hs); err != nil {
		t.Fatal(err)
	}
	if err := ms.Append(es); err != nil {
		t.Fatalf("Append: %v", err)
	}
	return ms
}

// sameStorage checks that the store holds what the reference MemoryStorage,
// fed the same calls, holds.
func sameStorage(t *testing.T, db *DB, ref *raft.MemoryStorage) {
	t.Helper()
	got := rebuild(t, db)
	gf, _ := got.FirstIndex()
	gl, _ := got.LastIndex()
	wf, _ := ref.FirstIndex()
	wl, _ := ref.LastIndex()
	if gf != wf || gl != wl {
		t.Fatalf("log [%d, %d], want [%d, %d]", gf, gl, wf, wl)
	}
	gt, gerr := got.Term(gf - 1)
	wt, werr := ref.Term(wf - 1)
	if gt != wt || (gerr == nil) != (werr == nil) {
		t.Fatalf("term before the log = %d (%v), want %d (%v)", gt, gerr, wt, werr)
	}
	ge, gerr := got.Entries(gf, gl+1, math.MaxUint64)
	we, werr := ref.Entries(wf, wl+1, math.MaxUint64)
	if !errors.Is(gerr, werr) || len(ge) != len(we) {
		t.Fatalf("entries: %d (%v), want %d (%v)", len(ge), gerr, len(we), werr)
	}
	for i := range ge {
		if !proto.Equal(ge[i], we[i]) {
			t.Fatalf("entry %d = %v, want %v", gf+uint64(i), ge[i], we[i])
		}
	}
	ghs, _, _ := got.InitialState()
	whs, _, _ := ref.InitialState()
	if ghs.GetTerm() != whs.GetTerm() || ghs.GetVote() != whs.GetVote() || ghs.GetCommit() != whs.GetCommit() {
		t.Fatalf("hard state = %v, want %v", ghs, whs)
	}
	gs, _ := got.Snapshot()
	ws, _ := ref.Snapshot()
	if !proto.Equal(gs, ws) {
		t.Fatalf("snapshot = %v, want %v", gs, ws)
	}
}

func TestRaftPersistence(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{})
	ref := raft.NewMemoryStorage()

	// An empty store rebuilds into an empty MemoryStorage.
	sameStorage(t, db, ref)
	if hs, snap, es, err := db.LoadRaft(); err != nil || hs == nil || snap == nil || len(es) != 0 {
		t.Fatalf("LoadRaft of an empty store = %v, %v, %d entries, %v", hs, snap, len(es), err)
	}

	// 1. Hard state and entries 1..5 of term 1.
	step := func(hs *raftpb.HardState, es []*raftpb.Entry, snap *raftpb.Snapshot) {
		t.Helper()
		if err := db.SaveRaft(hs, es, snap); err != nil {
			t.Fatalf("SaveRaft: %v", err)
		}
	}
	step(hardState(1, 1, 0), ents(1, 5, 1), nil)
	ref.SetHardState(hardState(1, 1, 0))
	ref.Append(ents(1, 5, 1))
	sameStorage(t, db, ref)

	// 2. A new leader overwrites the conflicting suffix 4..5 with 4..7 of term 2.
	step(hardState(2, 2, 3), ents(4, 7, 2), nil)
	ref.SetHardState(hardState(2, 2, 3))
	ref.Append(ents(4, 7, 2))
	sameStorage(t, db, ref)

	// 3. The node snapshots at its applied index 5 and compacts there:
	// entries up to 5 go, the tail 6..7 stays.
	snap, err := ref.CreateSnapshot(5, &raftpb.ConfState{Voters: []uint64{1, 2, 3}}, []byte("commit of round 2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.Compact(5); err != nil {
		t.Fatal(err)
	}
	step(nil, nil, snap)
	if err := db.CompactRaft(5); err != nil {
		t.Fatal(err)
	}
	sameStorage(t, db, ref)
	step(nil, nil, snap) // the same snapshot again is a no-op
	sameStorage(t, db, ref)

	// Entries the snapshot covers are skipped, as MemoryStorage.Append does.
	step(nil, ents(3, 7, 2), nil)
	ref.Append(ents(3, 7, 2))
	sameStorage(t, db, ref)

	// 4. Errors leave the store unchanged.
	if err := db.SaveRaft(nil, ents(9, 10, 2), nil); err == nil {
		t.Fatal("SaveRaft with a gap after the log succeeded")
	}
	if err := db.SaveRaft(nil, []*raftpb.Entry{ent(8, 2), ent(10, 2)}, nil); err == nil {
		t.Fatal("SaveRaft of non-contiguous entries succeeded")
	}
	old := &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(4)), Term: new(uint64(2))}}
	if err := db.SaveRaft(hardState(9, 9, 9), nil, old); !errors.Is(err, ErrStale) {
		t.Fatalf("SaveRaft of an older snapshot: err = %v, want ErrStale", err)
	}
	if err := db.CompactRaft(7); err == nil {
		t.Fatal("CompactRaft past the snapshot succeeded")
	}
	sameStorage(t, db, ref)

	// 5. A leader's snapshot at 10 (term 3) replaces a log that does not
	// contain it; entries 11..12 follow in the same Ready.
	recv := &raftpb.Snapshot{
		Data: []byte("commit of round 4"),
		Metadata: &raftpb.SnapshotMetadata{
			Index: new(uint64(10)), Term: new(uint64(3)),
			ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3, 4}},
		},
	}
	step(hardState(3, 0, 10), ents(11, 12, 3), recv)
	if err := ref.ApplySnapshot(recv); err != nil {
		t.Fatal(err)
	}
	ref.SetHardState(hardState(3, 0, 10))
	ref.Append(ents(11, 12, 3))
	sameStorage(t, db, ref)
	if err := db.CompactRaft(11); err != nil {
		t.Fatal(err)
	}
	sameStorage(t, db, ref)

	// 6. Everything survives Close and Open.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, Options{})
	sameStorage(t, db, ref)
	hs, snap2, es, err := db.LoadRaft()
	if err != nil {
		t.Fatal(err)
	}
	if hs.GetCommit() != 10 || snap2.GetMetadata().GetIndex() != 10 || len(es) != 2 || es[0].GetIndex() != 11 {
		t.Fatalf("LoadRaft after reopen = %v, %v, %v", hs, snap2.GetMetadata(), es)
	}
}

// TestRaftSnapshotDisagreeingLog: a snapshot whose entry the stored log has
// with another term drops the whole stored log.
func TestRaftSnapshotDisagreeingLog(t *testing.T) {
	db := open(t, t.TempDir(), Options{NoSync: true})
	ref := raft.NewMemoryStorage()
	if err := db.SaveRaft(hardState(1, 1, 2), ents(1, 6, 1), nil); err != nil {
		t.Fatal(err)
	}
	ref.SetHardState(hardState(1, 1, 2))
	ref.Append(ents(1, 6, 1))
	snap := &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
		Index: new(uint64(4)), Term: new(uint64(2)), ConfState: &raftpb.ConfState{Voters: []uint64{1}},
	}}
	if err := db.SaveRaft(hardState(2, 0, 4), nil, snap); err != nil {
		t.Fatal(err)
	}
	ref.ApplySnapshot(snap)
	ref.SetHardState(hardState(2, 0, 4))
	sameStorage(t, db, ref)
	if _, _, es, _ := db.LoadRaft(); len(es) != 0 {
		t.Fatalf("%d stale entries survived the snapshot", len(es))
	}
}

func TestRaftBeforeCommitCrash(t *testing.T) {
	boom := errors.New("boom")
	crash := false
	db := open(t, t.TempDir(), Options{NoSync: true, Crash: func(p string) error {
		if crash && p == CrashRaftBeforeCommit {
			return boom
		}
		return nil
	}})
	if err := db.SaveRaft(hardState(1, 1, 1), ents(1, 2, 1), nil); err != nil {
		t.Fatal(err)
	}
	crash = true
	if err := db.SaveRaft(hardState(2, 2, 3), ents(2, 4, 2), nil); !errors.Is(err, boom) {
		t.Fatalf("SaveRaft at the crash point: err = %v, want the hook's error", err)
	}
	hs, _, es, err := db.LoadRaft()
	if err != nil {
		t.Fatal(err)
	}
	if hs.GetTerm() != 1 || len(es) != 2 || es[1].GetTerm() != 1 {
		t.Fatalf("a crashed SaveRaft left changes: hs %v, %d entries", hs, len(es))
	}
}
