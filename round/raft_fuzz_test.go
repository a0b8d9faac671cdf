package round

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The states a FuzzStepRaft machine (fuzzIDs[0] of 3 voters and a learner)
// is in before the fuzzed messages arrive.
const (
	raftFollower     = iota // fresh: term 0, log up to the bootstrap index 1 (term 1), no leader
	raftPreCandidate        // it campaigned: a pre-candidate asking for pre-votes of term 1
	raftLeader              // it won term 1 with fuzzIDs[1]'s vote and appended its empty entry
	raftLedFollower         // it follows fuzzIDs[1], leader of term 2, and committed its empty entry
)

func raftTo(t pb.MessageType, from int, m *Machine, term uint64) *pb.Message {
	return &pb.Message{Type: t.Enum(), From: proto.Uint64(RaftID(fuzzIDs[from].ID)), To: proto.Uint64(m.id), Term: proto.Uint64(term)}
}

func carryOut(m *Machine, n int) {
	for range n {
		m.Advance(m.Ready())
	}
}

// stepRaftMachine builds fuzzIDs[0]'s machine in one of the states above.
func stepRaftMachine(tb testing.TB, state byte) *Machine {
	tb.Helper()
	m := fuzzMachine(tb, 0)
	must := func(err error) {
		if err != nil {
			tb.Fatalf("setting up state %d: %v", state, err)
		}
	}
	switch state {
	case raftPreCandidate, raftLeader:
		term := m.term() + 1
		must(m.Campaign())
		carryOut(m, 1)
		if state == raftPreCandidate {
			break
		}
		must(m.StepRaft(raftTo(pb.MessageType_MsgPreVoteResp, 1, m, term)))
		carryOut(m, 1)
		must(m.StepRaft(raftTo(pb.MessageType_MsgVoteResp, 1, m, term)))
		carryOut(m, 2)
		if !m.IsLeader() {
			tb.Fatal("setting up: not the leader")
		}
	case raftLedFollower:
		app := raftTo(pb.MessageType_MsgApp, 1, m, 2)
		app.Index, app.LogTerm, app.Commit = proto.Uint64(1), proto.Uint64(1), proto.Uint64(2)
		app.Entries = []*pb.Entry{{Index: proto.Uint64(2), Term: proto.Uint64(2), Type: pb.EntryType_EntryNormal.Enum()}}
		must(m.StepRaft(app))
		carryOut(m, 2)
		if m.Leader() != RaftID(fuzzIDs[1].ID) {
			tb.Fatal("setting up: not following fuzzIDs[1]")
		}
	}
	return m
}

// raftStrict: FUZZ_RAFT_STRICT=1 also fails on a panic inside raft that the
// Machine recovered (it halted): a message that passed the Raft boundary
// and still made raft panic. FUZZ_RAFT_STRICT_SKIP lists, separated by
// '|', substrings of halt reasons already known, to look past them.
var (
	raftStrict     = os.Getenv("FUZZ_RAFT_STRICT") != ""
	raftStrictSkip = strings.Split(os.Getenv("FUZZ_RAFT_STRICT_SKIP"), "|")
)

func raftKnownHalt(why string) bool {
	return slices.ContainsFunc(raftStrictSkip, func(s string) bool { return s != "" && strings.Contains(why, s) })
}

// FuzzStepRaft feeds fuzzIDs[0]'s machine (3 voters and a learner, in the
// state setup&3 names) up to two Raft messages unmarshalled from the fuzz
// bytes through Machine.StepRaft, carrying out Ready/Advance and a tick
// three times after each. Bits 2-3 (first message) and 4-5 (second) of
// setup pick its sender: 0 leaves From and To as decoded; 1, 2 (voters)
// or 3 (the learner) overwrite From with that member's raft ID and To with
// the machine's, so the fuzzer gets past the sender check. Property: no
// panic escapes the Machine (raft's own panics are recovered into a halt;
// with FUZZ_RAFT_STRICT=1 those fail too).
func FuzzStepRaft(f *testing.F) {
	f.Fuzz(func(t *testing.T, setup byte, msg1, msg2 []byte) {
		m := stepRaftMachine(t, setup&3)
		for i, data := range [][]byte{msg1, msg2} {
			var msg pb.Message
			if proto.Unmarshal(data, &msg) != nil {
				continue
			}
			if sel := (setup >> (2 + 2*i)) & 3; sel != 0 {
				msg.From = proto.Uint64(RaftID(fuzzIDs[sel].ID))
				msg.To = proto.Uint64(m.id)
			}
			_ = m.StepRaft(&msg)
			for range 3 {
				m.Advance(m.Ready())
				m.Tick()
			}
		}
		m.Advance(m.Ready())
		_ = m.Status()
		if raftStrict && m.Status().Counters.RaftRefused[RaftPanic] > 0 && !raftKnownHalt(m.Halted()) {
			t.Fatalf("a message passed the Raft boundary and raft panicked: %s", m.Halted())
		}
	})
}

// captureRaft runs the four fixture members against each other, member
// lead campaigning first, and returns the Raft messages they exchanged:
// elections, appends of real entries (an AddMember and a round entry),
// heartbeats and their responses.
func captureRaft(tb testing.TB, lead int) []*pb.Message {
	tb.Helper()
	var ms []*Machine
	byID := map[uint64]*Machine{}
	for i := range 4 {
		m := fuzzMachine(tb, i)
		ms = append(ms, m)
		byID[m.id] = m
	}
	if err := ms[lead].Campaign(); err != nil {
		tb.Fatal(err)
	}
	var out []*pb.Message
	for step := range 60 {
		if step == 10 && ms[lead].IsLeader() {
			if err := ms[lead].ProposeAddMember(seedAddMember(0, 1, 2)); err != nil {
				tb.Fatal(err)
			}
			if err := ms[lead].rn.Propose(seedEntries()["commit"].Encode()); err != nil {
				tb.Fatal(err)
			}
		}
		var sent []*pb.Message
		for _, m := range ms {
			rd := m.Ready()
			sent = append(sent, rd.Messages...)
			m.Advance(rd)
			if step%3 == 0 {
				m.Tick()
			}
		}
		for _, msg := range sent {
			out = append(out, proto.Clone(msg).(*pb.Message))
			if to := byID[msg.GetTo()]; to != nil {
				_ = to.StepRaft(msg)
			}
		}
	}
	return out
}

func stepRaftSeeds(tb testing.TB) map[string][]any {
	out := map[string][]any{}
	seen := map[string]int{}
	add := func(prefix string, setup byte, msg *pb.Message) {
		name := fmt.Sprintf("%s-%s", prefix, msg.GetType())
		for _, e := range msg.GetEntries() {
			if len(e.GetData()) > 0 {
				name += "-" + e.GetType().String()
			}
		}
		if seen[name] >= 2 {
			return
		}
		seen[name]++
		out[fmt.Sprintf("%s-%d", name, seen[name])] = []any{setup, mustMarshal(msg), []byte{}}
	}
	id0 := RaftID(fuzzIDs[0].ID)
	for lead, prefix := range map[int]string{0: "lead0", 1: "lead1"} {
		for _, msg := range captureRaft(tb, lead) {
			if msg.GetTo() == id0 {
				// As sent, to a machine in the state it most likely fits.
				setup := byte(raftFollower)
				if lead == 0 {
					setup = raftLeader
				}
				add(prefix+"-to0", setup, msg)
			} else {
				// Another member's traffic, resent as from its sender to member 0.
				sel := byte(1)
				for i := 1; i < 4; i++ {
					if msg.GetFrom() == RaftID(fuzzIDs[i].ID) {
						sel = byte(i)
					}
				}
				add(prefix+"-other", raftLedFollower|sel<<2, msg)
			}
		}
	}
	// Hand-made messages the Raft boundary refuses, and ones it passes.
	m := fuzzMachine(tb, 0)
	hb := raftTo(pb.MessageType_MsgHeartbeat, 1, m, 2)
	hb.Commit = proto.Uint64(1 << 40) // panicked in raftLog.commitTo before the boundary
	out["heartbeat-commit-beyond-log"] = []any{byte(raftFollower), mustMarshal(hb), []byte{}}
	gap := raftTo(pb.MessageType_MsgApp, 2, m, 2)
	gap.Index, gap.LogTerm = proto.Uint64(1), proto.Uint64(1)
	gap.Entries = []*pb.Entry{{Index: proto.Uint64(5), Term: proto.Uint64(2)}}
	out["append-gap"] = []any{byte(raftFollower), mustMarshal(gap), []byte{}}
	resp := raftTo(pb.MessageType_MsgAppResp, 3, m, 2)
	resp.Index = proto.Uint64(1 << 30)
	out["learner-appresp-beyond-log"] = []any{byte(raftLeader), mustMarshal(resp), []byte{}}
	prop := raftTo(pb.MessageType_MsgProp, 1, m, 0)
	prop.Entries = []*pb.Entry{{Data: []byte("x")}}
	out["remote-proposal"] = []any{byte(raftLeader), mustMarshal(prop), []byte{}}
	vote := raftTo(pb.MessageType_MsgVote, 3, m, 5)
	out["learner-vote"] = []any{byte(raftFollower), mustMarshal(vote), []byte{}}
	// An attested snapshot of round 5 (it installs) and the same data with
	// metadata that disagrees with it.
	s := seedSnapshot()
	cs := &pb.ConfState{Voters: []uint64{RaftID(fuzzIDs[0].ID), RaftID(fuzzIDs[1].ID), RaftID(fuzzIDs[2].ID)}, Learners: []uint64{RaftID(fuzzIDs[3].ID)}}
	snap := raftTo(pb.MessageType_MsgSnap, 1, m, 2)
	snap.Snapshot = &pb.Snapshot{Data: mustMarshal(s), Metadata: &pb.SnapshotMetadata{Index: proto.Uint64(s.State.Index), Term: proto.Uint64(2), ConfState: cs}}
	out["snapshot-attested"] = []any{byte(raftLedFollower), mustMarshal(snap), mustMarshal(hb)}
	odd := proto.Clone(snap).(*pb.Message)
	odd.Snapshot.Metadata.Index = proto.Uint64(3)
	odd.Snapshot.Metadata.ConfState = &pb.ConfState{Voters: []uint64{RaftID(fuzzIDs[1].ID)}, Learners: []uint64{RaftID(fuzzIDs[1].ID)}}
	out["snapshot-attested-odd-metadata"] = []any{byte(raftLedFollower), mustMarshal(odd), []byte{}}
	out["garbage"] = []any{byte(0xff), []byte("\x08\x03\x10\xff\xff\xff\xff\x0f"), []byte("\xff\xff")}
	return out
}
