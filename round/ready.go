package round

import (
	"errors"
	"slices"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/privacy/dp"
)

// TrainTask asks the member to train round Round from the model Base.
type TrainTask struct {
	Round uint64
	Base  Digest
	// Noise, in mode distributed, is the round's encoding: the member
	// charges its budget for Noise.Mechanism, encodes its update with it
	// and keeps only the encoding, to be masked in the input phase.
	Noise *dp.DistributedNoise
}

// FetchTask asks the member to obtain and verify a blob; From holds it.
type FetchTask struct {
	Digest Digest
	From   identity.PeerID
	// Size is the blob's signed length (an update's announcement), 0 if
	// unknown: a holder serving another length is refused.
	Size int64
	// Kind is the announcement that named the blob (KindAnnounce for an
	// update, a secure-aggregation kind for its blobs; "" for a model),
	// which says how the blob is checked at the edge (CheckBlob).
	Kind Kind
}

// AggregateTask asks the leader to compute the outcome of the included
// updates on Base and report its digest through Aggregated.
type AggregateTask struct {
	Round    uint64
	Base     Digest
	Included []*Message
	SecAgg   *SecAggView // a secure aggregation: unmask the inputs' sum with the reveals
}

// ApplyTask asks the member to compute (for a commit), verify and persist a
// committed outcome, then report through Applied. Entries are handed out one
// at a time, in log order.
type ApplyTask struct {
	Index   uint64
	Term    uint64 // the entry's Raft term: a leader whose own entry fails steps down
	Entry   *Entry
	Encoded []byte
	Chain   Digest      // the chain hash once this entry is applied
	SecAgg  *SecAggView // a secure-aggregation Commit: the round's phases
}

// Ready is the work the Machine hands out. The caller carries it out in
// order (persist, then send, then the tasks) and calls Advance.
type Ready struct {
	HardState *pb.HardState // persist, if not nil
	Entries   []*pb.Entry   // persist (discarding persisted entries from Entries[0].Index on)
	Snapshot  *pb.Snapshot  // persist, if not nil
	MustSync  bool

	Messages []*pb.Message // Raft messages to send, after persisting
	Gossip   []*Message    // signed messages to publish

	Train     *TrainTask
	SecAgg    []*SecAggTask
	Fetch     []FetchTask
	Aggregate *AggregateTask
	Apply     *ApplyTask
	// Install is set when the member adopted a snapshot's state: obtain its
	// model blob and persist the applied state (the raft snapshot itself
	// is in Snapshot).
	Install *State
	// Compact asks the member to persist a snapshot it created and compact
	// its persisted log.
	Compact *CompactTask
	// Sync is set when this member just became the leader: pull the
	// round's current announcements from the others.
	Sync uint64
	// Members is set when the applied membership changed (and in the
	// first Ready): the transport's allow-list becomes it.
	Members []identity.PeerID
	// Evidence are equivocations to persist (both signed messages).
	Evidence []*Evidence
	Alarms   []string
	raft     *raft.Ready
}

// Empty reports whether there is nothing to do.
func (rd *Ready) Empty() bool {
	return rd.HardState == nil && len(rd.Entries) == 0 && rd.Snapshot == nil && len(rd.Messages) == 0 &&
		len(rd.Gossip) == 0 && rd.Train == nil && len(rd.Fetch) == 0 && rd.Aggregate == nil && rd.Apply == nil &&
		len(rd.Alarms) == 0 && rd.raft == nil && rd.Install == nil && rd.Compact == nil && rd.Sync == 0 &&
		rd.Members == nil && len(rd.Evidence) == 0 && len(rd.SecAgg) == 0
}

// Ready returns the work to carry out now.
func (m *Machine) Ready() *Ready {
	rd := m.out
	m.out = Ready{}
	if m.bootSnap != nil {
		rd.Snapshot, m.bootSnap = m.bootSnap, nil
	}
	if m.halted == "" {
		m.guard("ready", func() { m.raftReady(&rd) })
	}

	if rd.Apply == nil {
		rd.Apply = m.nextApply()
	}
	if rd.Train == nil && m.halted == "" && !m.Done() && !m.cur.trained && !m.cur.declined && m.pending == nil &&
		len(m.queue) == 0 && m.wanted[m.st.Model] == nil && m.waitInstall == nil && contains(m.Sample(m.cur.round), m.self.ID) {
		m.cur.trained = true
		rd.Train = &TrainTask{Round: m.cur.round, Base: m.st.Model}
		if sa := m.cur.sa; sa != nil {
			rd.Train.Noise = m.p.SecAgg.NoiseFor(sa.t, sa.gamma)
		}
	}
	if m.pending == nil && len(m.queue) == 0 {
		m.secAggTasks()
	}
	// Work queued while assembling this Ready goes out with it.
	m.syncGate()
	if rd.Members == nil {
		rd.Members = m.out.Members
	}
	if rd.Apply == nil {
		rd.Apply = m.out.Apply
	}
	rd.Gossip = append(rd.Gossip, m.out.Gossip...)
	rd.Evidence = append(rd.Evidence, m.out.Evidence...)
	rd.Fetch = append(rd.Fetch, m.out.Fetch...)
	rd.SecAgg = append(rd.SecAgg, m.out.SecAgg...)
	rd.Alarms = append(rd.Alarms, m.out.Alarms...)
	if rd.Aggregate == nil {
		rd.Aggregate = m.out.Aggregate
	}
	if rd.Install == nil {
		rd.Install = m.out.Install
	}
	if rd.Compact == nil {
		rd.Compact = m.out.Compact
	}
	if rd.Sync == 0 {
		rd.Sync = m.out.Sync
	}
	m.out = Ready{}
	return &rd
}

// Advance tells the Machine the Ready was carried out: its Raft state is
// persisted and its messages sent.
func (m *Machine) Advance(rd *Ready) {
	if rd.raft != nil {
		if rd.raft.Snapshot != nil && !raft.IsEmptySnap(rd.raft.Snapshot) {
			_ = m.storage.ApplySnapshot(rd.raft.Snapshot)
		}
		if rd.raft.HardState != nil && !raft.IsEmptyHardState(rd.raft.HardState) {
			_ = m.storage.SetHardState(rd.raft.HardState)
		}
		_ = m.storage.Append(rd.raft.Entries)
		m.guard("advance", func() { m.rn.Advance(*rd.raft) })
	}
	if m.snapDue {
		m.snapDue = false
		m.maybeSnapshot()
	}
}

// nextApply walks the committed queue: stale and invalid entries are
// skipped here; the first valid outcome is handed out as an ApplyTask.
func (m *Machine) nextApply() *ApplyTask {
	for m.pending == nil && len(m.queue) > 0 && m.halted == "" {
		ent := m.queue[0]
		m.queue = m.queue[1:]
		switch ent.GetType() {
		case pb.EntryConfChange, pb.EntryConfChangeV2:
			m.applyConfChange(ent)
			continue
		}
		if ent.GetIndex() <= m.st.Index && ent.GetType() == pb.EntryNormal && len(ent.GetData()) > 0 {
			// Replaying an entry at or below the applied outcome: decided.
			// The blobs it names may be served again (a restarted member
			// serves what it still holds to members catching up).
			if e, err := DecodeEntry(ent.GetData()); err == nil {
				for _, a := range e.Included {
					if a != nil {
						m.gate.serveAt(a.Digest, e.Round)
					}
				}
				m.gate.serveAt(e.Result, e.Round)
			}
			m.roundMembers = slices.Clone(m.members)
			m.cur.sample = nil
			m.cur.sample = m.Sample(m.cur.round)
			continue
		}
		if len(ent.GetData()) == 0 {
			if m.IsLeader() && ent.GetTerm() == m.term() && m.leaderTerm != ent.GetTerm() {
				m.leaderTerm = ent.GetTerm() // our term's empty entry applied: we may propose
				m.cur.ticks, m.cur.proposed = 0, -1
				if m.cur.sa != nil {
					m.cur.sa.ticks = 0
				}
				m.out.Sync = m.cur.round
			}
			continue
		}
		e, err := DecodeEntry(ent.GetData())
		if err == nil {
			err = m.validate(e)
		}
		switch {
		case errors.Is(err, ErrStale):
			if ent.GetIndex() <= m.st.Index {
				// Replaying: a round boundary.
				m.roundMembers = slices.Clone(m.members)
				m.cur.sample = nil
				m.cur.sample = m.Sample(m.cur.round)
			} else {
				m.Counters.StaleEntries++
			}
			continue
		case err != nil:
			m.Counters.InvalidEntries++
			m.invalid(ent, e, err)
			continue
		}
		enc := ent.GetData()
		switch e.Kind {
		case EntryKeys, EntryShares, EntryUnmask:
			m.applyPhase(enc, e)
			continue
		}
		m.pending = &ApplyTask{Index: ent.GetIndex(), Term: ent.GetTerm(), Entry: e, Encoded: enc, Chain: ChainHash(m.st.Chain, enc)}
		if e.Kind == EntryCommit && m.cur.sa != nil {
			m.pending.SecAgg = m.commitView(e)
		}
		return m.pending
	}
	return nil
}

// raftReady takes raft's Ready into rd.
func (m *Machine) raftReady(rd *Ready) {
	if !m.rn.HasReady() {
		return
	}
	r := m.rn.Ready()
	rd.raft = &r
	if r.HardState != nil && !raft.IsEmptyHardState(r.HardState) {
		rd.HardState = r.HardState
	}
	rd.Entries = r.Entries
	if r.Snapshot != nil && !raft.IsEmptySnap(r.Snapshot) {
		rd.Snapshot = r.Snapshot
		m.installSnapshot(r.Snapshot)
	}
	rd.MustSync = r.MustSync
	rd.Messages = r.Messages
	m.queue = append(m.queue, r.CommittedEntries...)
	if r.SoftState != nil && r.SoftState.RaftState != raft.StateLeader {
		m.leaderTerm = 0
	}
}
