package store

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/round"
)

// Crash points of Apply, in order.
const (
	CrashApplyBeforeCommit = "apply.before-commit" // record and applied state written, not committed
	CrashApplyCommitted    = "apply.committed"     // committed; Apply has not returned yet
)

// Applied is the applied state after a raft log entry (round.Applied): the
// round outcome most recently applied and the raft index applied so far
// (which may be past that outcome's entry, see SetAppliedIndex).
type Applied = round.Applied

const appliedLen = 8 + 8 + 32 + 32 // Index, Round, Model, ChainHash

func encodeApplied(a Applied) []byte {
	b := make([]byte, 0, appliedLen)
	b = binary.BigEndian.AppendUint64(b, a.Index)
	b = binary.BigEndian.AppendUint64(b, a.Round)
	b = append(b, a.Model[:]...)
	return append(b, a.ChainHash[:]...)
}

func decodeApplied(v []byte) (Applied, error) {
	var a Applied
	if len(v) != appliedLen {
		return a, fmt.Errorf("store: applied state is %d bytes, want %d", len(v), appliedLen)
	}
	a.Index = binary.BigEndian.Uint64(v)
	a.Round = binary.BigEndian.Uint64(v[8:])
	copy(a.Model[:], v[16:])
	copy(a.ChainHash[:], v[48:])
	return a, nil
}

// An outcome record in bucket rounds: Index, Model, ChainHash, Record.
const outcomeHead = 8 + 32 + 32

func encodeOutcome(a Applied) []byte {
	b := make([]byte, 0, outcomeHead+len(a.Record))
	b = binary.BigEndian.AppendUint64(b, a.Index)
	b = append(b, a.Model[:]...)
	b = append(b, a.ChainHash[:]...)
	return append(b, a.Record...)
}

// decodeOutcome copies v out of the transaction.
func decodeOutcome(round uint64, v []byte) (Applied, error) {
	a := Applied{Round: round}
	if len(v) < outcomeHead {
		return a, fmt.Errorf("store: outcome of round %d is %d bytes", round, len(v))
	}
	a.Index = binary.BigEndian.Uint64(v)
	copy(a.Model[:], v[8:])
	copy(a.ChainHash[:], v[40:])
	a.Record = bytes.Clone(v[outcomeHead:])
	return a, nil
}

func getApplied(meta *bolt.Bucket) (Applied, error) {
	v := meta.Get(keyApplied)
	if v == nil {
		return Applied{}, nil
	}
	return decodeApplied(v)
}

// Apply records a round outcome in one bbolt transaction: the outcome record
// under its round, and the applied state {Index, Round, Model, ChainHash}.
// The model blob must already be durable (PutBlob first); Apply returns
// ErrNoBlob otherwise. An Index at or below the applied index, or a round at
// or below the last applied round, is ErrStale. Either everything is
// recorded or nothing is.
func (db *DB) Apply(a Applied) error {
	if err := db.check(); err != nil {
		return err
	}
	if !db.HasBlob(a.Model) {
		return fmt.Errorf("store: apply index %d round %d: model %s: %w", a.Index, a.Round, a.Model, ErrNoBlob)
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		meta, rounds := tx.Bucket(bucketMeta), tx.Bucket(bucketRounds)
		cur, err := getApplied(meta)
		if err != nil {
			return err
		}
		switch {
		case a.Index <= cur.Index:
			return fmt.Errorf("store: apply index %d round %d: applied index is %d: %w", a.Index, a.Round, cur.Index, ErrStale)
		case cur.Model != fedavg.Digest{} && a.Round <= cur.Round:
			return fmt.Errorf("store: apply index %d round %d: applied round is %d: %w", a.Index, a.Round, cur.Round, ErrStale)
		case rounds.Get(u64(a.Round)) != nil:
			return fmt.Errorf("store: apply index %d round %d: round already recorded: %w", a.Index, a.Round, ErrStale)
		}
		if err := rounds.Put(u64(a.Round), encodeOutcome(a)); err != nil {
			return fmt.Errorf("store: apply index %d round %d: %w", a.Index, a.Round, err)
		}
		if err := meta.Put(keyApplied, encodeApplied(a)); err != nil {
			return fmt.Errorf("store: apply index %d round %d: %w", a.Index, a.Round, err)
		}
		return db.crash(CrashApplyBeforeCommit)
	})
	if err != nil {
		return err
	}
	return db.crash(CrashApplyCommitted)
}

// SetAppliedIndex advances the applied raft index past an entry that
// decides no round (a stale or invalid entry, a membership change, an empty
// entry), keeping the latest outcome. An index at or below the applied
// index is ErrStale.
func (db *DB) SetAppliedIndex(index uint64) error {
	if err := db.check(); err != nil {
		return err
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		cur, err := getApplied(meta)
		if err != nil {
			return err
		}
		if index <= cur.Index {
			return fmt.Errorf("store: set applied index %d: applied index is %d: %w", index, cur.Index, ErrStale)
		}
		cur.Index = index
		if err := meta.Put(keyApplied, encodeApplied(cur)); err != nil {
			return fmt.Errorf("store: set applied index %d: %w", index, err)
		}
		return nil
	})
}

// LastApplied returns the applied state, with the latest outcome's Record
// if it is still stored. Before the first Apply or SetAppliedIndex it is the
// zero value.
func (db *DB) LastApplied() (Applied, error) {
	if err := db.check(); err != nil {
		return Applied{}, err
	}
	var a Applied
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		if a, err = getApplied(tx.Bucket(bucketMeta)); err != nil || a.Model == (fedavg.Digest{}) {
			return err
		}
		if v := tx.Bucket(bucketRounds).Get(u64(a.Round)); v != nil {
			o, err := decodeOutcome(a.Round, v)
			if err != nil {
				return err
			}
			a.Record = o.Record
		}
		return nil
	})
	if err != nil {
		return Applied{}, err
	}
	return a, nil
}

// Outcome returns the recorded outcome of a round (Index is the raft index
// of its entry), or ErrNotFound.
func (db *DB) Outcome(round uint64) (Applied, error) {
	if err := db.check(); err != nil {
		return Applied{}, err
	}
	var a Applied
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRounds).Get(u64(round))
		if v == nil {
			return fmt.Errorf("store: outcome of round %d: %w", round, ErrNotFound)
		}
		var err error
		a, err = decodeOutcome(round, v)
		return err
	})
	if err != nil {
		return Applied{}, err
	}
	return a, nil
}

// PruneRounds deletes the outcome records of rounds < keepFrom. Blobs are
// left alone (DeleteBlob them separately), and the applied state is kept.
func (db *DB) PruneRounds(keepFrom uint64) error {
	if err := db.check(); err != nil {
		return err
	}
	if keepFrom == 0 {
		return nil
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		return deleteRange(tx.Bucket(bucketRounds), "rounds", 0, keepFrom-1)
	})
}
