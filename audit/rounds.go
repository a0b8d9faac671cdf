package audit

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/store"
)

// recorder is the strategy, keeping the updates the last Aggregate saw
// (under secure aggregation: the unmasked sum and its weight).
type recorder struct {
	fedavg.Strategy
	ups []fedavg.Update
}

func (r *recorder) Aggregate(rd uint64, g *fedavg.Global, ups []fedavg.Update) (*fedavg.Global, error) {
	r.ups = ups
	return r.Strategy.Aggregate(rd, g, ups)
}

// chainState is what the previous round left.
type chainState struct {
	known bool // the previous outcome is in this store
	index uint64
	model round.Digest
	chain round.Digest
	g     *fedavg.Global // G(r-1) in memory, nil if neither recomputed nor held
}

// rounds walks the applied outcomes from round 1 to the applied round.
func (a *audit) rounds(g0 *fedavg.Global, last store.Applied) error {
	prev := chainState{known: true, model: g0.Digest(), g: g0}
	var firstInstalled uint64 // the first round installed from a snapshot: the rounds before it need not be here
	for r := last.Round; r >= 1; r-- {
		o, err := a.db.Outcome(r)
		if err == nil && len(o.Record) == 0 {
			firstInstalled = r
		}
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	for r := uint64(1); r <= last.Round; r++ {
		o, err := a.db.Outcome(r)
		if errors.Is(err, store.ErrNotFound) {
			if r < firstInstalled {
				a.rep.Counts.Missing++
			} else {
				a.rep.fail(r, "no outcome record, though round %d is applied", last.Round)
			}
			prev = chainState{}
			continue
		}
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		a.rep.Counts.Rounds++
		rd := Round{Round: r, Index: o.Index, Result: o.Model.String(), Chain: o.ChainHash.String(), Examples: -1}
		if len(o.Record) == 0 {
			prev = a.installed(&rd, o)
		} else {
			prev = a.outcome(&rd, o, prev)
		}
		a.rep.Rounds = append(a.rep.Rounds, rd)
	}
	if prev.known && last.Round > 0 && (last.ChainHash != prev.chain || last.Model != prev.model) {
		a.rep.fail(last.Round, "the applied state (model %s, chain %s) is not the last outcome's (model %s, chain %s)",
			short(last.Model.String()), short(last.ChainHash.String()), short(prev.model.String()), short(prev.chain.String()))
	}
	if last.Index > a.commit && a.commit > 0 {
		a.rep.fail(last.Round, "applied raft index %d is past the commit index %d", last.Index, a.commit)
	}
	return nil
}

// installed is a round adopted from a snapshot: no entry here, its chain
// hash taken on the attestations of a majority of voters.
func (a *audit) installed(rd *Round, o store.Applied) chainState {
	rd.Kind = "snapshot"
	a.rep.Counts.Snapshots++
	rd.Notes = append(rd.Notes, "installed from a snapshot: its entry and contributions are not in this store")
	if s := a.snap; s != nil && s.State.Round == rd.Round {
		n := 0
		for _, at := range s.Attests {
			if at != nil && at.Kind == round.KindAttest && at.Round == rd.Round && at.Index == s.State.Index && at.Digest == o.Model &&
				a.voters[string(at.Author)] && at.Verify(a.cid) == nil {
				n++
			}
		}
		a.rep.Counts.Signatures += n
		if n < a.p.Majority() {
			a.rep.fail(rd.Round, "the snapshot it was installed from has attestations of %d voters, a majority is %d", n, a.p.Majority())
		} else {
			rd.Notes = append(rd.Notes, fmt.Sprintf("snapshot attested by %d voters (signatures verified)", n))
		}
	}
	next := chainState{known: true, index: o.Index, model: o.Model, chain: o.ChainHash}
	next.g = a.modelBlob(rd, o.Model, nil)
	return next
}

// modelBlob checks the stored model blob of the round against its digest
// and returns it decoded (nil if not held or bad). recomputed, if set, is
// the model already recomputed.
func (a *audit) modelBlob(rd *Round, d round.Digest, recomputed *fedavg.Global) *fedavg.Global {
	b, ok := a.blob(rd.Round, "model", d)
	switch {
	case ok:
		a.rep.Counts.BlobChecked++
		if rd.Model == "" {
			rd.Model = "blob"
		}
		if recomputed != nil {
			return recomputed
		}
		g, err := fedavg.Decode(b)
		if err != nil {
			a.rep.fail(rd.Round, "model blob %s: %v", short(rd.Result), err)
			return nil
		}
		return g
	case a.corrupt[d]:
		return recomputed
	}
	if rd.Model == "" {
		rd.Model = "not held"
		a.rep.Counts.NotHeld++
	}
	return recomputed
}

// outcome checks one applied entry and returns what it leaves.
func (a *audit) outcome(rd *Round, o store.Applied, prev chainState) chainState {
	r := rd.Round
	next := chainState{known: true, index: o.Index, model: o.Model, chain: o.ChainHash}
	e, err := round.DecodeEntry(o.Record)
	if err != nil {
		a.rep.fail(r, "outcome record: %v", err)
		return next
	}
	rd.Kind, rd.Base, rd.Aggregator, rd.Reason = string(e.Kind), e.Base.String(), e.Aggregator, e.Reason

	// The chain: the record hashes onto the previous outcome's chain hash.
	switch {
	case e.Round != r:
		a.rep.fail(r, "the outcome record holds an entry for round %d", e.Round)
	case e.Result != o.Model:
		a.rep.fail(r, "the record's model %s is not its entry's result %s", short(o.Model.String()), short(e.Result.String()))
	}
	if round.ChainHash(e.Prev, o.Record) != o.ChainHash {
		a.rep.fail(r, "chain hash %s is not the hash of the entry on its previous hash", short(o.ChainHash.String()))
	}
	if prev.known {
		a.rep.Counts.Chained++
		if e.Prev != prev.chain {
			a.rep.fail(r, "chain broken: the entry's previous hash %s, round %d's chain hash is %s", short(e.Prev.String()), r-1, short(prev.chain.String()))
		}
		if e.Base != prev.model {
			a.rep.fail(r, "base %s is not round %d's model %s", short(e.Base.String()), r-1, short(prev.model.String()))
		}
	} else {
		rd.Notes = append(rd.Notes, "the previous outcome is not in this store: the chain link is checked from here on")
	}
	if re := a.raftAt[o.Index]; re != nil && !bytes.Equal(re.GetData(), o.Record) {
		a.rep.fail(r, "the raft log's entry at index %d is not the recorded outcome", o.Index)
	}
	if prev.index != 0 && o.Index <= prev.index {
		a.rep.fail(r, "raft index %d is not after the previous outcome's %d", o.Index, prev.index)
	}

	// The sample, where the membership is known.
	var sample []identity.PeerID
	members, known := a.p.Members, true
	if r > 1 {
		members, known = nil, false
		if prev.known {
			members, known = a.membersAt(prev.index)
		}
	}
	if known {
		sample = round.Sample(a.cid[:], r, members, a.p.Target(len(members))+a.p.OverSelect)
		for _, id := range sample {
			rd.Sampled = append(rd.Sampled, id.String())
			a.rep.member(id.String()).Sampled++
		}
	} else {
		rd.Notes = append(rd.Notes, "the membership at this round's start is not in this store: the sample is not checked")
	}

	switch e.Kind {
	case round.EntryAbandon:
		if e.Result != e.Base || len(e.Included) > 0 || len(e.Haves) > 0 || len(e.Reveals) > 0 || len(e.Phases) > 0 {
			a.rep.fail(r, "an abandon that changes the model or includes updates")
		}
		rd.Model = "kept"
		next.g = prev.g
		if prev.g == nil {
			next.g = a.modelBlob(rd, o.Model, nil)
		}
		a.notIncluded(sample, nil)
		return next
	case round.EntryCommit:
	default:
		a.rep.fail(r, "a %s entry recorded as an outcome", e.Kind)
		return next
	}
	if e.Aggregator != a.p.Aggregator {
		a.rep.fail(r, "aggregator %q, the manifest's is %q", e.Aggregator, a.p.Aggregator)
	}
	if len(e.Included) < a.p.MinParticipants {
		a.rep.fail(r, "%d included, min_participants is %d", len(e.Included), a.p.MinParticipants)
	}
	var view *round.SecAggView
	if a.p.SecAgg != nil {
		view = a.secAggCommit(rd, e, sample)
	} else {
		a.plainCommit(rd, e, sample)
	}
	a.notIncluded(sample, e.Included)

	// The model: recomputed from G(r-1) and the kept blobs, else the blob.
	var g *fedavg.Global
	if prev.g != nil && prev.g.Digest() == e.Base && (a.p.SecAgg == nil || view != nil) {
		g = a.recompute(rd, e, prev.g, view)
	}
	next.g = a.modelBlob(rd, o.Model, g)
	return next
}

// notIncluded charges the sampled members that are not included.
func (a *audit) notIncluded(sample []identity.PeerID, included []*round.Message) {
	for _, id := range sample {
		if !slices.ContainsFunc(included, func(m *round.Message) bool { return m != nil && identity.Compare(m.Author, id) == 0 }) {
			a.rep.member(id.String()).NotIncluded++
		}
	}
}

// plainCommit checks a Commit's inclusions and Haves.
func (a *audit) plainCommit(rd *Round, e *round.Entry, sample []identity.PeerID) {
	r := rd.Round
	if len(e.Reveals) > 0 || len(e.Phases) > 0 {
		a.rep.fail(r, "a commit with secure-aggregation parts, without secure aggregation")
	}
	rd.Examples = 0
	for i, m := range e.Included {
		if !a.named(r, i, m, round.KindAnnounce, e, e.Included, sample) {
			continue
		}
		switch {
		case m.Length != a.p.UpdateBytes:
			a.rep.fail(r, "the update of %s is %d bytes, the model's is %d", m.Author.Short(), m.Length, a.p.UpdateBytes)
		case m.Examples < 1 || (a.p.MaxExamples > 0 && m.Examples > a.p.MaxExamples):
			a.rep.fail(r, "%s claims %d examples, max_examples_per_member is %d", m.Author.Short(), m.Examples, a.p.MaxExamples)
		}
		rd.Contributions = append(rd.Contributions, Contribution{Peer: m.Author.String(), Examples: m.Examples, Update: m.Digest.String()})
		rd.Examples += m.Examples
		mem := a.rep.member(m.Author.String())
		mem.Included++
		mem.Examples += m.Examples
		mem.LastRound = r
	}
	a.haves(r, e, e.Included)
}

// named checks the i-th signed message an entry names: kind, round, base,
// order, sample and signature. It reports whether the message is usable.
func (a *audit) named(r uint64, i int, m *round.Message, kind round.Kind, e *round.Entry, list []*round.Message, sample []identity.PeerID) bool {
	if m == nil {
		a.rep.fail(r, "%s %d is empty", kind, i)
		return false
	}
	ok := true
	if m.Kind != kind || m.Round != r || m.Base != e.Base {
		a.rep.fail(r, "%s %d (of %s) is not a %s of round %d on its base", e.Kind, i, m.Author.Short(), kind, r)
		ok = false
	}
	if i > 0 && list[i-1] != nil && identity.Compare(list[i-1].Author, m.Author) >= 0 {
		a.rep.fail(r, "%s messages not in strictly increasing peer-ID order", kind)
	}
	if sample != nil && !slices.ContainsFunc(sample, is(m.Author)) {
		a.rep.fail(r, "%s of %s, who was not sampled", kind, m.Author.Short())
	}
	if err := m.Verify(a.cid); err != nil {
		a.rep.fail(r, "%s of %s: signature does not verify: %v", kind, m.Author.Short(), err)
		return false
	}
	a.rep.Counts.Signatures++
	return ok
}

// haves checks that every named blob has signed Haves of a majority of voters.
func (a *audit) haves(r uint64, e *round.Entry, named []*round.Message) {
	held := map[round.Digest]map[string]bool{}
	for _, h := range e.Haves {
		if h == nil || h.Kind != round.KindHave || h.Round != e.Round {
			a.rep.fail(r, "%s entry: a Have that is not a Have of the round", e.Kind)
			continue
		}
		if !a.voters[string(h.Author)] {
			a.rep.fail(r, "%s entry: a Have of %s, not a voter", e.Kind, h.Author.Short())
			continue
		}
		if err := h.Verify(a.cid); err != nil {
			a.rep.fail(r, "%s entry: Have of %s: signature does not verify: %v", e.Kind, h.Author.Short(), err)
			continue
		}
		a.rep.Counts.Signatures++
		if held[h.Digest] == nil {
			held[h.Digest] = map[string]bool{}
		}
		if e.Kind == round.EntryCommit && !held[h.Digest][string(h.Author)] {
			a.rep.member(h.Author.String()).Haves++
		}
		held[h.Digest][string(h.Author)] = true
	}
	for _, m := range named {
		if m == nil {
			continue
		}
		if n := len(held[m.Digest]); n < a.p.Majority() {
			a.rep.fail(r, "%s entry: the blob of %s has valid Haves of %d voters, a majority is %d", e.Kind, m.Author.Short(), n, a.p.Majority())
		}
	}
}

// secAggCommit checks a secure-aggregation Commit, its reveals and the
// phase entries it names, and returns the view to recompute the sum with
// (nil when the phase entries are no longer in the log).
func (a *audit) secAggCommit(rd *Round, e *round.Entry, sample []identity.PeerID) *round.SecAggView {
	r := rd.Round
	for i, m := range e.Included {
		if !a.named(r, i, m, round.KindInput, e, e.Included, sample) {
			continue
		}
		rd.Contributions = append(rd.Contributions, Contribution{Peer: m.Author.String(), Update: m.Digest.String(), Masked: true})
		mem := a.rep.member(m.Author.String())
		mem.Included++
		mem.Masked++
		mem.LastRound = r
	}
	for i, m := range e.Reveals {
		if !a.named(r, i, m, round.KindReveal, e, e.Reveals, sample) {
			continue
		}
		if !slices.ContainsFunc(e.Included, func(in *round.Message) bool { return in != nil && identity.Compare(in.Author, m.Author) == 0 }) {
			a.rep.fail(r, "a reveal of %s, whose input is not in the sum", m.Author.Short())
		}
		rd.Revealers = append(rd.Revealers, m.Author.String())
		a.rep.member(m.Author.String()).Reveals++
	}
	a.haves(r, e, e.Reveals)
	if len(e.Phases) != 3 {
		a.rep.fail(r, "a secure-aggregation commit naming %d phase entries, want 3", len(e.Phases))
		return nil
	}
	kinds := [3]round.EntryKind{round.EntryKeys, round.EntryShares, round.EntryUnmask}
	msgs := [3]round.Kind{round.KindKeyAd, round.KindShares, round.KindInput}
	var ph [3]*round.Entry
	for i, d := range e.Phases {
		p := a.phases[d]
		if p == nil {
			rd.Notes = append(rd.Notes, "its phase entries are compacted out of this store's raft log: the inputs' signatures are checked, the sum is not recomputed")
			return nil
		}
		ph[i] = p
		if p.Kind != kinds[i] || p.Round != r || p.Base != e.Base {
			a.rep.fail(r, "phase entry %d is a %s of round %d, want the %s of round %d", i, p.Kind, p.Round, kinds[i], r)
			return nil
		}
		for j, m := range p.Included {
			a.named(r, j, m, msgs[i], p, p.Included, sample)
			if i > 0 && m != nil && !slices.ContainsFunc(ph[i-1].Included, func(x *round.Message) bool { return x != nil && identity.Compare(x.Author, m.Author) == 0 }) {
				a.rep.fail(r, "the %s names %s, not in the %s", p.Kind, m.Author.Short(), ph[i-1].Kind)
			}
		}
		if i > 0 {
			a.haves(r, p, p.Included)
		}
	}
	u3 := ph[2].Included
	same := len(u3) == len(e.Included)
	for i := 0; same && i < len(u3); i++ {
		same = bytes.Equal(u3[i].Encode(), e.Included[i].Encode())
	}
	if !same {
		a.rep.fail(r, "the commit's inputs are not the Unmask entry's")
	}
	v := &round.SecAggView{Round: r, Base: e.Base, T: len(e.Reveals), KeyAds: ph[0].Included, Shares: ph[1].Included, Inputs: u3, Reveals: e.Reveals}
	for _, d := range v.Dropped() {
		rd.Dropped = append(rd.Dropped, d.Author.String())
		a.rep.member(d.Author.String()).Dropped++
	}
	if a.p.SecAgg.Distributed != nil {
		if sample == nil {
			rd.Notes = append(rd.Notes, "the sample size (and so the noise's honest count) is not known here: the sum is not recomputed")
			return nil
		}
		t, gamma, _ := a.p.SecAgg.Threshold(len(sample))
		v.Noise = a.p.SecAgg.NoiseFor(t, gamma)
	}
	return v
}

// recompute recomputes G(r) from G(r-1) and the round's kept blobs.
func (a *audit) recompute(rd *Round, e *round.Entry, base *fedavg.Global, view *round.SecAggView) *fedavg.Global {
	r := rd.Round
	rec := &recorder{Strategy: a.s}
	src := func(d fedavg.Digest) ([]byte, bool) { return a.blob(r, "named", d) }
	var g *fedavg.Global
	var err error
	if view != nil {
		g, err = round.SecAggOutcome(rec, base, a.cid, a.p.SecAgg, view, src)
	} else {
		g, err = round.Outcome(rec, base, r, e.Included, a.p.MaxExamples, src)
	}
	var missing *round.MissingBlobError
	switch {
	case errors.As(err, &missing):
		if !slices.ContainsFunc(missing.Digests, func(d round.Digest) bool { return a.corrupt[d] }) {
			rd.Notes = append(rd.Notes, fmt.Sprintf("not recomputed: %d of its blobs are no longer kept", len(missing.Digests)))
		}
		return nil
	case err != nil:
		a.rep.fail(r, "recomputing the model: %v", err)
		return nil
	}
	if d := g.Digest(); d != e.Result {
		a.rep.fail(r, "recomputed model %s from the named updates, the entry says %s", short(d.String()), short(e.Result.String()))
		return nil
	}
	a.rep.Counts.Recomputed++
	rd.Model = "recomputed"
	if view != nil && len(rec.ups) == 1 {
		rd.Examples = rec.ups[0].Examples
	}
	return g
}
