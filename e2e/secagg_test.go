package e2e

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/store"
)

// The layout of what the node keeps of a secure-aggregation round
// (node/secagg.go): the private bucket and, in it, one JSON record per round.
const secaggBucket = "secagg-private"

type secaggRecord struct {
	Round  uint64 `json:"round"`
	Keys   []byte `json:"keys"`
	B      []byte `json:"b"`
	Update []byte `json:"update"`
	Shares *struct {
		Digest fedavg.Digest `json:"digest"`
	} `json:"shares"`
	Input *struct {
		Digest fedavg.Digest `json:"digest"`
	} `json:"input"`
}

// Share blobs start with this tag and the round, big-endian (round/secagg_blob.go).
const shareTag = "gb/sa-shares/1"

// secaggRounds is the consortium's length in TestSecAggKill: the kill
// comes in round 3 or 4, a round or more passes without the victim, and
// at least three rounds are left for it after the restart.
const secaggRounds = 10

// TestSecAggKill runs 5 voters under privacy.mode secagg (t = 4 of 5, so
// one participant may drop) and SIGKILLs a follower in the middle of a
// round, once every member holds every participant's share blob of that
// round (the shares phase is done, the Shares entry about to be committed
// or committed; the input phase waits for the trainers, so the victim
// usually ends in D = U2 \ U3). The consortium must go on committing
// secure-aggregation rounds without it (a round begun after the kill
// commits before the restart), on one digest, nobody halted; the victim's
// private record of the round must hold what it published; restarted, it
// must catch up and be included again. At the end, read from the stopped
// members' stores: every round decided once, a Commit after sa-keys,
// sa-shares and sa-unmask naming masked inputs and exactly t reveals, or
// an Abandon of a phase that fell short of t (logged: see checkRounds);
// no store holds a blob that is a plain update; no private record of a
// decided round is left.
func TestSecAggKill(t *testing.T) {
	c, _ := newCluster(t, clusterSpec{honest: 5, voters: 5, rounds: secaggRounds, minParticipants: 3,
		deadline: "8s", retain: 100, privacy: "{mode: secagg, secagg: {phase_deadline: 2s}}"})
	for _, m := range c.members {
		c.start(m)
	}
	c.waitFor("round 2 applied", 2*time.Minute, c.members, func(s status) bool { return s.Applied >= 2 })
	w := startWatcher(c)
	defer w.close()

	// The victim: a follower.
	var victim *member
	for victim == nil {
		if lead := c.leader(); lead != nil {
			victim = c.members[(slices.Index(c.members, lead)+1)%len(c.members)]
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The trigger: some round r's five share blobs are at every member.
	r, shares := c.waitShares(victim, time.Minute)
	before, _ := c.status(victim)
	lead := c.leader()
	c.kill(victim)
	killed := time.Now()
	t.Logf("SIGKILL %s (follower; leader %s) in round %d, phase %s, applied %d: every member held the round's %d share blobs",
		victim.name(), nameOf(lead), r, before.Phase, before.Applied, len(shares))

	// The victim's private record of round r was persisted before it
	// published: its keys, its self-mask secret and its share blob, one of
	// those every member holds.
	dim := 0
	var kept []byte // the victim's own update of round r, if it had trained
	withStore(t, victim, func(db *store.DB) {
		last, err := db.LastApplied()
		if err != nil {
			t.Fatal(err)
		}
		b, err := db.Blob(last.Model)
		if err != nil {
			t.Fatal(err)
		}
		g, err := fedavg.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		dim = len(g.Weights)
		recs := privateRecords(t, db)
		i := slices.IndexFunc(recs, func(s secaggRecord) bool { return s.Round == r })
		if i < 0 {
			t.Fatalf("%s killed in round %d keeps no private record of it (records of rounds %v)", victim.name(), r, recordRounds(recs))
		}
		s := recs[i]
		switch {
		case len(s.Keys) != 64 || len(s.B) != 32:
			t.Errorf("%s's private record of round %d: %d bytes of keys, %d of b, want 64 and 32", victim.name(), r, len(s.Keys), len(s.B))
		case s.Shares == nil || !slices.Contains(shares, s.Shares.Digest):
			t.Errorf("%s's private record of round %d does not name a share blob the others hold", victim.name(), r)
		}
		for _, o := range recs {
			if o.Round <= last.Round {
				t.Errorf("%s keeps a private record of round %d, decided (applied %d)", victim.name(), o.Round, last.Round)
			}
		}
		if len(s.Update) > 0 {
			if len(s.Update) != 4*dim {
				t.Errorf("%s keeps an update of %d bytes, want %d", victim.name(), len(s.Update), 4*dim)
			}
			kept = s.Update
		}
		t.Logf("%s's private record of round %d: keys, b, shares %s, own update kept %v, input %v",
			victim.name(), r, s.Shares.Digest.String()[:12], len(s.Update) > 0, s.Input != nil)
	})

	// Without the victim: two more rounds applied, the live members on
	// one digest, nobody halted.
	live := slices.DeleteFunc(slices.Clone(c.members), func(m *member) bool { return m == victim })
	// A round that began after the kill cannot name the victim: wait for
	// one to commit (a live member logs the apply), then for the four
	// to agree.
	cr := waitCommit(t, live, r, time.Minute)
	down := &consortium{t: t, root: c.root, members: live}
	ra, da, err := down.agree(20 * time.Second)
	if err != nil {
		c.dumpLogs()
		t.Fatal(err)
	}
	t.Logf("without %s: round %d committed; the four others at applied round %d, model %s, %.1f s after the kill",
		victim.name(), cr, ra, da[:12], time.Since(killed).Seconds())
	if ra+3 > secaggRounds {
		t.Fatalf("the consortium is at round %d of %d before the victim is restarted: too few rounds left to see it included again", ra, secaggRounds)
	}

	// Restarted, the victim catches up and every member ends on one digest.
	restarted := ra
	c.start(victim)
	c.waitFor("every member done", time.Minute, c.members, func(s status) bool { return s.Applied >= secaggRounds })
	rf, df, err := c.agree(20 * time.Second)
	if err != nil {
		c.dumpLogs()
		t.Fatal(err)
	}
	t.Logf("every member at applied round %d, model %s", rf, df[:12])
	w.poll()
	for _, p := range w.problems() {
		t.Error(p)
	}
	for _, m := range c.members {
		c.stop(m)
	}

	// From the stores: the rounds, the blobs, the private records.
	var ents []*round.Entry
	for i, m := range c.members {
		withStore(t, m, func(db *store.DB) {
			last, err := db.LastApplied()
			if err != nil {
				t.Fatal(err)
			}
			if last.Round != rf || last.Model.String() != df {
				t.Errorf("%s's store: applied round %d model %s, status said %d %s", m.name(), last.Round, last.Model, rf, df)
			}
			if i == 0 {
				ents = secaggEntries(t, db)
			}
			for _, s := range privateRecords(t, db) {
				if s.Round <= last.Round {
					t.Errorf("%s keeps a private secagg record of round %d, decided (applied %d)", m.name(), s.Round, last.Round)
				}
			}
			checkBlobs(t, m, db, dim, kept)
		})
	}
	names := map[string]string{}
	for _, m := range c.members {
		names[m.id] = m.name()
	}
	checkRounds(t, ents, names, victim.id, r, restarted, rf)
}

// waitCommit waits until one of ms logs applying a Commit of a round
// after r, and returns that round.
func waitCommit(t *testing.T, ms []*member, r uint64, limit time.Duration) uint64 {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		for _, m := range ms {
			b, _ := os.ReadFile(filepath.Join(m.dir, "run.log"))
			for line := range strings.Lines(string(b)) {
				var l struct {
					Msg   string `json:"msg"`
					Round uint64 `json:"round"`
					Kind  string `json:"kind"`
				}
				if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "applied" && l.Kind == string(round.EntryCommit) && l.Round > r {
					return l.Round
				}
			}
		}
		if time.Now().After(deadline) {
			for _, m := range ms {
				t.Logf("--- %s\n%s", m.name(), logExcerpt(m, 10, `"applied"`, "alarm"))
			}
			t.Fatalf("no member logged applying a Commit of a round after %d within %v", r, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitShares waits until, for the round in progress at the victim, every
// member holds as many share blobs of that round as there are members, the
// same ones, and returns the round and their digests.
func (c *consortium) waitShares(victim *member, limit time.Duration) (uint64, []fedavg.Digest) {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	seen := map[string]uint64{} // blob file -> round of a share blob, 0 for another blob
	for {
		s, err := c.status(victim)
		if err == nil && s.Phase != "done" {
			var common []fedavg.Digest
			for i, m := range c.members {
				var ds []fedavg.Digest
				files, _ := os.ReadDir(filepath.Join(m.dir, "store", "blobs"))
				for _, f := range files {
					name := f.Name()
					if len(name) != 64 {
						continue // a temp file
					}
					r, ok := seen[name]
					if !ok {
						r = shareRound(filepath.Join(m.dir, "store", "blobs", name))
						seen[name] = r
					}
					if r == s.Round {
						var d fedavg.Digest
						hex.Decode(d[:], []byte(name))
						ds = append(ds, d)
					}
				}
				if i == 0 {
					common = ds
				} else {
					common = slices.DeleteFunc(common, func(d fedavg.Digest) bool { return !slices.Contains(ds, d) })
				}
			}
			if len(common) == len(c.members) {
				return s.Round, common
			}
		}
		if time.Now().After(deadline) {
			c.dumpLogs()
			c.t.Fatalf("no round's share blobs at every member within %v", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shareRound is the round of the share blob in file, 0 if it is none.
// Blobs are renamed into place whole, so a file that exists is complete.
func shareRound(file string) uint64 {
	f, err := os.Open(file)
	if err != nil {
		return 0
	}
	defer f.Close()
	h := make([]byte, len(shareTag)+8)
	if _, err := f.Read(h); err != nil || string(h[:len(shareTag)]) != shareTag {
		return 0
	}
	return binary.BigEndian.Uint64(h[len(shareTag):])
}

func nameOf(m *member) string {
	if m == nil {
		return "unknown"
	}
	return m.name()
}

// withStore opens a stopped member's store.
func withStore(t *testing.T, m *member, f func(*store.DB)) {
	t.Helper()
	db, err := store.Open(filepath.Join(m.dir, "store"), store.Options{})
	if err != nil {
		t.Fatalf("%s's store: %v", m.name(), err)
	}
	defer db.Close()
	f(db)
}

func privateRecords(t *testing.T, db *store.DB) []secaggRecord {
	t.Helper()
	vs, err := db.List(secaggBucket)
	if err != nil {
		t.Fatal(err)
	}
	var out []secaggRecord
	for _, v := range vs {
		var s secaggRecord
		if err := json.Unmarshal(v, &s); err != nil {
			t.Fatalf("a private secagg record: %v", err)
		}
		out = append(out, s)
	}
	return out
}

func recordRounds(recs []secaggRecord) []uint64 {
	var out []uint64
	for _, s := range recs {
		out = append(out, s.Round)
	}
	return out
}

// secaggEntries are the round entries of a store's raft log.
func secaggEntries(t *testing.T, db *store.DB) []*round.Entry {
	t.Helper()
	// retain_rounds keeps the whole run in the log; checkRounds finds
	// every round's outcome in it.
	_, _, raw, err := db.LoadRaft()
	if err != nil {
		t.Fatal(err)
	}
	var out []*round.Entry
	for _, ent := range raw {
		if e, err := round.DecodeEntry(ent.GetData()); err == nil {
			out = append(out, e)
		}
	}
	return out
}

// checkBlobs classifies every blob of a stopped member's store: models
// (fedavg-encoded globals), share and reveal blobs of some round, and
// masked inputs (dim+1 words); anything else, and above all a plain update
// (4*dim bytes of float32, what a round without secure aggregation
// gossips), is an error, as is a blob equal to the update the victim kept.
func checkBlobs(t *testing.T, m *member, db *store.DB, dim int, kept []byte) {
	t.Helper()
	ds, err := db.Blobs()
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, d := range ds {
		b, err := db.Blob(d)
		if err != nil {
			t.Fatal(err)
		}
		if kept != nil && string(b) == string(kept) {
			t.Errorf("%s stores blob %s: the victim's own update, kept private", m.name(), d.String()[:12])
		}
		var r uint64
		if len(b) >= 22 {
			r = binary.BigEndian.Uint64(b[14:22]) // after either 14-byte tag
		}
		kind := "other"
		if len(b) == 4*dim {
			kind = "plain update"
		} else if _, err := fedavg.Decode(b); err == nil {
			kind = "model"
		} else if _, err := round.DecodeShareBlob(r, b); err == nil {
			kind = "shares"
		} else if _, err := round.DecodeRevealBlob(r, b); err == nil {
			kind = "reveal"
		} else if _, err := round.DecodeInput(b, dim+1); err == nil {
			kind = "input"
		}
		count[kind]++
		if kind == "plain update" || kind == "other" {
			t.Errorf("%s stores blob %s of %d bytes: %s (an update is %d bytes)", m.name(), d.String()[:12], len(b), kind, 4*dim)
		}
	}
	var parts []string
	for _, k := range []string{"model", "shares", "input", "reveal"} {
		parts = append(parts, fmt.Sprintf("%d %s", count[k], k))
		if count[k] == 0 {
			t.Errorf("%s's store holds no %s blob", m.name(), k)
		}
	}
	t.Logf("%s's blobs: %s", m.name(), strings.Join(parts, ", "))
}

// checkRounds checks the raft log of the run: every round decided by a
// secure-aggregation Commit (its inputs masked, exactly t = 4 reveals)
// after its three phase entries, or by an Abandon of a phase that fell
// short; a Commit from the round of the kill on excludes the victim, one
// after the restart includes it again.
func checkRounds(t *testing.T, ents []*round.Entry, names map[string]string, victim string, killed, restarted, last uint64) {
	t.Helper()
	has := func(e *round.Entry) bool {
		return slices.ContainsFunc(e.Included, func(a *round.Message) bool { return a.Author.String() == victim })
	}
	phases := map[uint64][]*round.Entry{}
	decided := map[uint64]*round.Entry{}
	for _, e := range ents {
		switch e.Kind {
		case round.EntryKeys, round.EntryShares, round.EntryUnmask:
			phases[e.Round] = append(phases[e.Round], e)
		case round.EntryCommit, round.EntryAbandon:
			if decided[e.Round] != nil {
				t.Errorf("round %d decided twice", e.Round)
			}
			decided[e.Round] = e
		default:
			t.Errorf("round %d: a %s entry under secure aggregation", e.Round, e.Kind)
		}
	}
	var without, with, abandoned []uint64
	for r := uint64(1); r <= last; r++ {
		e := decided[r]
		if e == nil {
			t.Errorf("round %d: no Commit or Abandon in the log", r)
			continue
		}
		ps := phases[r]
		var sets []string
		for _, p := range ps {
			sets = append(sets, fmt.Sprintf("%s %d%s", p.Kind, len(p.Included), missing(p.Included, names)))
		}
		if e.Kind == round.EntryAbandon {
			// Tolerated, as long as the consortium goes on committing (the
			// checks below): an Abandon must be a secure-aggregation phase
			// falling short of t, in the phase after those applied. A
			// round with the victim down has no slack (t = 4 of the 4
			// others), and a KeyAd or an echo that arrives a few ms before
			// its receiver enters the round or the phase is dropped and
			// only repeated deadline/4 later, the default phase deadline.
			t.Logf("round %d: abandoned after %s: %s", r, strings.Join(sets, ", "), e.Reason)
			abandoned = append(abandoned, r)
			if len(ps) > 3 {
				t.Errorf("round %d abandoned after %d phase entries", r, len(ps))
			} else if want := fmt.Sprintf("secure aggregation, %s phase: ", round.SecAggPhase(len(ps))); !strings.HasPrefix(e.Reason, want) {
				t.Errorf("round %d abandoned after %d phase entries: %q, want a reason starting %q", r, len(ps), e.Reason, want)
			}
			for i, p := range ps {
				if want := [...]round.EntryKind{round.EntryKeys, round.EntryShares, round.EntryUnmask}[min(i, 2)]; p.Kind != want {
					t.Errorf("round %d's phase entry %d is %s, want %s", r, i, p.Kind, want)
				}
			}
			continue
		}
		t.Logf("round %d: %s; commit of %d inputs%s, %d reveals", r, strings.Join(sets, ", "), len(e.Included), missing(e.Included, names), len(e.Reveals))
		if len(ps) != 3 || ps[0].Kind != round.EntryKeys || ps[1].Kind != round.EntryShares || ps[2].Kind != round.EntryUnmask {
			t.Errorf("round %d commits after phase entries %v, want sa-keys, sa-shares, sa-unmask", r, sets)
		}
		for _, a := range e.Included {
			if a.Kind != round.KindInput {
				t.Errorf("round %d's Commit includes a %s, not a masked input", r, a.Kind)
			}
		}
		if len(e.Reveals) != 4 {
			t.Errorf("round %d's Commit has %d reveals, want t = 4", r, len(e.Reveals))
		}
		if r >= killed && !has(e) {
			without = append(without, r)
		}
		if r > restarted && has(e) {
			with = append(with, r)
		}
	}
	if len(without) == 0 {
		t.Errorf("no Commit from round %d on excludes the killed member", killed)
	}
	if len(with) == 0 {
		t.Errorf("no Commit after the restart (at applied round %d) includes the restarted member", restarted)
	}
	t.Logf("commits without the victim: rounds %v; with it again after the restart: rounds %v; abandoned: rounds %v", without, with, abandoned)
}

// missing names the members an entry's set leaves out, for the log.
func missing(included []*round.Message, names map[string]string) string {
	var out []string
	for id, name := range names {
		if !slices.ContainsFunc(included, func(a *round.Message) bool { return a.Author.String() == id }) {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return ""
	}
	slices.Sort(out)
	return " (without " + strings.Join(out, ", ") + ")"
}
