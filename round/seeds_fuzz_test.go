package round

// Shared fixtures of the round fuzz targets, and the writer of their seed
// corpora (testdata/fuzz/<FuzzName>/). The seeds are real messages, entries,
// snapshots, membership requests and Raft messages made with this package's
// own encoders, plus a few malformed ones. Regenerate them with
//
//	FUZZ_WRITE_SEEDS=1 go test -run '^TestWriteFuzzSeeds$' ./round
//
// (ed25519 signatures and encoding/json are deterministic, so the files only
// change when an encoding does).

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
)

// fuzzConsortium is the consortium of every fuzz fixture.
var fuzzConsortium = [32]byte{'f', 'u', 'z', 'z'}

// fuzzIDs are the fixtures' identities: 0..2 are the voters, 3 is a learner
// (a member that does not vote), 4 is not a member (it asks to join).
var fuzzIDs = func() []identity.Identity {
	var ids []identity.Identity
	for i := range 5 {
		ids = append(ids, identity.Derive(91, i))
	}
	return ids
}()

// fuzzParams are 3 voters and 1 learner: fuzzIDs[0..3].
func fuzzParams() Params {
	var members []identity.PeerID
	for _, id := range fuzzIDs[:4] {
		members = append(members, id.ID)
	}
	return Params{Consortium: fuzzConsortium, Members: members, Voters: members[:3], Fraction: 1, MinParticipants: 1,
		DeadlineTicks: 40, ElectionTicks: 10, MaxExamples: 1000, UpdateBytes: 40, Aggregator: "fedavg", RetainRounds: 10}
}

// fuzzGenesis is the fixtures' G(0) digest.
var fuzzGenesis = Digest(sha256.Sum256([]byte("fuzz genesis")))

// fuzzMachine is fuzzIDs[self] bootstrapped fresh, its first Ready carried out.
func fuzzMachine(tb testing.TB, self int) *Machine {
	tb.Helper()
	m, err := New(Config{Params: fuzzParams(), Self: fuzzIDs[self], Genesis: fuzzGenesis})
	if err != nil {
		tb.Fatal(err)
	}
	m.Advance(m.Ready())
	return m
}

func digestOf(s string) Digest { return Digest(sha256.Sum256([]byte(s))) }

// seedMessages are signed gossip messages of every kind, by the voters.
func seedMessages() map[string]*Message {
	out := map[string]*Message{}
	sign := func(name string, signer int, m *Message) {
		m.Sign(fuzzConsortium, fuzzIDs[signer])
		out[name] = m
	}
	sign("announce", 0, &Message{Kind: KindAnnounce, Round: 1, Base: fuzzGenesis, Digest: digestOf("update 0"), Length: 40, Examples: 600})
	sign("announce-1", 1, &Message{Kind: KindAnnounce, Round: 1, Base: fuzzGenesis, Digest: digestOf("update 1"), Length: 40, Examples: 400})
	sign("announce-r3", 1, &Message{Kind: KindAnnounce, Round: 3, Base: digestOf("G2"), Digest: digestOf("update 1"), Length: 40, Examples: 7})
	sign("have", 1, &Message{Kind: KindHave, Round: 1, Digest: digestOf("update 0")})
	sign("decline", 2, &Message{Kind: KindDecline, Round: 2})
	sign("attest", 2, &Message{Kind: KindAttest, Round: 1, Digest: digestOf("G1"), Index: 3})
	sign("invalid", 0, &Message{Kind: KindInvalid, Round: 1, Index: 4, Reason: "entry 4: result digest differs"})
	sign("learner-have", 3, &Message{Kind: KindHave, Round: 1, Digest: digestOf("update 0")})
	sign("outsider-announce", 4, &Message{Kind: KindAnnounce, Round: 1, Base: fuzzGenesis, Digest: digestOf("update 4"), Length: 40, Examples: 1})
	return out
}

// malformedJSON are inputs every JSON decoder here must refuse or survive.
var malformedJSON = map[string][]byte{
	"empty":        {},
	"null":         []byte("null"),
	"object":       []byte("{}"),
	"array":        []byte("[]"),
	"number":       []byte("1e999"),
	"unterminated": []byte(`{"kind":"announce","round":1`),
	"nested":       []byte(strings.Repeat("[", 4096) + strings.Repeat("]", 4096)),
	"bad-utf8":     []byte("{\"kind\":\"invalid\",\"reason\":\"\xff\xfe\"}"),
}

// seedEntries are a commit of real announcements and an abandon.
func seedEntries() map[string]*Entry {
	ms := seedMessages()
	inc := []*Message{ms["announce"], ms["announce-1"]}
	sortAnnouncements(inc)
	var haves []*Message
	for _, u := range []string{"update 0", "update 1"} { // Haves by digest, then author
		var hs []*Message
		for _, v := range []int{0, 1, 2} {
			h := &Message{Kind: KindHave, Round: 1, Digest: digestOf(u)}
			h.Sign(fuzzConsortium, fuzzIDs[v])
			hs = append(hs, h)
		}
		haves = append(haves, hs...)
	}
	slices.SortFunc(haves, func(a, b *Message) int {
		if c := bytes.Compare(a.Digest[:], b.Digest[:]); c != 0 {
			return c
		}
		return identity.Compare(a.Author, b.Author)
	})
	return map[string]*Entry{
		"commit":  {Kind: EntryCommit, Round: 1, Base: fuzzGenesis, Prev: Digest{}, Included: inc, Haves: haves, Aggregator: "fedavg", Result: digestOf("G1")},
		"abandon": {Kind: EntryAbandon, Round: 2, Base: digestOf("G1"), Prev: digestOf("chain 1"), Result: digestOf("G1"), Reason: "deadline passed with 0 of 1 updates"},
	}
}

// seedSnapshot is a snapshot of round 5 attested by all three voters.
func seedSnapshot() *Snapshot {
	st := State{Index: 12, Round: 5, Model: digestOf("G5"), Chain: digestOf("chain 5")}
	s := &Snapshot{State: st}
	for _, id := range fuzzIDs[:4] {
		s.Members = append(s.Members, id.ID)
	}
	for _, v := range fuzzIDs[:3] {
		a := &Message{Kind: KindAttest, Round: st.Round, Digest: st.Model, Index: st.Index}
		a.Sign(fuzzConsortium, v)
		s.Attests = append(s.Attests, a)
	}
	sortAnnouncements(s.Attests)
	return s
}

// seedAddMember is a request to add fuzzIDs[4], signed by it and by signers.
func seedAddMember(signers ...int) *AddMember {
	a := NewAddMember(fuzzIDs[4].ID)
	a.Sign(fuzzConsortium, fuzzIDs[4])
	for _, s := range signers {
		a.Sign(fuzzConsortium, fuzzIDs[s])
	}
	return a
}

// addMemberChange is the ConfChangeV2 ProposeAddMember proposes for a.
func addMemberChange(a *AddMember) *pb.ConfChangeV2 {
	return &pb.ConfChangeV2{
		Changes: []*pb.ConfChangeSingle{{Type: pb.ConfChangeType_ConfChangeAddLearnerNode.Enum(), NodeId: proto.Uint64(RaftID(a.Member))}},
		Context: a.Encode(),
	}
}

func mustMarshal(v any) []byte {
	var b []byte
	var err error
	if pm, ok := v.(proto.Message); ok {
		b, err = proto.Marshal(pm)
	} else {
		b, err = json.Marshal(v)
	}
	if err != nil {
		panic(err)
	}
	return b
}

// fuzzSeedFile is one corpus file in the "go test fuzz v1" format.
func fuzzSeedFile(vals ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case byte:
			fmt.Fprintf(&b, "byte('\\x%02x')\n", v)
		case uint64:
			fmt.Fprintf(&b, "uint64(%d)\n", v)
		default:
			panic(fmt.Sprintf("seed value of type %T", v))
		}
	}
	return b.Bytes()
}

// writeFuzzSeeds writes seeds[name] to testdata/fuzz/<target>/seed-<name>.
func writeFuzzSeeds(t *testing.T, target string, seeds map[string][]any) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, vals := range seeds {
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), fuzzSeedFile(vals...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func oneArg(in map[string][]byte) map[string][]any {
	out := map[string][]any{}
	for k, v := range in {
		out[k] = []any{v}
	}
	return out
}

func withMalformed(in map[string][]byte) map[string][]byte {
	for k, v := range malformedJSON {
		in["malformed-"+k] = v
	}
	return in
}

// TestWriteFuzzSeeds regenerates the checked-in seed corpora.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("FUZZ_WRITE_SEEDS") == "" {
		t.Skip("set FUZZ_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	writeFuzzSeeds(t, "FuzzDecodeMessage", oneArg(messageSeeds()))
	writeFuzzSeeds(t, "FuzzDecodeEntry", oneArg(entrySeeds()))
	writeFuzzSeeds(t, "FuzzDecodeSnapshot", oneArg(snapshotSeeds()))
	writeFuzzSeeds(t, "FuzzDecodeAddMember", oneArg(addMemberSeeds()))
	writeFuzzSeeds(t, "FuzzGateValidate", gateSeeds())
	writeFuzzSeeds(t, "FuzzStepRaft", stepRaftSeeds(t))
}
