// Package store is a node's crash-safe store.
//
// A store is one directory:
//
//	meta.db    bbolt: metadata, small and transactional
//	blobs/     one file per blob, named by the hex SHA-256 of its bytes
//
// meta.db holds, in buckets created by Open:
//
//	meta     the schema version (SchemaVersion), the applied state
//	         {raft index, round, model digest, chain hash}, and the raft
//	         hard state and snapshot
//	raft     the raft log: entries keyed by big-endian index
//	rounds   the chain of round outcomes: the encoded outcome entry, its
//	         raft index, model digest and chain hash, keyed by big-endian round
//	kv       small values for the node (identity, manifest, peer records,
//	         evidence, counters), one nested bucket per name given to Put
//
// Blob files hold the bytes of models and updates. A blob is verified against
// its name on every read from disk; a corrupt one is removed and reported.
// With Options.BlobCache the store keeps copies of the blobs it wrote or
// verified lately and serves reads from them (the bytes were hashed when
// they came in); a file damaged since is found when it is next read from
// disk, and by any member fetching it, as fetchers verify.
//
// # Apply order
//
// A node that applies a round outcome does, in this order:
//
//  1. PutBlob(model): write blobs/<hex>.*.tmp, fsync it, rename it to
//     blobs/<hex>, fsync the blobs directory;
//  2. Apply: one bbolt transaction writing the outcome record, the model
//     digest and the applied raft index together;
//  3. only then publish anything that depends on it (attestation, Have).
//
// Persist before publish, blob before record: whatever instant the process
// dies at, a reopened store's LastApplied names a model blob that exists and
// verifies, and applied state and outcome record never disagree. The raft log
// is saved (SaveRaft) before its entries are applied, so after a restart the
// entries past LastApplied().Index are still in LoadRaft and are applied
// again; every step above is safe to repeat (PutBlob is idempotent, Apply of
// an index already applied is ErrStale).
//
// # Crash points
//
// Options.Crash is called at named instants; a non-nil error stops the
// operation there, leaving the disk as a process dying at that instant would:
//
//	blob.tmp-written     PutBlob: temp file written and fsynced, not renamed
//	blob.renamed         PutBlob: renamed, directory not fsynced
//	blob.dir-synced      PutBlob: durable, not yet returned
//	raft.before-commit   SaveRaft: transaction not committed
//	apply.before-commit  Apply: transaction not committed
//	apply.committed      Apply: committed, not yet returned
//
// Open removes the temp files an interrupted PutBlob leaves behind.
//
// # Transactions
//
// Bytes read from bbolt are valid only inside their transaction, so every
// method returns copies. Read transactions are short; writers are serialized
// by bbolt. The bbolt file lock is exclusive: a second Open of the same
// directory fails after Options.Timeout. A DB is safe for concurrent use.
package store
