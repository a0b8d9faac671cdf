package round

import (
	"fmt"
	"strings"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
)

// DescribeReady returns a stable, human-readable text form of a Ready for
// tests and debugging, in the manner of etcd raft's DescribeReady: one line
// per item in the order the caller carries them out (persist, send, tasks),
// digests cut to 8 hex digits, peer IDs to their Short form and Raft node
// IDs to 6 hex digits. It depends only on the Ready's contents and their
// order, never on map order.
func DescribeReady(rd *Ready) string {
	if rd == nil {
		return "<nil Ready>"
	}
	var b strings.Builder
	if rd.HardState != nil {
		fmt.Fprintf(&b, "HardState Term:%d Vote:%s Commit:%d\n", rd.HardState.GetTerm(),
			describeNode(rd.HardState.GetVote()), rd.HardState.GetCommit())
	}
	if len(rd.Entries) > 0 {
		b.WriteString("Entries:\n")
		for _, e := range rd.Entries {
			fmt.Fprintf(&b, "  %s\n", describeEntry(e))
		}
	}
	if rd.Snapshot != nil {
		fmt.Fprintf(&b, "Snapshot %s\n", describeSnapshot(rd.Snapshot))
	}
	if len(rd.Messages) > 0 {
		b.WriteString("Messages:\n")
		for _, m := range rd.Messages {
			fmt.Fprintf(&b, "  %s\n", describeRaftMessage(m))
		}
	}
	if len(rd.Gossip) > 0 {
		b.WriteString("Gossip:\n")
		for _, m := range rd.Gossip {
			fmt.Fprintf(&b, "  %s\n", describeMessage(m))
		}
	}
	if t := rd.Train; t != nil {
		fmt.Fprintf(&b, "Train round=%d base=%s\n", t.Round, describeDigest(t.Base))
	}
	for _, t := range rd.SecAgg {
		fmt.Fprintf(&b, "SecAgg %s round=%d base=%s\n", t.Phase, t.Round, describeDigest(t.Base))
	}
	if len(rd.Fetch) > 0 {
		b.WriteString("Fetch:\n")
		for _, f := range rd.Fetch {
			fmt.Fprintf(&b, "  %s from %s", describeDigest(f.Digest), describePeer(f.From))
			if f.Size > 0 {
				fmt.Fprintf(&b, " size=%d", f.Size)
			}
			b.WriteByte('\n')
		}
	}
	if t := rd.Aggregate; t != nil {
		fmt.Fprintf(&b, "Aggregate round=%d base=%s included=%s\n", t.Round, describeDigest(t.Base), describeAuthors(t.Included))
	}
	if t := rd.Apply; t != nil {
		fmt.Fprintf(&b, "Apply %d/%d %s chain=%s\n", t.Term, t.Index, describeRoundEntry(t.Entry), describeDigest(t.Chain))
	}
	if s := rd.Install; s != nil {
		fmt.Fprintf(&b, "Install %s\n", describeState(*s))
	}
	if c := rd.Compact; c != nil {
		fmt.Fprintf(&b, "Compact to=%d snapshot %s\n", c.CompactTo, describeSnapshot(c.Snapshot))
	}
	if rd.Sync != 0 {
		fmt.Fprintf(&b, "Sync round=%d\n", rd.Sync)
	}
	if rd.Members != nil {
		fmt.Fprintf(&b, "Members %d: %s\n", len(rd.Members), describePeers(rd.Members))
	}
	if len(rd.Evidence) > 0 {
		b.WriteString("Evidence:\n")
		for _, ev := range rd.Evidence {
			fmt.Fprintf(&b, "  %s\n", describeEvidence(ev))
		}
	}
	if len(rd.Alarms) > 0 {
		b.WriteString("Alarms:\n")
		for _, a := range rd.Alarms {
			fmt.Fprintf(&b, "  %s\n", a)
		}
	}
	if b.Len() == 0 {
		return "<empty Ready>"
	}
	return fmt.Sprintf("Ready MustSync=%t:\n%s", rd.MustSync, b.String())
}

// describeDigest is a digest's first 8 hex digits; the zero digest is "-".
func describeDigest(d Digest) string {
	if d == (Digest{}) {
		return "-"
	}
	return d.String()[:8]
}

func describePeer(id identity.PeerID) string {
	if len(id) == 0 {
		return "-"
	}
	return id.Short()
}

// describeNode is a Raft node ID's first 6 hex digits; 0 (none) is "-".
func describeNode(id uint64) string {
	if id == 0 {
		return "-"
	}
	return fmt.Sprintf("%016x", id)[:6]
}

func describeNodes(ids []uint64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = describeNode(id)
	}
	return "(" + strings.Join(s, " ") + ")"
}

func describePeers(ids []identity.PeerID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = describePeer(id)
	}
	return "(" + strings.Join(s, " ") + ")"
}

func describeEvidence(ev *Evidence) string {
	if ev == nil {
		return "<nil evidence>"
	}
	digest := func(m *Message) string {
		if m == nil {
			return "nil"
		}
		return describeDigest(m.Digest)
	}
	return fmt.Sprintf("equivocation round=%d author=%s first=%s second=%s", ev.Round, describePeer(ev.Author),
		digest(ev.First), digest(ev.Second))
}

func describeAuthors(ms []*Message) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		if m == nil {
			s[i] = "nil"
			continue
		}
		s[i] = describePeer(m.Author)
	}
	return "(" + strings.Join(s, " ") + ")"
}

func describeState(s State) string {
	return fmt.Sprintf("round=%d index=%d model=%s chain=%s", s.Round, s.Index, describeDigest(s.Model), describeDigest(s.Chain))
}

// describeEntry is a Raft log entry as term/index and what it carries.
func describeEntry(e *pb.Entry) string {
	return fmt.Sprintf("%d/%d %s", e.GetTerm(), e.GetIndex(), describeEntryData(e))
}

func describeEntryData(e *pb.Entry) string {
	switch e.GetType() {
	case pb.EntryConfChange:
		var cc pb.ConfChange
		if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
			return fmt.Sprintf("confchange (undecodable: %v)", err)
		}
		return describeConfChange(cc.AsV2())
	case pb.EntryConfChangeV2:
		var cc pb.ConfChangeV2
		if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
			return fmt.Sprintf("confchange (undecodable: %v)", err)
		}
		return describeConfChange(&cc)
	}
	if len(e.GetData()) == 0 {
		return "empty"
	}
	re, err := DecodeEntry(e.GetData())
	if err != nil {
		return fmt.Sprintf("normal %d bytes (undecodable: %v)", len(e.GetData()), err)
	}
	return describeRoundEntry(re)
}

// describeRoundEntry is a typed entry: its kind, round and outcome.
func describeRoundEntry(e *Entry) string {
	if e == nil {
		return "<nil entry>"
	}
	s := fmt.Sprintf("%s round=%d base=%s prev=%s result=%s", e.Kind, e.Round, describeDigest(e.Base), describeDigest(e.Prev), describeDigest(e.Result))
	if e.Kind == EntryCommit {
		s += fmt.Sprintf(" aggregator=%s included=%s haves=%d", e.Aggregator, describeAuthors(e.Included), len(e.Haves))
	}
	if e.Reason != "" {
		s += fmt.Sprintf(" reason=%q", e.Reason)
	}
	return s
}

func describeConfChange(cc *pb.ConfChangeV2) string {
	var parts []string
	for _, c := range cc.GetChanges() {
		parts = append(parts, fmt.Sprintf("%s %s", strings.TrimPrefix(c.GetType().String(), "ConfChange"), describeNode(c.GetNodeId())))
	}
	s := "confchange " + strings.Join(parts, ", ")
	if ctx := cc.GetContext(); len(ctx) > 0 {
		if a, err := DecodeAddMember(ctx); err == nil {
			s += fmt.Sprintf(" add-member=%s sigs=%d", describePeer(a.Member), len(a.Sigs))
		} else {
			s += fmt.Sprintf(" context=%d bytes", len(ctx))
		}
	}
	return s
}

func describeSnapshot(snap *pb.Snapshot) string {
	if snap == nil {
		return "<nil>"
	}
	md := snap.GetMetadata()
	cs := md.GetConfState()
	s := fmt.Sprintf("Index:%d Term:%d Voters:%s", md.GetIndex(), md.GetTerm(), describeNodes(cs.GetVoters()))
	if len(cs.GetLearners()) > 0 {
		s += " Learners:" + describeNodes(cs.GetLearners())
	}
	if data := snap.GetData(); len(data) > 0 {
		if a, err := DecodeSnapshot(data); err == nil {
			s += fmt.Sprintf(" %s members=%d attests=%d", describeState(a.State), len(a.Members), len(a.Attests))
		} else {
			s += fmt.Sprintf(" data=%d bytes (undecodable)", len(data))
		}
	}
	return s
}

// describeRaftMessage is a Raft message as from->to type term and index.
func describeRaftMessage(m *pb.Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s->%s %s Term:%d Log:%d/%d", describeNode(m.GetFrom()), describeNode(m.GetTo()), m.GetType(),
		m.GetTerm(), m.GetLogTerm(), m.GetIndex())
	if m.GetReject() {
		fmt.Fprintf(&b, " Rejected (Hint: %d)", m.GetRejectHint())
	}
	if m.GetCommit() != 0 {
		fmt.Fprintf(&b, " Commit:%d", m.GetCommit())
	}
	if m.GetVote() != 0 {
		fmt.Fprintf(&b, " Vote:%s", describeNode(m.GetVote()))
	}
	if ents := m.GetEntries(); len(ents) > 0 {
		s := make([]string, len(ents))
		for i, e := range ents {
			s[i] = describeEntry(e)
		}
		fmt.Fprintf(&b, " Entries:[%s]", strings.Join(s, ", "))
	}
	if snap := m.GetSnapshot(); snap != nil && snap.GetMetadata().GetIndex() != 0 {
		fmt.Fprintf(&b, " Snapshot: %s", describeSnapshot(snap))
	}
	return b.String()
}

// describeMessage is a gossiped message: kind, round, author and what it says.
func describeMessage(m *Message) string {
	if m == nil {
		return "<nil message>"
	}
	s := fmt.Sprintf("%s round=%d author=%s", m.Kind, m.Round, describePeer(m.Author))
	switch m.Kind {
	case KindAnnounce:
		s += fmt.Sprintf(" digest=%s base=%s length=%d examples=%d", describeDigest(m.Digest), describeDigest(m.Base), m.Length, m.Examples)
	case KindHave:
		s += fmt.Sprintf(" digest=%s", describeDigest(m.Digest))
	case KindAttest:
		s += fmt.Sprintf(" index=%d digest=%s", m.Index, describeDigest(m.Digest))
	case KindInvalid:
		s += fmt.Sprintf(" index=%d reason=%q", m.Index, m.Reason)
	case KindDecline:
	default:
		if m.Digest != (Digest{}) {
			s += fmt.Sprintf(" digest=%s", describeDigest(m.Digest))
		}
		if m.Index != 0 {
			s += fmt.Sprintf(" index=%d", m.Index)
		}
		if m.Reason != "" {
			s += fmt.Sprintf(" reason=%q", m.Reason)
		}
	}
	return s
}
