package round

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
)

// Kinds of the signed records a membership change carries. They travel in
// log entries, never as gossip.
const (
	KindJoin      Kind = "join"       // the new member asks to join (proves it holds its key)
	KindAddMember Kind = "add-member" // a current member agrees to add Reason (a peer ID)
)

// AddMember is the request a membership entry carries: the new member's own
// signature (its record: it holds the key of the peer ID being added) and
// the signatures of a majority of current members.
type AddMember struct {
	Member identity.PeerID `json:"member"`
	Sigs   []*Message      `json:"sigs"`
}

// NewAddMember starts an unsigned request to add member.
func NewAddMember(member identity.PeerID) *AddMember {
	return &AddMember{Member: member}
}

// Sign adds a signature: the new member's own, or a current member's.
// Signing twice replaces the earlier signature.
func (a *AddMember) Sign(consortium [32]byte, signer identity.Identity) {
	kind := KindAddMember
	if identity.Compare(signer.ID, a.Member) == 0 {
		kind = KindJoin
	}
	s := &Message{Kind: kind, Round: 1, Reason: a.Member.String()}
	s.Sign(consortium, signer)
	a.Sigs = slices.DeleteFunc(a.Sigs, func(x *Message) bool { return x != nil && identity.Compare(x.Author, signer.ID) == 0 })
	a.Sigs = append(a.Sigs, s)
}

// Signers returns who signed, in signature order.
func (a *AddMember) Signers() []identity.PeerID {
	var ids []identity.PeerID
	for _, s := range a.Sigs {
		if s != nil {
			ids = append(ids, s.Author)
		}
	}
	return ids
}

// Encode returns the request's wire and log form.
func (a *AddMember) Encode() []byte {
	b, err := json.Marshal(a)
	if err != nil {
		panic(err)
	}
	return b
}

// DecodeAddMember parses a request.
func DecodeAddMember(b []byte) (*AddMember, error) {
	var a AddMember
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("round: add-member request: %w", err)
	}
	return &a, nil
}

// ErrNotLeader is returned for a proposal made on a member that does not lead.
var ErrNotLeader = errors.New("round: not the leader")

// ProposeAddMember proposes adding a member as a Raft learner. It must run
// on the leader; the entry is validated by every member when it commits.
func (m *Machine) ProposeAddMember(a *AddMember) error {
	if !m.IsLeader() {
		return ErrNotLeader
	}
	cc := &pb.ConfChangeV2{
		Changes: []*pb.ConfChangeSingle{{Type: pb.ConfChangeType_ConfChangeAddLearnerNode.Enum(), NodeId: proto.Uint64(RaftID(a.Member))}},
		Context: a.Encode(),
	}
	return m.rn.ProposeConfChange(cc)
}

// validateAddMember is the validity of a membership entry against the
// membership applied so far.
func (m *Machine) validateAddMember(cc *pb.ConfChangeV2) (*AddMember, error) {
	a, err := DecodeAddMember(cc.GetContext())
	if err != nil {
		return nil, err
	}
	if _, err := a.Member.PublicKey(); err != nil {
		return nil, err
	}
	if len(cc.GetChanges()) != 1 || cc.GetChanges()[0].GetType() != pb.ConfChangeType_ConfChangeAddLearnerNode ||
		cc.GetChanges()[0].GetNodeId() != RaftID(a.Member) {
		return nil, errors.New("add-member: the raft change must add the member's node ID as a learner")
	}
	if contains(m.members, a.Member) {
		return nil, fmt.Errorf("add-member: %s is already a member", a.Member.Short())
	}
	for _, id := range m.members {
		if RaftID(id) == RaftID(a.Member) {
			return nil, fmt.Errorf("add-member: raft node ID of %s collides with %s", a.Member.Short(), id.Short())
		}
	}
	if !slices.ContainsFunc(a.Sigs, func(r *Message) bool {
		return r != nil && r.Kind == KindJoin && r.Reason == a.Member.String() && identity.Compare(r.Author, a.Member) == 0 &&
			r.Verify(m.p.Consortium) == nil
	}) {
		return nil, errors.New("add-member: the new member's own record is missing or not signed by it")
	}
	signed := map[string]bool{}
	for _, s := range a.Sigs {
		if s == nil || s.Kind != KindAddMember || s.Reason != a.Member.String() || !contains(m.members, s.Author) || s.Verify(m.p.Consortium) != nil {
			continue
		}
		signed[string(s.Author)] = true
	}
	if len(signed) <= len(m.members)/2 {
		return nil, fmt.Errorf("add-member: %s signed by %d of %d members, a majority is needed", a.Member.Short(), len(signed), len(m.members))
	}
	return a, nil
}

// applyConfChange applies (or, if invalid, cancels) a committed membership entry.
func (m *Machine) applyConfChange(ent *pb.Entry) {
	var cc pb.ConfChangeV2
	var err error
	if ent.GetType() == pb.EntryConfChange {
		var v1 pb.ConfChange
		if err = proto.Unmarshal(ent.GetData(), &v1); err == nil {
			cc = *v1.AsV2()
		}
	} else {
		err = proto.Unmarshal(ent.GetData(), &cc)
	}
	var a *AddMember
	if err == nil {
		a, err = m.validateAddMember(&cc)
	}
	if err != nil {
		// Cancelled: a change of node ID 0 is ignored, the configuration stays.
		m.rn.ApplyConfChange(&pb.ConfChange{Type: pb.ConfChangeType_ConfChangeAddLearnerNode.Enum(), NodeId: proto.Uint64(0)})
		if ent.GetIndex() > m.st.Index {
			m.Counters.InvalidEntries++
			m.invalid(ent, nil, err)
		}
		return
	}
	m.cs = m.rn.ApplyConfChange(&cc)
	m.members = append(m.members, a.Member)
	slices.SortFunc(m.members, identity.Compare)
}

// Members returns the applied membership.
func (m *Machine) Members() []identity.PeerID { return slices.Clone(m.members) }
