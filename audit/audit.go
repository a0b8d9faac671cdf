package audit

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/train/local"
)

// The store's buckets the audit reads (written by member and node).
const (
	ownerBucket    = "owner"
	evidenceBucket = "evidence"
)

// What no store records; Run adds what this one in particular lacks.
var cannotKnow = []string{
	"why a sampled member is not included (it declined, was late, or its update failed the edge checks): the log records inclusions only; Declines and excluded updates are gossip, counted by the running node (status counters, globalbrain_round_events_total), not per member and not in the store",
	"rejected gossip per member: the running node counts it by reason (globalbrain_updates_total), in memory, not per member",
	"an update's influence on the model (leave-one-out): not computed",
}

// audit is one run's state.
type audit struct {
	db     *store.DB
	man    *manifest.Manifest
	p      round.Params
	s      fedavg.Strategy
	rep    *Report
	cid    [32]byte
	voters map[string]bool

	phases  map[round.Digest]*round.Entry // the log's secagg phase entries, by the digest of their encoding
	raftAt  map[uint64]*pb.Entry          // retained raft entries by index
	commit  uint64                        // raft's commit index
	snap    *round.Snapshot               // the stored raft snapshot's data, if any
	snapIdx uint64
	adds    []memberAdd // valid AddMember entries in the retained log
	base    []identity.PeerID
	baseOK  bool // base is the membership up to snapIdx
	corrupt map[round.Digest]bool
}

type memberAdd struct {
	index uint64
	id    identity.PeerID
}

// Run audits the store db of a member of the consortium man describes. An
// error means the audit could not run (the store unreadable, the manifest
// not the store's); every verification problem is a Failure in the report.
func Run(db *store.DB, man *manifest.Manifest) (*Report, error) {
	g0, err := local.Genesis(local.Spec(man), man.Model.InitSeed)
	if err != nil {
		return nil, fmt.Errorf("audit: genesis model: %w", err)
	}
	s, err := fedavg.New(man.StrategyConfig())
	if err != nil {
		return nil, fmt.Errorf("audit: strategy: %w", err)
	}
	a := &audit{db: db, man: man, p: node.Params(man, len(g0.Weights)), s: s, cid: man.ConsortiumID(),
		voters: map[string]bool{}, phases: map[round.Digest]*round.Entry{}, raftAt: map[uint64]*pb.Entry{},
		corrupt: map[round.Digest]bool{}}
	for _, v := range a.p.Voters {
		a.voters[string(v)] = true
	}
	mode := man.Privacy.Mode
	if mode == "" {
		mode = manifest.PrivacyNone
	}
	a.rep = &Report{Store: db.Dir(), Consortium: fmt.Sprintf("%x", a.cid), Aggregator: a.p.Aggregator, Privacy: mode,
		Genesis: g0.Digest().String(), byPeer: map[string]*Member{}}
	if err := a.checkOwner(); err != nil {
		return nil, err
	}
	for _, id := range a.p.Members {
		a.rep.member(id.String()).Voter = a.voters[string(id)]
	}
	if err := a.readLog(); err != nil {
		return nil, err
	}
	last, err := db.LastApplied()
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	a.rep.AppliedRound, a.rep.AppliedIndex, a.rep.Model = last.Round, last.Index, last.Model.String()
	if err := a.rounds(g0, last); err != nil {
		return nil, err
	}
	if err := a.evidence(); err != nil {
		return nil, err
	}
	a.finish()
	return a.rep, nil
}

// checkOwner refuses a manifest that is not the store's consortium.
func (a *audit) checkOwner() error {
	cid, err := a.db.Get(ownerBucket, "consortium")
	switch {
	case errors.Is(err, store.ErrNotFound):
		a.rep.fail(0, "the store does not record its consortium (not written by a member)")
	case err != nil:
		return fmt.Errorf("audit: %w", err)
	case !bytes.Equal(cid, a.cid[:]):
		return fmt.Errorf("audit: store %s belongs to consortium %x, the manifest is of %x: give the manifest the store was created with", a.db.Dir(), cid, a.cid)
	}
	if peer, err := a.db.Get(ownerBucket, "peer"); err == nil {
		a.rep.Owner = identity.PeerID(peer).String()
	}
	return nil
}

// readLog reads the retained raft log: the phase entries by digest, the
// valid membership changes, and the snapshot's membership.
func (a *audit) readLog() error {
	hs, snap, ents, err := a.db.LoadRaft()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	a.commit = hs.GetCommit()
	a.base, a.baseOK = slices.Clone(a.p.Members), true
	if md := snap.GetMetadata(); md.GetIndex() > 0 && len(snap.GetData()) > 0 { // data-less: the bootstrap configuration
		a.snapIdx = md.GetIndex()
		s, err := round.DecodeSnapshot(snap.GetData())
		if err != nil {
			a.rep.fail(0, "raft snapshot at index %d: %v", a.snapIdx, err)
		} else {
			a.snap = s
			members := slices.Clone(s.Members)
			slices.SortFunc(members, identity.Compare)
			// Membership only grows: a snapshot with the genesis members
			// means none was added before it.
			a.baseOK = slices.EqualFunc(members, a.base, func(x, y identity.PeerID) bool { return identity.Compare(x, y) == 0 })
			a.base = members
		}
	}
	members := slices.Clone(a.base)
	for _, e := range ents {
		a.raftAt[e.GetIndex()] = e
		if e.GetIndex() > a.commit {
			continue // not committed: may still be overwritten
		}
		switch e.GetType() {
		case pb.EntryConfChange, pb.EntryConfChangeV2:
			if id, ok := a.addMember(e, members); ok {
				a.adds = append(a.adds, memberAdd{e.GetIndex(), id})
				members = append(members, id)
				slices.SortFunc(members, identity.Compare)
			}
			continue
		}
		if len(e.GetData()) == 0 {
			continue
		}
		re, err := round.DecodeEntry(e.GetData())
		if err != nil {
			continue // skipped by every member as invalid; not an outcome
		}
		switch re.Kind {
		case round.EntryKeys, round.EntryShares, round.EntryUnmask:
			a.phases[sha256.Sum256(e.GetData())] = re
		}
	}
	if hs.GetCommit() < a.snapIdx {
		a.rep.fail(0, "raft commit index %d is behind the snapshot at %d", hs.GetCommit(), a.snapIdx)
	}
	return nil
}

// addMember is the validity of a membership entry against members (as
// round's validateAddMember): the new member's own signed record and the
// signatures of a majority of members.
func (a *audit) addMember(e *pb.Entry, members []identity.PeerID) (identity.PeerID, bool) {
	var cc pb.ConfChangeV2
	if e.GetType() == pb.EntryConfChange {
		var v1 pb.ConfChange
		if proto.Unmarshal(e.GetData(), &v1) != nil {
			return nil, false
		}
		cc = *v1.AsV2()
	} else if proto.Unmarshal(e.GetData(), &cc) != nil {
		return nil, false
	}
	req, err := round.DecodeAddMember(cc.GetContext())
	if err != nil || len(cc.GetChanges()) != 1 || cc.GetChanges()[0].GetType() != pb.ConfChangeType_ConfChangeAddLearnerNode ||
		cc.GetChanges()[0].GetNodeId() != round.RaftID(req.Member) || slices.ContainsFunc(members, is(req.Member)) {
		return nil, false
	}
	joined, signed := false, map[string]bool{}
	for _, s := range req.Sigs {
		if s == nil || s.Reason != req.Member.String() || s.Verify(a.cid) != nil {
			continue
		}
		switch {
		case s.Kind == round.KindJoin && identity.Compare(s.Author, req.Member) == 0:
			joined = true
		case s.Kind == round.KindAddMember && slices.ContainsFunc(members, is(s.Author)):
			signed[string(s.Author)] = true
		}
	}
	return req.Member, joined && len(signed) > len(members)/2
}

// membersAt is the membership at the start of the round that follows the
// outcome at raft index idx: genesis (or the snapshot's) and the members
// added before idx.
func (a *audit) membersAt(idx uint64) ([]identity.PeerID, bool) {
	if idx <= a.snapIdx && !a.baseOK {
		return nil, false
	}
	ms := slices.Clone(a.base)
	if idx <= a.snapIdx {
		ms = slices.Clone(a.p.Members)
	}
	for _, ad := range a.adds {
		if ad.index < idx {
			ms = append(ms, ad.id)
		}
	}
	slices.SortFunc(ms, identity.Compare)
	return ms, true
}

// blob reads a blob the log names; a corrupt one is a failure of round r.
func (a *audit) blob(r uint64, what string, d round.Digest) ([]byte, bool) {
	if !a.db.HasBlob(d) {
		return nil, false
	}
	b, err := a.db.Blob(d)
	if err != nil {
		if !a.corrupt[d] {
			a.corrupt[d] = true
			if errors.Is(err, store.ErrCorruptBlob) {
				a.rep.fail(r, "%s blob %s does not hash to its digest (corrupt or truncated)", what, short(d.String()))
			} else {
				a.rep.fail(r, "%s blob %s: %v", what, short(d.String()), err)
			}
		}
		return nil, false
	}
	return b, true
}

// evidence verifies the equivocation evidence the node kept.
func (a *audit) evidence() error {
	vs, err := a.db.List(evidenceBucket)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	for _, v := range vs {
		e, err := round.DecodeEvidence(v)
		if err != nil {
			a.rep.fail(0, "evidence record: %v", err)
			continue
		}
		if err := e.Verify(a.cid); err != nil {
			a.rep.fail(e.Round, "evidence against %s does not verify: %v", e.Author.Short(), err)
			continue
		}
		a.rep.Counts.Signatures += 2
		a.rep.Evidence = append(a.rep.Evidence, Equivocation{Round: e.Round, Author: e.Author.String(),
			First: e.First.Digest.String(), Second: e.Second.Digest.String()})
		a.rep.member(e.Author.String()).Equivocations++
	}
	return nil
}

// finish sorts the ledger and settles OK.
func (a *audit) finish() {
	for _, m := range a.rep.byPeer {
		a.rep.Ledger = append(a.rep.Ledger, *m)
	}
	slices.SortFunc(a.rep.Ledger, func(x, y Member) int { return identity.Compare(mustPeer(x.Peer), mustPeer(y.Peer)) })
	a.rep.Unknown = append(a.rep.Unknown, cannotKnow...)
	if a.man.Privacy.UsesSecAgg() {
		a.rep.Unknown = append(a.rep.Unknown, "under secure aggregation a member's update and example count are masked: only the round's total weight is known, once the sum is recomputed")
	}
	a.rep.OK = len(a.rep.Failures) == 0
}

func mustPeer(s string) identity.PeerID {
	id, err := identity.ParsePeerID(s)
	if err != nil {
		return identity.PeerID(s)
	}
	return id
}

// is matches a peer ID.
func is(id identity.PeerID) func(identity.PeerID) bool {
	return func(x identity.PeerID) bool { return identity.Compare(x, id) == 0 }
}
