package round

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/globalbrain/globalbrain/identity"
)

// Snapshot is the application state a Raft snapshot carries: the applied
// outcome of a round and the signed attestations of a majority of voters
// that it is the outcome they applied. A member installs it only once the
// attestations check out.
type Snapshot struct {
	State   State             `json:"state"`
	Members []identity.PeerID `json:"members"`
	Attests []*Message        `json:"attests"`
}

// CompactTask asks the member to persist a snapshot it created and compact
// its persisted log below CompactTo.
type CompactTask struct {
	Snapshot  *pb.Snapshot
	CompactTo uint64
}

// ErrUnattested reports a snapshot without a majority of voters' attestations.
var ErrUnattested = errors.New("round: snapshot not attested by a majority of voters")

// histEntry is an applied outcome and the membership at that point.
type histEntry struct {
	State
	members []identity.PeerID
}

// DecodeSnapshot parses a snapshot's data.
func DecodeSnapshot(b []byte) (*Snapshot, error) {
	var s Snapshot
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("round: snapshot: %w", err)
	}
	return &s, nil
}

// verifySnapshot checks that a majority of voters signed an attestation of
// the snapshot's round, index and model.
func (m *Machine) verifySnapshot(s *Snapshot) error {
	ok := map[string]bool{}
	for _, a := range s.Attests {
		if a == nil || a.Kind != KindAttest || a.Round != s.State.Round || a.Index != s.State.Index || a.Digest != s.State.Model {
			continue
		}
		if _, voter := m.voters[RaftID(a.Author)]; !voter || a.Verify(m.p.Consortium) != nil {
			continue
		}
		ok[string(a.Author)] = true
	}
	if len(ok) <= len(m.p.Voters)/2 {
		return fmt.Errorf("%w: %d of %d voters for round %d", ErrUnattested, len(ok), len(m.p.Voters), s.State.Round)
	}
	return nil
}

// maybeSnapshot creates a snapshot every RetainRounds rounds, at the newest
// applied outcome a majority of voters has attested, and compacts the log
// below the previous snapshot, so the last RetainRounds rounds or more stay
// in the log for members that are only a little behind.
func (m *Machine) maybeSnapshot() {
	if m.p.RetainRounds <= 0 {
		return
	}
	for i := len(m.hist) - 1; i >= 0; i-- {
		h := m.hist[i]
		if h.Round < m.snapRound+uint64(m.p.RetainRounds) {
			return
		}
		s := &Snapshot{State: h.State, Members: h.members}
		for _, a := range m.attests[h.Round] {
			if a.Digest == h.Model && a.Index == h.Index {
				s.Attests = append(s.Attests, a)
			}
		}
		sortAnnouncements(s.Attests)
		if m.verifySnapshot(s) != nil {
			continue // not attested yet: an older outcome may be
		}
		data, err := json.Marshal(s)
		if err != nil {
			panic(err)
		}
		prev, _ := m.storage.Snapshot()
		snap, err := m.storage.CreateSnapshot(h.Index, m.cs, data)
		if err != nil {
			if !errors.Is(err, raft.ErrSnapOutOfDate) {
				m.alarm("snapshot at index %d: %v", h.Index, err)
			}
			return
		}
		compactTo := prev.GetMetadata().GetIndex()
		if compactTo > 1 {
			if err := m.storage.Compact(compactTo); err != nil && !errors.Is(err, raft.ErrCompacted) {
				m.alarm("compact at index %d: %v", compactTo, err)
			}
		}
		m.snapRound = h.Round
		m.out.Compact = &CompactTask{Snapshot: snap, CompactTo: compactTo}
		return
	}
}

// installSnapshot adopts the state of a snapshot raft handed over (this
// member was behind the compaction point).
func (m *Machine) installSnapshot(snap *pb.Snapshot) {
	m.cs = snap.GetMetadata().GetConfState()
	s, err := DecodeSnapshot(snap.GetData())
	if err == nil {
		err = m.verifySnapshot(s)
	}
	if err != nil {
		m.halted = fmt.Sprintf("snapshot at index %d: %v", snap.GetMetadata().GetIndex(), err)
		m.alarm("halted: %s", m.halted)
		return
	}
	if s.State.Round <= m.st.Round {
		return
	}
	m.st = s.State
	m.members = s.Members
	m.queue, m.pending, m.hist = nil, nil, []histEntry{{s.State, s.Members}}
	m.snapRound = s.State.Round
	for _, a := range s.Attests {
		m.recordAttest(a)
	}
	m.out.Install = &s.State
	m.startRound()
}
