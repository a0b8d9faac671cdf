package store

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Put stores value under key in the named bucket, creating the bucket on
// first use. Buckets are a namespace of their own, apart from the store's
// internal ones. The value is copied.
func (db *DB) Put(bucket, key string, value []byte) error {
	if err := db.check(); err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketKV).CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		return b.Put([]byte(key), value)
	})
	if err != nil {
		return fmt.Errorf("store: put %s/%s: %w", bucket, key, err)
	}
	return nil
}

// Get returns a copy of the value stored under key in the named bucket, or
// ErrNotFound.
func (db *DB) Get(bucket, key string) ([]byte, error) {
	if err := db.check(); err != nil {
		return nil, err
	}
	var out []byte
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Bucket([]byte(bucket))
		if b == nil {
			return ErrNotFound
		}
		v := b.Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		out = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: get %s/%s: %w", bucket, key, err)
	}
	return out, nil
}

// Delete removes key from the named bucket. A missing key is not an error.
func (db *DB) Delete(bucket, key string) error {
	if err := db.check(); err != nil {
		return err
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("store: delete %s/%s: %w", bucket, key, err)
	}
	return nil
}

// List returns copies of every value in the named bucket, in key order
// (none for a bucket never written).
func (db *DB) List(bucket string) ([][]byte, error) {
	if err := db.check(); err != nil {
		return nil, err
	}
	var out [][]byte
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			out = append(out, bytes.Clone(v))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w", bucket, err)
	}
	return out, nil
}
