package store

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// CrashRaftBeforeCommit is SaveRaft's crash point: everything written in the
// transaction, not committed.
const CrashRaftBeforeCommit = "raft.before-commit"

// SaveRaft persists what a raft.Ready asks to be made durable, in one bbolt
// transaction, in this order:
//
//   - snap, if non-empty (index > 0): stored, and the entries it covers
//     (index <= snap index) dropped. If the stored entry at the snapshot index
//     has another term or is absent, the stored log disagrees with the snapshot
//     and every entry is dropped, as raft.MemoryStorage.ApplySnapshot does. A
//     snapshot older than the stored one is ErrStale; the stored one again is
//     a no-op.
//   - ents, if any: entries covered by the snapshot are skipped, then every
//     stored entry with index >= ents[0].Index is deleted (raft's log
//     truncation) and ents written. ents must be contiguous and must not
//     leave a gap after the stored log.
//   - hs, if non-empty.
//
// nil arguments are allowed. On error nothing is written.
func (db *DB) SaveRaft(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) error {
	if err := db.check(); err != nil {
		return err
	}
	for i, e := range ents {
		if want := ents[0].GetIndex() + uint64(i); e.GetIndex() != want {
			return fmt.Errorf("store: save raft: entry %d has index %d, want %d", i, e.GetIndex(), want)
		}
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		meta, log := tx.Bucket(bucketMeta), tx.Bucket(bucketRaft)
		snapIdx, snapTerm, err := storedSnapshot(meta)
		if err != nil {
			return err
		}
		if i := snap.GetMetadata().GetIndex(); i > 0 {
			t := snap.GetMetadata().GetTerm()
			switch {
			case i < snapIdx || (i == snapIdx && t != snapTerm):
				return fmt.Errorf("store: save raft: snapshot %d/%d, stored %d/%d: %w", i, t, snapIdx, snapTerm, ErrStale)
			case i > snapIdx:
				v, err := proto.Marshal(snap)
				if err != nil {
					return fmt.Errorf("store: save raft: snapshot %d: %w", i, err)
				}
				if err := meta.Put(keySnapshot, v); err != nil {
					return fmt.Errorf("store: save raft: snapshot %d: %w", i, err)
				}
				keep, err := termAt(log, i)
				if err != nil {
					return err
				}
				upto := i
				if keep != t {
					upto = ^uint64(0)
				}
				if err := deleteRange(log, "raft log", 0, upto); err != nil {
					return err
				}
				snapIdx = i
			}
		}
		if len(ents) > 0 && ents[0].GetIndex() <= snapIdx {
			skip := snapIdx - ents[0].GetIndex() + 1
			ents = ents[min(skip, uint64(len(ents))):]
		}
		if len(ents) > 0 {
			first := ents[0].GetIndex()
			last := snapIdx
			if k, _ := log.Cursor().Last(); k != nil {
				last = binary.BigEndian.Uint64(k)
			}
			if first > last+1 {
				return fmt.Errorf("store: save raft: entries start at %d, log ends at %d: missing entries", first, last)
			}
			if err := deleteRange(log, "raft log", first, ^uint64(0)); err != nil {
				return err
			}
			for _, e := range ents {
				v, err := proto.Marshal(e)
				if err != nil {
					return fmt.Errorf("store: save raft: entry %d: %w", e.GetIndex(), err)
				}
				if err := log.Put(u64(e.GetIndex()), v); err != nil {
					return fmt.Errorf("store: save raft: entry %d: %w", e.GetIndex(), err)
				}
			}
		}
		if hs.GetTerm() != 0 || hs.GetVote() != 0 || hs.GetCommit() != 0 {
			v, err := proto.Marshal(hs)
			if err != nil {
				return fmt.Errorf("store: save raft: hard state: %w", err)
			}
			if err := meta.Put(keyHardState, v); err != nil {
				return fmt.Errorf("store: save raft: hard state: %w", err)
			}
		}
		return db.crash(CrashRaftBeforeCommit)
	})
}

// LoadRaft returns the persisted hard state, snapshot and log entries (those
// after the snapshot, in index order). hs and snap are never nil; an empty
// store gives zero values. To rebuild the node's raft.MemoryStorage:
//
//	ms := raft.NewMemoryStorage()
//	ms.ApplySnapshot(snap)
//	ms.SetHardState(hs)
//	ms.Append(ents)
func (db *DB) LoadRaft() (hs *raftpb.HardState, snap *raftpb.Snapshot, ents []*raftpb.Entry, err error) {
	if err := db.check(); err != nil {
		return nil, nil, nil, err
	}
	hs, snap = &raftpb.HardState{}, &raftpb.Snapshot{}
	err = db.bolt.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyHardState); v != nil {
			if err := proto.Unmarshal(bytes.Clone(v), hs); err != nil {
				return fmt.Errorf("store: load raft: hard state: %w", err)
			}
		}
		if v := meta.Get(keySnapshot); v != nil {
			if err := proto.Unmarshal(bytes.Clone(v), snap); err != nil {
				return fmt.Errorf("store: load raft: snapshot: %w", err)
			}
		}
		c := tx.Bucket(bucketRaft).Cursor()
		for k, v := c.Seek(u64(snap.GetMetadata().GetIndex() + 1)); k != nil; k, v = c.Next() {
			e := &raftpb.Entry{}
			if err := proto.Unmarshal(bytes.Clone(v), e); err != nil {
				return fmt.Errorf("store: load raft: entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			ents = append(ents, e)
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return hs, raftpb.EnsureSnapshot(snap), ents, nil
}

// CompactRaft deletes the stored entries with index < index. A log without
// the entries before the snapshot can still be rebuilt, one without entries
// after it cannot, so index may be at most the stored snapshot index + 1.
func (db *DB) CompactRaft(index uint64) error {
	if err := db.check(); err != nil {
		return err
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		snapIdx, _, err := storedSnapshot(tx.Bucket(bucketMeta))
		if err != nil {
			return err
		}
		if index > snapIdx+1 {
			return fmt.Errorf("store: compact raft to %d: past the snapshot at %d", index, snapIdx)
		}
		if index == 0 {
			return nil
		}
		return deleteRange(tx.Bucket(bucketRaft), "raft log", 0, index-1)
	})
}

// storedSnapshot returns the index and term of the stored snapshot (0, 0 if none).
func storedSnapshot(meta *bolt.Bucket) (index, term uint64, err error) {
	v := meta.Get(keySnapshot)
	if v == nil {
		return 0, 0, nil
	}
	s := &raftpb.Snapshot{}
	if err := proto.Unmarshal(v, s); err != nil {
		return 0, 0, fmt.Errorf("store: raft snapshot: %w", err)
	}
	return s.GetMetadata().GetIndex(), s.GetMetadata().GetTerm(), nil
}

// termAt returns the term of the stored entry at index i, 0 if there is none.
func termAt(log *bolt.Bucket, i uint64) (uint64, error) {
	v := log.Get(u64(i))
	if v == nil {
		return 0, nil
	}
	e := &raftpb.Entry{}
	if err := proto.Unmarshal(v, e); err != nil {
		return 0, fmt.Errorf("store: raft entry %d: %w", i, err)
	}
	return e.GetTerm(), nil
}

// deleteRange deletes the keys of b in [lo, hi] (big-endian uint64 keys).
// Seeking again after each delete keeps clear of bbolt's cursor-after-delete
// subtleties.
func deleteRange(b *bolt.Bucket, name string, lo, hi uint64) error {
	c := b.Cursor()
	for k, _ := c.Seek(u64(lo)); k != nil && binary.BigEndian.Uint64(k) <= hi; k, _ = c.Seek(u64(lo)) {
		if err := c.Delete(); err != nil {
			return fmt.Errorf("store: %s: delete %d: %w", name, binary.BigEndian.Uint64(k), err)
		}
	}
	return nil
}
