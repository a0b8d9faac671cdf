package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/globalbrain/globalbrain/fedavg"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

var errCrash = errors.New("simulated crash")

var crashPoints = []string{
	CrashBlobTmpWritten,
	CrashBlobRenamed,
	CrashBlobDirSynced,
	CrashRaftBeforeCommit,
	CrashApplyBeforeCommit,
	CrashApplyCommitted,
}

const scriptRounds = 3

// A step of the scripted node run. done reports whether the step's effect
// is already durable, so a resumed run skips it; steps without done are
// idempotent and always run.
type step struct {
	name string
	run  func(*DB) error
	done func(*DB) bool
}

func modelBytes(r uint64) []byte {
	return fmt.Appendf(nil, "model G(%d) %0512d", r, r)
}

// raftLast is the last raft index the store holds.
func raftLast(db *DB) uint64 {
	_, snap, es, err := db.LoadRaft()
	if err != nil {
		panic(err)
	}
	if len(es) > 0 {
		return es[len(es)-1].GetIndex()
	}
	return snap.GetMetadata().GetIndex()
}

func appliedIndex(db *DB) uint64 {
	la, err := db.LastApplied()
	if err != nil {
		panic(err)
	}
	return la.Index
}

// script is what a node does for scriptRounds rounds: each round it stores a
// local update, appends and commits the round's Commit entry, stores the new
// model and applies the outcome, then appends and applies a membership entry
// that decides no round. After round 2 it snapshots, compacts the raft log
// and prunes old outcome records. The apply step reads the Commit entry back
// from the raft log, as a restarted node replaying its log does.
func script() []step {
	var steps []step
	for r := uint64(1); r <= scriptRounds; r++ {
		ci, mi := 2*r-1, 2*r // raft indexes of the round's Commit and membership entries
		steps = append(steps,
			step{name: fmt.Sprintf("update %d", r), run: func(db *DB) error {
				_, err := db.PutBlob(fmt.Appendf(nil, "update of round %d", r))
				return err
			}},
			step{
				name: fmt.Sprintf("log commit %d", r),
				run: func(db *DB) error {
					e := &raftpb.Entry{Index: new(ci), Term: new(uint64(1)), Data: fmt.Appendf(nil, "commit round %d", r)}
					return db.SaveRaft(hardState(1, 1, ci), []*raftpb.Entry{e}, nil)
				},
				done: func(db *DB) bool { return raftLast(db) >= ci },
			},
			step{name: fmt.Sprintf("model %d", r), run: func(db *DB) error {
				_, err := db.PutBlob(modelBytes(r))
				return err
			}},
			step{
				name: fmt.Sprintf("apply %d", r),
				run: func(db *DB) error {
					_, _, es, err := db.LoadRaft()
					if err != nil {
						return err
					}
					var rec []byte
					for _, e := range es {
						if e.GetIndex() == ci {
							rec = e.GetData()
						}
					}
					if rec == nil {
						return fmt.Errorf("entry %d not in the raft log", ci)
					}
					prev, err := db.LastApplied()
					if err != nil {
						return err
					}
					return db.Apply(Applied{
						Index:     ci,
						Round:     r,
						Model:     sha256.Sum256(modelBytes(r)),
						ChainHash: sha256.Sum256(append(prev.ChainHash[:], rec...)),
						Record:    rec,
					})
				},
				done: func(db *DB) bool { return appliedIndex(db) >= ci },
			},
			step{
				name: fmt.Sprintf("log member %d", r),
				run: func(db *DB) error {
					e := &raftpb.Entry{Index: new(mi), Term: new(uint64(1)), Type: raftpb.EntryConfChange.Enum()}
					return db.SaveRaft(hardState(1, 1, mi), []*raftpb.Entry{e}, nil)
				},
				done: func(db *DB) bool { return raftLast(db) >= mi },
			},
			step{
				name: fmt.Sprintf("apply member %d", r),
				run:  func(db *DB) error { return db.SetAppliedIndex(mi) },
				done: func(db *DB) bool { return appliedIndex(db) >= mi },
			},
			step{name: fmt.Sprintf("peer record %d", r), run: func(db *DB) error {
				return db.Put("peers", fmt.Sprint(r), fmt.Appendf(nil, "seen in round %d", r))
			}},
		)
		if r == 2 {
			steps = append(steps,
				step{name: "snapshot", run: func(db *DB) error {
					snap := &raftpb.Snapshot{Data: []byte("commit round 2"), Metadata: &raftpb.SnapshotMetadata{
						Index: new(uint64(4)), Term: new(uint64(1)), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}},
					}}
					return db.SaveRaft(nil, nil, snap)
				}},
				step{name: "compact", run: func(db *DB) error { return db.CompactRaft(4) }},
				step{name: "prune", run: func(db *DB) error { return db.PruneRounds(2) }},
			)
		}
	}
	return steps
}

// runScript runs the script, skipping the steps already done: on a new store
// that is the whole script, after a restart it resumes where the store is.
func runScript(db *DB) error {
	for _, s := range script() {
		if s.done != nil && s.done(db) {
			continue
		}
		if err := s.run(db); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// state is everything a store holds, in comparable form.
type state struct {
	Applied  Applied
	Outcomes map[uint64]Applied
	Blobs    map[fedavg.Digest]string
	Raft     []string
	Peers    map[string]string
}

func dump(t *testing.T, db *DB) state {
	t.Helper()
	var s state
	var err error
	if s.Applied, err = db.LastApplied(); err != nil {
		t.Fatal(err)
	}
	s.Outcomes = map[uint64]Applied{}
	for r := uint64(0); r <= scriptRounds+1; r++ {
		o, err := db.Outcome(r)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		s.Outcomes[r] = o
	}
	s.Blobs = map[fedavg.Digest]string{}
	list, err := db.Blobs()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range list {
		b, err := db.Blob(d)
		if err != nil {
			t.Fatal(err)
		}
		s.Blobs[d] = string(b)
	}
	hs, snap, es, err := db.LoadRaft()
	if err != nil {
		t.Fatal(err)
	}
	m := proto.MarshalOptions{Deterministic: true}
	for _, msg := range append([]proto.Message{hs, snap}, entryMessages(es)...) {
		b, err := m.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		s.Raft = append(s.Raft, string(b))
	}
	s.Peers = map[string]string{}
	for r := 1; r <= scriptRounds; r++ {
		if v, err := db.Get("peers", fmt.Sprint(r)); err == nil {
			s.Peers[fmt.Sprint(r)] = string(v)
		}
	}
	return s
}

func entryMessages(es []*raftpb.Entry) []proto.Message {
	out := make([]proto.Message, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// checkConsistent checks what must hold after a crash at any instant.
func checkConsistent(t *testing.T, db *DB) {
	t.Helper()
	assertNoTemps(t, db.Dir())
	la, err := db.LastApplied()
	if err != nil {
		t.Fatal(err)
	}
	if la.Model != (fedavg.Digest{}) {
		// Blob before record: the applied model is there and intact.
		if _, err := db.Blob(la.Model); err != nil {
			t.Fatalf("applied round %d names model %x: %v", la.Round, la.Model, err)
		}
		if la.Record == nil {
			t.Fatalf("applied round %d has no outcome record", la.Round)
		}
	}
	// Log before apply.
	if last := raftLast(db); last < la.Index {
		t.Fatalf("applied index %d is past the raft log (last %d)", la.Index, last)
	}
	var prev *Applied
	for r := uint64(1); r <= scriptRounds; r++ {
		o, err := db.Outcome(r)
		if errors.Is(err, ErrNotFound) {
			prev = nil
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if r > la.Round || o.Index > la.Index {
			t.Fatalf("outcome of round %d (index %d) recorded past the applied state %+v", r, o.Index, la)
		}
		if _, err := db.Blob(o.Model); err != nil {
			t.Fatalf("outcome of round %d: model: %v", r, err)
		}
		if prev != nil && o.ChainHash != sha256.Sum256(append(prev.ChainHash[:], o.Record...)) {
			t.Fatalf("outcome of round %d does not chain to round %d", r, r-1)
		}
		prev = &o
	}
	list, err := db.Blobs()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range list {
		if _, err := db.Blob(d); err != nil {
			t.Fatalf("blob %x: %v", d, err)
		}
	}
}

// TestCrashAtEveryPoint kills the scripted run at every hit of every crash
// point, reopens the store, checks that it is consistent (no temp files, the
// applied model blob present and intact, applied state and outcome records
// in agreement, nothing applied past the raft log), resumes, and checks that
// the result equals that of a run without a crash.
func TestCrashAtEveryPoint(t *testing.T) {
	// The run without crashes, counting the hits of each point.
	hits := map[string]int{}
	ref := open(t, t.TempDir(), Options{Crash: func(p string) error {
		hits[p]++
		return nil
	}})
	if err := runScript(ref); err != nil {
		t.Fatal(err)
	}
	want := dump(t, ref)
	if want.Applied.Index != 2*scriptRounds || want.Applied.Round != scriptRounds || len(want.Outcomes) != scriptRounds-1 {
		t.Fatalf("reference run ended in %+v with %d outcomes", want.Applied, len(want.Outcomes))
	}
	checkConsistent(t, ref)

	for _, point := range crashPoints {
		if hits[point] == 0 {
			t.Errorf("%s: the script never reaches it", point)
		}
		for n := 1; n <= hits[point]; n++ {
			t.Run(fmt.Sprintf("%s/%d", point, n), func(t *testing.T) {
				t.Parallel()
				crashAt(t, point, n, want)
			})
		}
	}
}

// crashAt runs the script on a new store that crashes at the n-th hit of
// point, reopens it, checks it and resumes.
func crashAt(t *testing.T, point string, n int, want state) {
	dir := t.TempDir()
	hits := 0
	db, err := Open(dir, Options{NoSync: true, Crash: func(p string) error {
		if p != point {
			return nil
		}
		hits++
		if hits == n {
			return errCrash
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = runScript(db)
	if !errors.Is(err, errCrash) {
		db.Close()
		t.Fatalf("run ended in %v, want a crash", err)
	}
	t.Logf("crashed in %v", err)
	// The process is gone; closing the handle must still work.
	if err := db.Close(); err != nil {
		t.Fatalf("Close after the crash: %v", err)
	}
	if point == CrashBlobTmpWritten {
		if tmps, _ := filepath.Glob(filepath.Join(dir, "blobs", "*.tmp")); len(tmps) == 0 {
			t.Fatal("no temp file left to clean up")
		}
	}

	db = open(t, dir, Options{NoSync: true})
	checkConsistent(t, db)
	if err := runScript(db); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if got := dump(t, db); !reflect.DeepEqual(got, want) {
		t.Fatalf("state after resume differs from an uncrashed run\ngot  %+v\nwant %+v", got, want)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}
