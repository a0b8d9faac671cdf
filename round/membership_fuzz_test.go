package round

import (
	"reflect"
	"strings"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
)

func addMemberSeeds() map[string][]byte {
	full := seedAddMember(0, 1, 2) // the joiner and 3 of 4 members: a majority
	short := seedAddMember(0, 1)   // 2 of 4: not a majority
	v1 := &pb.ConfChange{Type: pb.ConfChangeType_ConfChangeAddLearnerNode.Enum(), NodeId: proto.Uint64(RaftID(full.Member)), Context: full.Encode()}
	wrongNode := addMemberChange(full)
	wrongNode.Changes[0].NodeId = proto.Uint64(RaftID(fuzzIDs[3].ID))
	seeds := map[string][]byte{
		"json-majority":       full.Encode(),
		"json-minority":       short.Encode(),
		"json-unsigned":       NewAddMember(fuzzIDs[4].ID).Encode(),
		"json-null-sigs":      []byte(strings.Replace(string(full.Encode()), `"sigs":[`, `"sigs":[null,`, 1)),
		"json-existing":       seedAddMemberOf(3, 0, 1, 2).Encode(),
		"ccv2-majority":       mustMarshal(addMemberChange(full)),
		"ccv2-minority":       mustMarshal(addMemberChange(short)),
		"ccv2-wrong-node":     mustMarshal(wrongNode),
		"ccv2-empty-context":  mustMarshal(&pb.ConfChangeV2{Changes: addMemberChange(full).Changes}),
		"ccv1-majority":       mustMarshal(v1),
		"ccv2-garbage-ctx":    mustMarshal(&pb.ConfChangeV2{Context: []byte("{\"member\":")}),
		"ccv2-two-changes":    mustMarshal(&pb.ConfChangeV2{Changes: append(addMemberChange(full).Changes, addMemberChange(short).Changes...), Context: full.Encode()}),
		"json-bad-member-b64": []byte(`{"member":"!!","sigs":[]}`),
	}
	return withMalformed(seeds)
}

// seedAddMemberOf is a request to add fuzzIDs[member], signed by it and signers.
func seedAddMemberOf(member int, signers ...int) *AddMember {
	a := NewAddMember(fuzzIDs[member].ID)
	a.Sign(fuzzConsortium, fuzzIDs[member])
	for _, s := range signers {
		a.Sign(fuzzConsortium, fuzzIDs[s])
	}
	return a
}

// FuzzDecodeAddMember decodes the bytes every way an AddMember request
// reaches a member: as the JSON request itself (DecodeAddMember), and as
// the committed entry's data, a ConfChangeV2 (or a v1 ConfChange) whose
// Context is the JSON, which applyConfChange unmarshals and
// validateAddMember judges against the applied membership. Properties: no
// panic; a decoded request re-encodes to one equal to it; a change the
// member would apply adds exactly the requested member as a learner, with
// its own join record and signatures of a majority of current members.
func FuzzDecodeAddMember(f *testing.F) {
	m := fuzzMachine(f, 0) // validateAddMember only reads the machine
	f.Fuzz(func(t *testing.T, data []byte) {
		if a, err := DecodeAddMember(data); err == nil {
			a2, err := DecodeAddMember(a.Encode())
			if err != nil || !reflect.DeepEqual(a, a2) {
				t.Fatalf("round trip of %q: %v", data, err)
			}
			_ = a.Signers()
		} else if a != nil {
			t.Fatalf("DecodeAddMember error %v with request %v", err, a)
		}
		var cc pb.ConfChangeV2
		if proto.Unmarshal(data, &cc) == nil {
			checkAddMember(t, m, &cc)
		}
		var v1 pb.ConfChange
		if proto.Unmarshal(data, &v1) == nil {
			checkAddMember(t, m, v1.AsV2())
		}
	})
}

func checkAddMember(t *testing.T, m *Machine, cc *pb.ConfChangeV2) {
	t.Helper()
	a, err := m.validateAddMember(cc)
	if err != nil {
		if a != nil {
			t.Fatalf("validateAddMember error %v with request %v", err, a)
		}
		return
	}
	if ch := cc.GetChanges(); len(ch) != 1 || ch[0].GetType() != pb.ConfChangeType_ConfChangeAddLearnerNode || ch[0].GetNodeId() != RaftID(a.Member) {
		t.Fatalf("accepted change %v for member %s", cc, a.Member)
	}
	if contains(m.members, a.Member) {
		t.Fatalf("accepted a request to add an existing member %s", a.Member.Short())
	}
	joined, signers := false, map[string]bool{}
	for _, s := range a.Sigs {
		if s == nil || s.Reason != a.Member.String() || s.Verify(fuzzConsortium) != nil {
			continue
		}
		switch {
		case s.Kind == KindJoin && identity.Compare(s.Author, a.Member) == 0:
			joined = true
		case s.Kind == KindAddMember && contains(m.members, s.Author):
			signers[string(s.Author)] = true
		}
	}
	if !joined || len(signers) <= len(m.members)/2 {
		t.Fatalf("accepted a request with join record %v and %d of %d member signatures", joined, len(signers), len(m.members))
	}
}
