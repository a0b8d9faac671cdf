// Package audit verifies a node's store offline and turns its log into a
// contribution record: the hash chain of the applied round outcomes, every
// signature an outcome carries (announcements, Haves, reveals and the
// secure-aggregation phase entries it names), the models recomputed from
// the kept blobs with the manifest's strategy, and the stored model blobs
// against the digests the log names. It reads a store opened with
// store.OpenReadOnly and never writes; Run returns a Report whose Failures
// name the round and the reason of every check that did not hold, and whose
// CannotKnow says what the store does not record.
package audit
