package audit_test

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/globalbrain/globalbrain/audit"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/member/membertest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/store"
)

// runCluster runs a cluster for rounds, stops it and returns it: its
// members' stores are closed and kept.
func runCluster(t *testing.T, o membertest.Options) *membertest.Cluster {
	t.Helper()
	c := membertest.MakeCluster(t, o)
	c.RunUntil(t, func() bool { return c.AllApplied(uint64(o.Rounds)) })
	for i := range c.Members {
		c.Stop(i)
	}
	return c
}

func auditDir(t *testing.T, dir string, man *manifest.Manifest) *audit.Report {
	t.Helper()
	db, err := store.OpenReadOnly(dir, 0)
	require.NoError(t, err)
	defer db.Close()
	rep, err := audit.Run(db, man)
	require.NoError(t, err)
	return rep
}

// entries are the committed entries the store records, decoded by round.
func entries(t *testing.T, dir string, rounds int) []*round.Entry {
	t.Helper()
	db, err := store.OpenReadOnly(dir, 0)
	require.NoError(t, err)
	defer db.Close()
	var out []*round.Entry
	for r := 1; r <= rounds; r++ {
		o, err := db.Outcome(uint64(r))
		require.NoError(t, err)
		e, err := round.DecodeEntry(o.Record)
		require.NoError(t, err)
		out = append(out, e)
	}
	return out
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	require.NoError(t, os.CopyFS(dst, os.DirFS(src)))
	return dst
}

// failedAt asserts a failure of round r whose reason contains want.
func failedAt(t *testing.T, rep *audit.Report, r uint64, want string) {
	t.Helper()
	require.False(t, rep.OK)
	require.True(t, slices.ContainsFunc(rep.Failures, func(f audit.Failure) bool { return f.Round == r && strings.Contains(f.Reason, want) }),
		"no failure of round %d with %q in %v", r, want, rep.Failures)
}

func TestAuditPlainRounds(t *testing.T) {
	const rounds = 3
	c := runCluster(t, membertest.Options{Members: 4, Rounds: rounds, Trainers: map[int]node.Trainer{3: membertest.Silent{}}})
	dir := c.Dirs[0]
	rep := auditDir(t, dir, c.Manifest)
	require.True(t, rep.OK, "%v", rep.Failures)
	require.Equal(t, uint64(rounds), rep.AppliedRound)
	require.Equal(t, c.IDs[0].ID.String(), rep.Owner)
	require.Len(t, rep.Rounds, rounds)
	require.Equal(t, rounds, rep.Counts.Recomputed, "every model recomputed from its base and the kept updates")
	require.Equal(t, rounds, rep.Counts.Chained)

	// Per round: the contributors and examples of the committed entries.
	ents := entries(t, dir, rounds)
	for i, e := range ents {
		rd := rep.Rounds[i]
		require.Equal(t, "commit", rd.Kind)
		require.Equal(t, e.Base.String(), rd.Base)
		require.Equal(t, e.Result.String(), rd.Result)
		require.Equal(t, "recomputed", rd.Model)
		require.Len(t, rd.Contributions, len(e.Included))
		var sum int64
		for j, a := range e.Included {
			require.Equal(t, a.Author.String(), rd.Contributions[j].Peer)
			require.Equal(t, a.Examples, rd.Contributions[j].Examples)
			require.Equal(t, a.Digest.String(), rd.Contributions[j].Update)
			sum += a.Examples
		}
		require.Equal(t, sum, rd.Examples)
		require.Equal(t, int64(100*len(e.Included)), rd.Examples, "FixedTrainer claims 100 examples")
		require.Len(t, rd.Sampled, 4, "fraction 1: every member sampled")
		if i > 0 {
			require.Equal(t, rep.Rounds[i-1].Result, rd.Base, "each round builds on the previous one's model")
		}
	}

	// The ledger: members 0-2 in every round with 100 examples each, the
	// silent member 3 sampled every round and never included.
	require.Len(t, rep.Ledger, 4)
	for _, m := range rep.Ledger {
		require.Equal(t, rounds, m.Sampled, m.Peer)
		if m.Peer == c.IDs[3].ID.String() {
			require.Zero(t, m.Included)
			require.Equal(t, rounds, m.NotIncluded)
			continue
		}
		require.Equal(t, rounds, m.Included, m.Peer)
		require.Equal(t, int64(100*rounds), m.Examples, m.Peer)
		require.Zero(t, m.NotIncluded)
	}

	// JSON: the same content, machine-readable.
	b, err := json.Marshal(rep)
	require.NoError(t, err)
	var back map[string]any
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, true, back["ok"])
	require.Len(t, back["rounds"], rounds)
	require.NotEmpty(t, back["cannot_know"])

	var text strings.Builder
	require.NoError(t, rep.WriteText(&text))
	t.Log("\n" + text.String())
	require.Contains(t, text.String(), "OK: the log verifies")
	require.Contains(t, text.String(), "3 updates, 300 examples")

	t.Run("model blob flipped", func(t *testing.T) {
		d := copyDir(t, dir)
		p := filepath.Join(d, "blobs", ents[1].Result.String())
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		b[len(b)/2] ^= 1
		require.NoError(t, os.WriteFile(p, b, 0o600))
		rep := auditDir(t, d, c.Manifest)
		failedAt(t, rep, 2, "model blob "+ents[1].Result.String()[:12]+" does not hash to its digest")
		_, err = os.Stat(p)
		require.NoError(t, err, "the audit never removes anything")
		require.Len(t, rep.Failures, 1, "the chain and round 3 still verify: %v", rep.Failures)
	})
	t.Run("update blob truncated", func(t *testing.T) {
		d := copyDir(t, dir)
		p := filepath.Join(d, "blobs", ents[0].Included[1].Digest.String())
		require.NoError(t, os.Truncate(p, 100))
		rep := auditDir(t, d, c.Manifest)
		failedAt(t, rep, 1, "does not hash to its digest (corrupt or truncated)")
	})
	t.Run("signature broken", func(t *testing.T) {
		d := copyDir(t, dir)
		rewriteLast(t, d, rounds, func(e *round.Entry) { e.Included[0].Sig[3] ^= 0x40 })
		rep := auditDir(t, d, c.Manifest)
		failedAt(t, rep, rounds, "signature does not verify")
		failedAt(t, rep, rounds, "the raft log's entry at index")
	})
	t.Run("examples inflated", func(t *testing.T) {
		// A forger raising a member's claim must re-sign it: without the
		// key, the signature fails.
		d := copyDir(t, dir)
		rewriteLast(t, d, rounds, func(e *round.Entry) { e.Included[1].Examples = 60000 })
		failedAt(t, auditDir(t, d, c.Manifest), rounds, "signature does not verify")
	})
	t.Run("chain hash broken", func(t *testing.T) {
		d := copyDir(t, dir)
		rewriteLast(t, d, rounds, func(e *round.Entry) { e.Prev[0] ^= 1 })
		failedAt(t, auditDir(t, d, c.Manifest), rounds, "chain broken")
	})
	t.Run("meta.db truncated", func(t *testing.T) {
		d := copyDir(t, dir)
		require.NoError(t, os.Truncate(filepath.Join(d, "meta.db"), 4096))
		db, err := store.OpenReadOnly(d, 0)
		if err == nil {
			defer db.Close()
			_, err = audit.Run(db, c.Manifest)
		}
		require.Error(t, err)
		require.Contains(t, err.Error(), "meta.db")
	})
	t.Run("wrong manifest", func(t *testing.T) {
		other := *c.Manifest
		other.Name = "another consortium"
		db, err := store.OpenReadOnly(dir, 0)
		require.NoError(t, err)
		defer db.Close()
		_, err = audit.Run(db, &other)
		require.ErrorContains(t, err, "belongs to consortium")
	})
}

// rewriteLast edits the last round's recorded entry in a copied store, as
// a forger with write access would, and recomputes its chain hash and the
// applied state to match (the store's layout: store/apply.go).
func rewriteLast(t *testing.T, dir string, r int, edit func(*round.Entry)) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		rounds := tx.Bucket([]byte("rounds"))
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], uint64(r))
		v := slices.Clone(rounds.Get(key[:]))
		e, err := round.DecodeEntry(v[72:])
		require.NoError(t, err)
		edit(e)
		rec := e.Encode()
		chain := round.ChainHash(e.Prev, rec) // consistent with the edited record
		nv := append(append(append(slices.Clone(v[:8]), e.Result[:]...), chain[:]...), rec...)
		if err := rounds.Put(key[:], nv); err != nil {
			return err
		}
		meta := tx.Bucket([]byte("meta"))
		applied := slices.Clone(meta.Get([]byte("applied")))
		copy(applied[48:], chain[:])
		return meta.Put([]byte("applied"), applied)
	}))
}

func TestAuditSecAgg(t *testing.T) {
	const rounds = 2
	c := runCluster(t, membertest.Options{Members: 5, Rounds: rounds, Privacy: manifest.Privacy{Mode: manifest.PrivacySecAgg},
		Trainers: map[int]node.Trainer{4: membertest.Silent{}}})
	dir := c.Dirs[0]
	rep := auditDir(t, dir, c.Manifest)
	require.True(t, rep.OK, "%v", rep.Failures)
	require.Equal(t, rounds, rep.Counts.Recomputed, "every sum unmasked again from the kept inputs and reveals")
	ents := entries(t, dir, rounds)
	for i, e := range ents {
		rd := rep.Rounds[i]
		require.Len(t, rd.Contributions, len(e.Included))
		for j, a := range e.Included {
			require.Equal(t, a.Author.String(), rd.Contributions[j].Peer)
			require.True(t, rd.Contributions[j].Masked)
			require.Zero(t, rd.Contributions[j].Examples, "a masked input's count is not known")
		}
		require.Equal(t, int64(100*len(e.Included)), rd.Examples, "the unmasked sum's weight: 100 per input")
		require.Len(t, rd.Revealers, len(e.Reveals))
		require.Equal(t, []string{c.IDs[4].ID.String()}, rd.Dropped, "the silent member shared, then gave no input")
	}
	for _, m := range rep.Ledger {
		if m.Peer == c.IDs[4].ID.String() {
			require.Equal(t, rounds, m.Dropped)
			require.Zero(t, m.Included)
			continue
		}
		require.Equal(t, rounds, m.Masked, m.Peer)
	}
	require.Contains(t, strings.Join(rep.Unknown, "\n"), "masked")
	var text strings.Builder
	require.NoError(t, rep.WriteText(&text))
	t.Log("\n" + text.String())

	t.Run("masked input flipped", func(t *testing.T) {
		d := copyDir(t, dir)
		p := filepath.Join(d, "blobs", ents[1].Included[0].Digest.String())
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		b[8] ^= 1
		require.NoError(t, os.WriteFile(p, b, 0o600))
		failedAt(t, auditDir(t, d, c.Manifest), 2, "does not hash to its digest")
	})
	t.Run("reveal signature broken", func(t *testing.T) {
		d := copyDir(t, dir)
		rewriteLast(t, d, rounds, func(e *round.Entry) { e.Reveals[0].Sig[0] ^= 1 })
		failedAt(t, auditDir(t, d, c.Manifest), rounds, "sa-reveal of")
	})
}

// A store past its retention window: the raft log compacted behind a
// snapshot and the old blobs collected. What is gone is said, not failed.
func TestAuditCompacted(t *testing.T) {
	const rounds = 8
	c := runCluster(t, membertest.Options{Members: 3, Rounds: rounds, Retain: 1})
	rep := auditDir(t, c.Dirs[2], c.Manifest)
	require.True(t, rep.OK, "%v", rep.Failures)
	require.Len(t, rep.Rounds, rounds)
	require.Equal(t, rounds, rep.Counts.Chained, "the outcome records are all kept: the chain is whole")
	require.Less(t, rep.Counts.Recomputed, rounds, "old update blobs are collected")
	require.Positive(t, rep.Counts.Recomputed)
	var text strings.Builder
	require.NoError(t, rep.WriteText(&text))
	t.Log("\n" + text.String())
}

// Under the distributed mode the audit rebuilds each round's noise
// parameters (t - gamma of its sample) and unmasks and decodes the sum
// again: it reaches the model the log names, and the weight is |U3|.
func TestAuditDistributed(t *testing.T) {
	const rounds = 2
	c := runCluster(t, membertest.Options{Members: 5, Rounds: rounds,
		Privacy: manifest.Privacy{Mode: manifest.PrivacyDistributed, DP: manifest.DP{Z: 0.01, Clip: 1, Epsilon: 1e6}}})
	rep := auditDir(t, c.Dirs[0], c.Manifest)
	require.True(t, rep.OK, "%v", rep.Failures)
	require.Equal(t, rounds, rep.Counts.Recomputed, "every noisy sum decoded again")
	for i, e := range entries(t, c.Dirs[0], rounds) {
		require.Equal(t, int64(len(e.Included)), rep.Rounds[i].Examples, "the unweighted mean: one per input")
	}
}
