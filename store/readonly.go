package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrReadOnly: a write to a store opened with OpenReadOnly.
var ErrReadOnly = errors.New("store: opened read-only")

// OpenReadOnly opens an existing store for reading only (an offline audit):
// meta.db is opened read-only under a shared lock, nothing is created,
// repaired or removed (a corrupt blob is reported, not deleted), and every
// write fails. A running node holds the exclusive lock, so OpenReadOnly
// fails after timeout (zero or negative: DefaultTimeout) while it runs.
func OpenReadOnly(dir string, timeout time.Duration) (*DB, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	path := filepath.Join(dir, metaFile)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("store: %s: %w (not a node's store directory?)", dir, err)
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: true})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("store: %s is in use (is its node running? stop it first): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	db := &DB{dir: dir, blobs: filepath.Join(dir, blobDir), bolt: b, readOnly: true}
	err = b.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketRaft, bucketRounds, bucketKV} {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("no %s bucket: not a node's store", name)
			}
		}
		v := tx.Bucket(bucketMeta).Get(keySchema)
		switch {
		case len(v) != 8:
			return fmt.Errorf("schema version is %d bytes: %w", len(v), ErrSchema)
		case binary.BigEndian.Uint64(v) != SchemaVersion:
			return fmt.Errorf("schema version %d, this build reads %d: %w", binary.BigEndian.Uint64(v), SchemaVersion, ErrSchema)
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	return db, nil
}

func (db *DB) checkWrite() error {
	if err := db.check(); err != nil {
		return err
	}
	if db.readOnly {
		return ErrReadOnly
	}
	return nil
}
