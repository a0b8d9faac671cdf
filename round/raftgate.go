package round

import (
	"fmt"
	"slices"

	"github.com/globalbrain/globalbrain/identity"
	pb "go.etcd.io/raft/v3/raftpb"
)

// The Raft boundary. etcd raft trusts its peers completely: a message it
// is handed may move its term, its log and its commit index, and some
// malformed ones make it panic (a heartbeat committing beyond the log, an
// append whose entries are not contiguous). So every message from another
// member is checked here, by its sender's role and its type, before raft
// sees it:
//
//   - types that only a node sends itself (MsgHup, MsgBeat, MsgProp: a
//     proposal is local; the storage and status messages) are refused;
//   - a learner sends only responses (MsgAppResp, MsgHeartbeatResp);
//   - what a leader or candidate sends (MsgApp, MsgHeartbeat, MsgSnap,
//     MsgTimeoutNow, votes) and leadership transfers come from voters only;
//   - a heartbeat may not commit beyond this member's log, an append's
//     entries must follow each other, an append response may not claim an
//     index beyond the log, and a snapshot must check against signed
//     attestations of a majority of voters before raft installs it.
//
// What still holds: a voter that lies within these shapes (a higher term,
// a competing log while it leads) is a Byzantine voter, and raft tolerates
// crash faults only among voters; members detect the consequences
// (validity of every entry, attestations and the halt rule) but do not
// prevent them.

// Reasons a Raft message is refused at the boundary.
const (
	RaftUnknownSender = "unknown_sender"  // From is not a member, or is this member
	RaftUnknownType   = "unknown_type"    // a message type raft does not define
	RaftLocalOnly     = "local_only"      // a type only a node sends itself, a proposal included
	RaftNoTerm        = "no_term"         // a message without a term (every message between nodes has one)
	RaftLearner       = "learner_request" // a learner (non-voter) sent something other than a response
	RaftBadCommit     = "bad_commit"      // a heartbeat committing beyond the log
	RaftBadAppend     = "bad_append"      // entries that do not follow each other, or a response beyond the log
	RaftBadSnapshot   = "bad_snapshot"    // a snapshot that does not check against the attestations
	RaftPanic         = "panic"           // raft panicked on the message: the member halted
)

// responses are what a learner may send.
var responses = []pb.MessageType{pb.MessageType_MsgAppResp, pb.MessageType_MsgHeartbeatResp}

// localOnly are the types raft never receives from another node.
var localOnly = []pb.MessageType{
	pb.MessageType_MsgReadIndex, pb.MessageType_MsgReadIndexResp, // not used by this protocol
	pb.MessageType_MsgHup, pb.MessageType_MsgBeat, pb.MessageType_MsgProp, pb.MessageType_MsgUnreachable,
	pb.MessageType_MsgSnapStatus, pb.MessageType_MsgCheckQuorum, pb.MessageType_MsgStorageAppend,
	pb.MessageType_MsgStorageAppendResp, pb.MessageType_MsgStorageApply, pb.MessageType_MsgStorageApplyResp,
}

// checkRaft is the boundary's verdict: "" to step the message, or the
// reason it is refused.
func (m *Machine) checkRaft(msg *pb.Message) string {
	from := msg.GetFrom()
	if from == 0 || from == m.id || msg.GetTo() != m.id {
		return RaftUnknownSender
	}
	if !slices.ContainsFunc(m.members, func(id identity.PeerID) bool { return RaftID(id) == from }) {
		return RaftUnknownSender
	}
	t := msg.GetType()
	if _, known := pb.MessageType_name[int32(t)]; !known {
		return RaftUnknownType // raft indexes tables by type and panics on others
	}
	if slices.Contains(localOnly, t) {
		return RaftLocalOnly
	}
	if msg.GetTerm() == 0 {
		// raft stamps every message it sends to a peer with a term (read
		// index requests aside, which this protocol does not use); a
		// vote request without one makes raft panic answering it.
		return RaftNoTerm
	}
	voter := slices.Contains(m.cs.GetVoters(), from) || slices.Contains(m.cs.GetVotersOutgoing(), from)
	if !voter {
		if !slices.Contains(responses, t) {
			return RaftLearner
		}
	}
	last, err := m.storage.LastIndex()
	if err != nil {
		return RaftBadAppend
	}
	switch t {
	case pb.MessageType_MsgHeartbeat:
		if msg.GetCommit() > last {
			return RaftBadCommit
		}
	case pb.MessageType_MsgApp:
		prevIndex, prevTerm := msg.GetIndex(), msg.GetLogTerm()
		for _, e := range msg.GetEntries() {
			if e.GetIndex() != prevIndex+1 || e.GetTerm() < prevTerm || e.GetTerm() > msg.GetTerm() {
				return RaftBadAppend
			}
			prevIndex, prevTerm = e.GetIndex(), e.GetTerm()
		}
	case pb.MessageType_MsgAppResp:
		if !msg.GetReject() && msg.GetIndex() > last {
			return RaftBadAppend
		}
	case pb.MessageType_MsgSnap:
		s, err := DecodeSnapshot(msg.GetSnapshot().GetData())
		if err == nil {
			err = m.verifySnapshot(s)
		}
		if err != nil {
			m.alarm("refused a snapshot from raft node %x: %v", from, err)
			return RaftBadSnapshot
		}
	}
	return ""
}

// refuseRaft counts a refused Raft message.
func (m *Machine) refuseRaft(reason string) {
	if m.Counters.RaftRefused == nil {
		m.Counters.RaftRefused = map[string]uint64{}
	}
	m.Counters.RaftRefused[reason]++
}

// guard runs f, which calls into raft; a panic inside raft halts the
// member with an alarm instead of killing the process. After a panic raft's
// state cannot be trusted, so nothing calls into it again.
func (m *Machine) guard(what string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			m.refuseRaft(RaftPanic)
			m.halted = fmt.Sprintf("raft panicked in %s: %v", what, r)
			m.alarm("halted: %s", m.halted)
		}
	}()
	f()
}
