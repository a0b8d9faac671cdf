package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/globalbrain/globalbrain/round"
	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout version this package writes into the meta
// bucket. Open refuses a store written with any other version.
const SchemaVersion uint64 = 1

// DefaultTimeout is how long Open waits for the exclusive lock on meta.db
// when Options.Timeout is not set.
const DefaultTimeout = time.Second

// Errors returned by the store. Test for them with errors.Is: they are
// wrapped with the operation, path or digest concerned.
var (
	// ErrNotFound: no outcome for that round, or no value for that key.
	ErrNotFound = errors.New("store: not found")
	// ErrNoBlob: no blob file with that digest.
	ErrNoBlob = errors.New("store: no such blob")
	// ErrCorruptBlob: a blob file whose bytes do not hash to its name. The
	// file has been removed; fetch the blob again.
	ErrCorruptBlob = errors.New("store: corrupt blob")
	// ErrStale: an Apply or SetAppliedIndex at or below the applied index
	// (or for a round already decided), or a snapshot older than the stored one.
	ErrStale = fmt.Errorf("store: %w", round.ErrStale)
	// ErrSchema: meta.db carries a schema version this build cannot read.
	ErrSchema = errors.New("store: unsupported schema version")
	// ErrClosed: the DB has been closed.
	ErrClosed = errors.New("store: closed")
)

// Bucket names in meta.db. All are created by Open.
var (
	bucketMeta   = []byte("meta")   // schema version, applied state, raft hard state and snapshot
	bucketRaft   = []byte("raft")   // raft log entries keyed by big-endian index
	bucketRounds = []byte("rounds") // outcome records keyed by big-endian round
	bucketKV     = []byte("kv")     // one nested bucket per Put/Get bucket name
)

// Keys in the meta bucket.
var (
	keySchema    = []byte("schema")
	keyApplied   = []byte("applied")
	keyHardState = []byte("raft.hardstate")
	keySnapshot  = []byte("raft.snapshot")
)

const (
	metaFile = "meta.db"
	blobDir  = "blobs"
	tmpExt   = ".tmp"
)

// Options configures Open. The zero value is the production setting.
type Options struct {
	// Timeout bounds the wait for the exclusive file lock on meta.db
	// (another process, or another DB in this process, holding the same
	// directory). Zero or negative means DefaultTimeout.
	Timeout time.Duration
	// NoSync skips every fsync (bbolt's and the blob files'). Only for tests
	// and simulations: a machine crash can then lose or tear anything.
	NoSync bool
	// Crash, if set, is called at each named crash point (see the package
	// documentation). A non-nil error aborts the operation at that instant
	// and is returned as is, leaving the disk as a process dying there
	// would. Tests use it to check recovery; production leaves it nil.
	Crash func(point string) error
	// BlobCache, if positive, is how many bytes of blob contents the store
	// keeps in memory after writing or verifying them, so that reading a
	// blob back (the round's inputs, aggregated and then applied; a blob
	// served to member after member) neither reads nor hashes the file
	// again. Zero or negative keeps none: every Blob reads the file and
	// hashes it. member.Open sets DefaultBlobCache when it is zero.
	BlobCache int64
}

// DB is a node's crash-safe store: bbolt metadata in dir/meta.db and
// content-addressed blob files in dir/blobs. It is safe for concurrent use.
type DB struct {
	dir   string
	blobs string
	bolt  *bolt.DB
	opts  Options
	cache *blobCache // nil: none
	// readOnly: opened by OpenReadOnly; files are never written or removed.
	readOnly bool
	closed   atomic.Bool
	once     sync.Once
	closeEr  error
}

var _ io.Closer = (*DB)(nil)

// Open opens the store in dir, creating dir (0700), dir/meta.db and
// dir/blobs as needed. It creates all buckets, writes the schema version into
// a new store and checks it in an existing one (ErrSchema if it differs), and
// removes *.tmp files left in blobs/ by an interrupted PutBlob. Open fails
// after opts.Timeout if another DB holds the directory.
func Open(dir string, opts Options) (*DB, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	db := &DB{dir: dir, blobs: filepath.Join(dir, blobDir), opts: opts, cache: newBlobCache(opts.BlobCache)}
	for _, d := range []string{dir, db.blobs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("store: %s: %w", d, err)
		}
	}
	path := filepath.Join(dir, metaFile)
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout, NoSync: opts.NoSync})
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	db.bolt = b
	// Everything below runs under the file lock, so it cannot disturb
	// another DB that has the directory open.
	if err := db.init(path); err != nil {
		b.Close()
		return nil, err
	}
	if err := db.removeTemps(); err != nil {
		b.Close()
		return nil, err
	}
	if !opts.NoSync {
		// Make the new directory entries (dir, blobs, meta.db) durable.
		for _, d := range []string{dir, db.blobs} {
			if err := syncDir(d); err != nil {
				b.Close()
				return nil, err
			}
		}
	}
	return db, nil
}

// init creates the buckets and writes or checks the schema version.
func (db *DB) init(path string) error {
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketRaft, bucketRounds, bucketKV} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(keySchema)
		if v == nil {
			return meta.Put(keySchema, u64(SchemaVersion))
		}
		if len(v) != 8 {
			return fmt.Errorf("schema version is %d bytes: %w", len(v), ErrSchema)
		}
		if got := binary.BigEndian.Uint64(v); got != SchemaVersion {
			return fmt.Errorf("schema version %d, this build reads %d: %w", got, SchemaVersion, ErrSchema)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: %s: %w", path, err)
	}
	return nil
}

// Close closes meta.db. It is idempotent: later calls return the first
// call's result. Every other method returns ErrClosed afterwards.
func (db *DB) Close() error {
	db.once.Do(func() {
		db.closed.Store(true)
		if err := db.bolt.Close(); err != nil {
			db.closeEr = fmt.Errorf("store: %s: %w", filepath.Join(db.dir, metaFile), err)
		}
	})
	return db.closeEr
}

// Dir returns the directory the store lives in.
func (db *DB) Dir() string { return db.dir }

func (db *DB) check() error {
	if db.closed.Load() {
		return ErrClosed
	}
	return nil
}

// crash calls the test hook for a crash point.
func (db *DB) crash(point string) error {
	if db.opts.Crash == nil {
		return nil
	}
	return db.opts.Crash(point)
}

// removeTemps deletes blob temp files that an interrupted PutBlob left.
func (db *DB) removeTemps() error {
	ents, err := os.ReadDir(db.blobs)
	if err != nil {
		return fmt.Errorf("store: %s: %w", db.blobs, err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), tmpExt) {
			p := filepath.Join(db.blobs, e.Name())
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("store: %s: %w", p, err)
			}
		}
	}
	return nil
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
