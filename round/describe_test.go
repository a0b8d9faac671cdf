package round

import (
	"crypto/sha256"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
)

func describeDigestOf(s string) Digest { return sha256.Sum256([]byte(s)) }

func describeJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// describedReady is a Ready with every field set.
func describedReady() *Ready {
	var cid [32]byte
	a, b := identity.Derive(1, 0), identity.Derive(1, 1)
	base, upd, res := describeDigestOf("base"), describeDigestOf("update"), describeDigestOf("result")
	ann := &Message{Kind: KindAnnounce, Round: 3, Base: base, Digest: upd, Length: 64, Examples: 100}
	ann.Sign(cid, a)
	have := &Message{Kind: KindHave, Round: 3, Digest: upd}
	have.Sign(cid, b)
	att := &Message{Kind: KindAttest, Round: 2, Index: 7, Digest: base}
	att.Sign(cid, b)
	dec := &Message{Kind: KindDecline, Round: 3}
	dec.Sign(cid, b)
	inv := &Message{Kind: KindInvalid, Round: 3, Index: 9, Reason: "base mismatch"}
	inv.Sign(cid, a)
	commit := &Entry{Kind: EntryCommit, Round: 3, Base: base, Prev: describeDigestOf("chain2"), Included: []*Message{ann},
		Haves: []*Message{have}, Aggregator: "fedavg", Result: res}
	ann2 := &Message{Kind: KindAnnounce, Round: 3, Base: base, Digest: describeDigestOf("other update"), Length: 64, Examples: 100}
	ann2.Sign(cid, a)
	abandon := &Entry{Kind: EntryAbandon, Round: 3, Base: base, Prev: describeDigestOf("chain2"), Result: base, Reason: "0 includable updates"}
	add := NewAddMember(b.ID)
	add.Sign(cid, a)
	ccData, err := proto.Marshal(&pb.ConfChangeV2{Changes: []*pb.ConfChangeSingle{{
		Type: pb.ConfChangeType_ConfChangeAddLearnerNode.Enum(), NodeId: proto.Uint64(RaftID(b.ID))}}, Context: add.Encode()})
	if err != nil {
		panic(err)
	}
	ra, rb := RaftID(a.ID), RaftID(b.ID)
	ents := []*pb.Entry{
		{Term: proto.Uint64(2), Index: proto.Uint64(8)},
		{Term: proto.Uint64(2), Index: proto.Uint64(9), Data: commit.Encode()},
		{Term: proto.Uint64(2), Index: proto.Uint64(10), Type: pb.EntryConfChangeV2.Enum(), Data: ccData},
		{Term: proto.Uint64(2), Index: proto.Uint64(11), Data: abandon.Encode()},
	}
	snapData := &Snapshot{State: State{Index: 7, Round: 2, Model: base, Chain: describeDigestOf("chain2")}, Members: []identity.PeerID{a.ID, b.ID},
		Attests: []*Message{att}}
	snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: proto.Uint64(7), Term: proto.Uint64(2),
		ConfState: &pb.ConfState{Voters: []uint64{ra}, Learners: []uint64{rb}}}, Data: describeJSON(snapData)}
	return &Ready{
		HardState: &pb.HardState{Term: proto.Uint64(2), Vote: proto.Uint64(ra), Commit: proto.Uint64(9)},
		Entries:   ents,
		Snapshot:  snap,
		MustSync:  true,
		Messages: []*pb.Message{
			{Type: pb.MessageType_MsgApp.Enum(), From: proto.Uint64(ra), To: proto.Uint64(rb), Term: proto.Uint64(2),
				LogTerm: proto.Uint64(2), Index: proto.Uint64(8), Commit: proto.Uint64(9), Entries: ents[1:2]},
			{Type: pb.MessageType_MsgAppResp.Enum(), From: proto.Uint64(rb), To: proto.Uint64(ra), Term: proto.Uint64(2),
				Index: proto.Uint64(6), Reject: proto.Bool(true), RejectHint: proto.Uint64(5)},
			{Type: pb.MessageType_MsgSnap.Enum(), From: proto.Uint64(ra), To: proto.Uint64(rb), Term: proto.Uint64(2), Snapshot: snap},
		},
		Gossip:    []*Message{ann, have, att, dec, inv},
		Train:     &TrainTask{Round: 3, Base: base},
		SecAgg:    []*SecAggTask{{Phase: PhaseShares, Round: 3, Base: base}},
		Fetch:     []FetchTask{{Digest: upd, From: a.ID, Size: 64}, {Digest: base, From: b.ID}},
		Aggregate: &AggregateTask{Round: 3, Base: base, Included: []*Message{ann}},
		Apply:     &ApplyTask{Index: 9, Term: 2, Entry: commit, Encoded: commit.Encode(), Chain: describeDigestOf("chain3")},
		Install:   &snapData.State,
		Compact:   &CompactTask{Snapshot: snap, CompactTo: 5},
		Sync:      3,
		Members:   []identity.PeerID{a.ID, b.ID},
		Evidence:  []*Evidence{{Round: 3, Author: a.ID, First: ann, Second: ann2}},
		Alarms:    []string{"round 3: proposal dropped: raft proposal dropped"},
	}
}

// Every field of a Ready, in the order the caller carries them out.
func TestDescribeReady(t *testing.T) {
	rd := describedReady()
	require.Equal(t, `Ready MustSync=true:
HardState Term:2 Vote:92e6c8 Commit:9
Entries:
  2/8 empty
  2/9 commit round=3 base=cae66217 prev=a0cbf399 result=f6a214f7 aggregator=fedavg included=(5HgiVJ) haves=1
  2/10 confchange AddLearnerNode 6db037 add-member=csxrmq sigs=1
  2/11 abandon round=3 base=cae66217 prev=a0cbf399 result=cae66217 reason="0 includable updates"
Snapshot Index:7 Term:2 Voters:(92e6c8) Learners:(6db037) round=2 index=7 model=cae66217 chain=a0cbf399 members=2 attests=1
Messages:
  92e6c8->6db037 MsgApp Term:2 Log:2/8 Commit:9 Entries:[2/9 commit round=3 base=cae66217 prev=a0cbf399 result=f6a214f7 aggregator=fedavg included=(5HgiVJ) haves=1]
  6db037->92e6c8 MsgAppResp Term:2 Log:0/6 Rejected (Hint: 5)
  92e6c8->6db037 MsgSnap Term:2 Log:0/0 Snapshot: Index:7 Term:2 Voters:(92e6c8) Learners:(6db037) round=2 index=7 model=cae66217 chain=a0cbf399 members=2 attests=1
Gossip:
  announce round=3 author=5HgiVJ digest=2937013f base=cae66217 length=64 examples=100
  have round=3 author=csxrmq digest=2937013f
  attest round=2 author=csxrmq index=7 digest=cae66217
  decline round=3 author=csxrmq
  invalid round=3 author=5HgiVJ index=9 reason="base mismatch"
Train round=3 base=cae66217
SecAgg shares round=3 base=cae66217
Fetch:
  2937013f from 5HgiVJ size=64
  cae66217 from csxrmq
Aggregate round=3 base=cae66217 included=(5HgiVJ)
Apply 2/9 commit round=3 base=cae66217 prev=a0cbf399 result=f6a214f7 aggregator=fedavg included=(5HgiVJ) haves=1 chain=c5d6d101
Install round=2 index=7 model=cae66217 chain=a0cbf399
Compact to=5 snapshot Index:7 Term:2 Voters:(92e6c8) Learners:(6db037) round=2 index=7 model=cae66217 chain=a0cbf399 members=2 attests=1
Sync round=3
Members 2: (5HgiVJ csxrmq)
Evidence:
  equivocation round=3 author=5HgiVJ first=2937013f second=bbf4ab66
Alarms:
  round 3: proposal dropped: raft proposal dropped
`, DescribeReady(rd))
	require.Equal(t, DescribeReady(rd), DescribeReady(describedReady()), "the same Ready, described twice")
	require.Equal(t, "<empty Ready>", DescribeReady(&Ready{}))
}

// A fresh member hands out the bootstrap snapshot and its training; on
// Campaign it asks the others for pre-votes.
func TestDescribeReadyOfAFreshMember(t *testing.T) {
	var ids []identity.PeerID
	for i := range 3 {
		ids = append(ids, identity.Derive(1, i).ID)
	}
	p := Params{Members: ids, Voters: ids, Fraction: 1, MinParticipants: 1, DeadlineTicks: 40, ElectionTicks: 10,
		MaxExamples: 1000, UpdateBytes: 64, Aggregator: "fedavg"}
	m, err := New(Config{Params: p, Self: identity.Derive(1, 0), Genesis: describeDigestOf("genesis")})
	require.NoError(t, err)
	rd := m.Ready()
	require.Equal(t, `Ready MustSync=false:
Snapshot Index:1 Term:1 Voters:(6db037 92e6c8 95cfc2)
Train round=1 base=aeebad4a
Members 3: (csxrmq 5HgiVJ 6dBvf8)
`, DescribeReady(rd))
	m.Advance(rd)
	require.NoError(t, m.Campaign())
	require.Equal(t, `Ready MustSync=false:
Messages:
  92e6c8->6db037 MsgPreVote Term:1 Log:1/1
  92e6c8->95cfc2 MsgPreVote Term:1 Log:1/1
`, DescribeReady(m.Ready()))
}

// Every exported field of Ready shows in the description: a field added to
// Ready and not to DescribeReady fails here.
func TestDescribeReadyCoversEveryField(t *testing.T) {
	full := DescribeReady(describedReady())
	typ := reflect.TypeFor[Ready]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		rd := describedReady()
		v := reflect.ValueOf(rd).Elem().Field(i)
		require.False(t, v.IsZero(), "describedReady leaves %s unset", f.Name)
		v.SetZero()
		require.NotEqual(t, full, DescribeReady(rd), "DescribeReady does not show %s", f.Name)
	}
}
