package round

import (
	"bytes"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/privacy/secagg"
	"github.com/globalbrain/globalbrain/wire"
)

// saFixture is member 0 of five voters running secure aggregation, with
// every member's signed phase messages for round 1 at hand.
type saFixture struct {
	t      *testing.T
	m      *Machine
	ids    []identity.Identity // by peer ID
	cid    [32]byte
	base   Digest
	keyAds []*Message
}

func newSAFixture(t *testing.T) *saFixture {
	t.Helper()
	var ids []identity.Identity
	var members []identity.PeerID
	for i := range 5 {
		ids = append(ids, identity.Derive(55, i))
	}
	slices.SortFunc(ids, func(a, b identity.Identity) int { return identity.Compare(a.ID, b.ID) })
	for _, id := range ids {
		members = append(members, id.ID)
	}
	p := Params{Consortium: [32]byte{5}, Members: members, Voters: members, Fraction: 1, MinParticipants: 1,
		DeadlineTicks: 40, ElectionTicks: 10, MaxExamples: 1000, UpdateBytes: 40, Aggregator: "fedavg", RetainRounds: 10,
		SecAgg: &SecAggParams{Gamma: 0, KMin: 2, PhaseTicks: 10, Encoding: secagg.Encoding{Clip: 1, Scale: 1 << 20, MaxWeight: 1000}}}
	m, err := New(Config{Params: p, Self: ids[0], Genesis: Digest{1}})
	require.NoError(t, err)
	m.Advance(m.Ready())
	f := &saFixture{t: t, m: m, ids: ids, cid: p.Consortium, base: m.State().Model}
	for i, id := range ids {
		keys, err := secagg.GenerateKeys(bytes.NewReader(bytes.Repeat([]byte{byte(i + 1)}, 64)))
		require.NoError(t, err)
		a := &Message{Kind: KindKeyAd, Round: 1, Base: f.base, Data: append(keys.Share.PublicKey().Bytes(), keys.Mask.PublicKey().Bytes()...)}
		a.Sign(f.cid, id)
		f.keyAds = append(f.keyAds, a)
	}
	return f
}

// msg is member i's signed phase message.
func (f *saFixture) msg(i int, kind Kind, d byte, length int64, data []byte) *Message {
	a := &Message{Kind: kind, Round: 1, Base: f.base, Digest: Digest{d, byte(i)}, Length: length, Data: data}
	a.Sign(f.cid, f.ids[i])
	return a
}

// haves are every voter's signed Haves of the messages' blobs.
func (f *saFixture) haves(ms []*Message) []*Message {
	var out []*Message
	for _, a := range ms {
		for _, id := range f.ids {
			h := &Message{Kind: KindHave, Round: 1, Digest: a.Digest}
			h.Sign(f.cid, id)
			out = append(out, h)
		}
	}
	return out
}

func (f *saFixture) entry(kind EntryKind, inc []*Message) *Entry {
	e := &Entry{Kind: kind, Round: 1, Base: f.base, Prev: f.m.State().Chain, Included: inc, Result: f.base}
	if kind != EntryKeys {
		e.Haves = f.haves(inc)
	}
	return e
}

// apply validates e and applies it as a phase entry.
func (f *saFixture) apply(e *Entry) {
	f.t.Helper()
	require.NoError(f.t, f.m.validate(e))
	f.m.applyPhase(e.Encode(), e)
}

func (f *saFixture) shares(n int) []*Message {
	var out []*Message
	for i := range n {
		out = append(out, f.msg(i, KindShares, 2, 100, bytes.Repeat([]byte{byte(i)}, 32)))
	}
	return out
}

func (f *saFixture) inputs(n int) []*Message {
	var out []*Message
	for i := range n {
		out = append(out, f.msg(i, KindInput, 3, f.m.inputBytes(), nil))
	}
	return out
}

func (f *saFixture) reveals(idx ...int) []*Message {
	var out []*Message
	for _, i := range idx {
		out = append(out, f.msg(i, KindReveal, 4, 100, nil))
	}
	return out
}

// A leader's entries are validated by every member: each attack below is
// an entry a leader could commit, and each is refused with its reason
// (PRIVACY.md: a swapped KeyAd, a second Unmask, a wrong revealer set).
func TestSecAggLeaderAttacksCaught(t *testing.T) {
	f := newSAFixture(t)
	// n = 5: t = max(ceil(10/3), 1 + 2) = 4.
	require.Equal(t, 4, f.m.cur.sa.t)

	// Keys.
	swapped := *f.keyAds[2]
	swapped.Data = f.keyAds[3].Data // another member's keys under member 2's signature
	require.ErrorContains(t, f.m.validate(f.entry(EntryKeys, []*Message{f.keyAds[0], f.keyAds[1], &swapped, f.keyAds[4]})), "bad signature")
	forged := &Message{Kind: KindKeyAd, Round: 1, Base: f.base, Data: f.keyAds[0].Data}
	forged.Sign(f.cid, f.ids[0])
	forged.Author = f.ids[1].ID // member 0 signing for member 1
	require.Error(t, f.m.validate(f.entry(EntryKeys, []*Message{f.keyAds[0], forged, f.keyAds[2], f.keyAds[3]})))
	require.ErrorContains(t, f.m.validate(f.entry(EntryKeys, f.keyAds[:3])), "threshold 4")
	require.ErrorContains(t, f.m.validate(f.entry(EntryKeys, []*Message{f.keyAds[1], f.keyAds[0], f.keyAds[2], f.keyAds[3]})), "increasing")
	low := f.msg(4, KindKeyAd, 0, 0, make([]byte, 64)) // all-zero keys: a low-order point
	low.Digest = Digest{}
	low.Sign(f.cid, f.ids[4])
	require.Error(t, f.m.validate(f.entry(EntryKeys, append(f.keyAds[:4:4], low))))
	require.ErrorContains(t, f.m.validate(f.entry(EntryShares, f.shares(5))), "after 0 phase entries", "no phase skipped")
	f.apply(f.entry(EntryKeys, f.keyAds))
	require.ErrorContains(t, f.m.validate(f.entry(EntryKeys, f.keyAds)), "after 1 phase entries", "no second Keys")

	// Shares: Haves from a majority are required.
	noHaves := f.entry(EntryShares, f.shares(5))
	noHaves.Haves = nil
	require.ErrorContains(t, f.m.validate(noHaves), "Haves of 0 voters")
	f.apply(f.entry(EntryShares, f.shares(5)))

	// Unmask: U3 within U2, at least t, only once.
	require.ErrorContains(t, f.m.validate(f.entry(EntryUnmask, f.inputs(3))), "threshold 4")
	f.apply(f.entry(EntryUnmask, f.inputs(4))) // member 4 dropped: D = {4}
	require.ErrorContains(t, f.m.validate(f.entry(EntryUnmask, f.inputs(5))), "after 3 phase entries", "no second Unmask")

	// Commit: U3 verbatim, exactly t reveals from U3, the applied phases.
	commit := func(inc, reveals []*Message) *Entry {
		e := &Entry{Kind: EntryCommit, Round: 1, Base: f.base, Prev: f.m.State().Chain, Included: inc, Reveals: reveals,
			Haves: f.haves(reveals), Aggregator: "fedavg", Phases: f.m.cur.sa.digests, Result: Digest{9}}
		return e
	}
	require.NoError(t, f.m.validate(commit(f.inputs(4), f.reveals(0, 1, 2, 3))))
	require.ErrorContains(t, f.m.validate(commit(f.inputs(4), f.reveals(0, 1, 2))), "exactly t")
	require.ErrorContains(t, f.m.validate(commit(f.inputs(4), f.reveals(0, 1, 2, 4))), "not in U3", "a dropped member's reveal")
	require.ErrorContains(t, f.m.validate(commit(f.inputs(3), f.reveals(0, 1, 2, 3))), "not the Unmask's U3")
	other := commit(f.inputs(4), f.reveals(0, 1, 2, 3))
	other.Phases = []Digest{{1}, {2}, {3}}
	require.ErrorContains(t, f.m.validate(other), "other phase entries")
	plain := &Message{Kind: KindAnnounce, Round: 1, Base: f.base, Digest: Digest{7}, Length: 40, Examples: 10}
	plain.Sign(f.cid, f.ids[0])
	require.Error(t, f.m.validate(commit([]*Message{plain}, f.reveals(0, 1, 2, 3))), "a plain update under secure aggregation")
}

// A member reveals only after the echo rule holds, and never when a member
// of U2 echoed another Unmask.
func TestSecAggEchoRule(t *testing.T) {
	f := newSAFixture(t)
	f.apply(f.entry(EntryKeys, f.keyAds))
	f.m.cur.sa.trained = true
	f.apply(f.entry(EntryShares, f.shares(5)))
	f.apply(f.entry(EntryUnmask, f.inputs(5)))
	d := f.m.cur.sa.digests[2]
	echo := func(i int, d Digest) *Message {
		e := &Message{Kind: KindEcho, Round: 1, Digest: d}
		e.Sign(f.cid, f.ids[i])
		return e
	}
	// gamma = 1, |U2| = 5: more than 3 echoes are needed; our own is one.
	require.False(t, f.m.mayReveal())
	require.NoError(t, f.m.Step(echo(1, d)))
	require.NoError(t, f.m.Step(echo(2, d)))
	require.False(t, f.m.mayReveal(), "3 echoes of 5")
	require.NoError(t, f.m.Step(echo(3, d)))
	require.True(t, f.m.mayReveal(), "4 echoes")

	g := newSAFixture(t)
	g.apply(g.entry(EntryKeys, g.keyAds))
	g.apply(g.entry(EntryShares, g.shares(5)))
	g.apply(g.entry(EntryUnmask, g.inputs(5)))
	d = g.m.cur.sa.digests[2]
	bad := &Message{Kind: KindEcho, Round: 1, Digest: Digest{0xba, 0xd}}
	bad.Sign(g.cid, g.ids[4])
	require.NoError(t, g.m.Step(bad))
	for i := 1; i <= 3; i++ {
		e := &Message{Kind: KindEcho, Round: 1, Digest: d}
		e.Sign(g.cid, g.ids[i])
		require.NoError(t, g.m.Step(e))
	}
	require.False(t, g.m.mayReveal(), "a member echoed another Unmask: no reveal")
	require.NotEmpty(t, g.m.cur.sa.conflict)
	// The task list holds no reveal.
	rd := g.m.Ready()
	for _, task := range rd.SecAgg {
		require.NotEqual(t, PhaseReveal, task.Phase)
	}
}

// Under secure aggregation an update in the clear is refused by the gate
// and the machine; a late input from a member of D changes nothing.
func TestSecAggRefusesPlainAndLate(t *testing.T) {
	f := newSAFixture(t)
	plain := &Message{Kind: KindAnnounce, Round: 1, Base: f.base, Digest: Digest{7}, Length: 40, Examples: 10}
	plain.Sign(f.cid, f.ids[1])
	_, v, reason := f.m.Gate().Check(f.ids[1].ID, plain.Encode())
	require.Equal(t, [2]any{wire.Reject, wire.ReasonBadUpdate}, [2]any{v, reason}, "the gate refuses it")
	require.Error(t, f.m.Step(plain))
	f.apply(f.entry(EntryKeys, f.keyAds))
	f.apply(f.entry(EntryShares, f.shares(5)))
	f.apply(f.entry(EntryUnmask, f.inputs(4)))
	late := f.inputs(5)[4]
	require.NoError(t, f.m.Step(late))
	require.Empty(t, f.m.cur.sa.anns[PhaseInput], "a late input is not recorded")
}

// A message of a phase that has not begun here yet (its sender applied the
// phase entry first), or of the next round, is kept and stepped when the
// phase or round begins, not dropped until it is repeated.
func TestSecAggEarlyMessagesKept(t *testing.T) {
	f := newSAFixture(t)
	sh := f.shares(5)
	require.NoError(t, f.m.Step(sh[1]))
	require.Empty(t, f.m.cur.sa.anns[PhaseShares])
	f.apply(f.entry(EntryKeys, f.keyAds))
	require.Contains(t, f.m.cur.sa.anns[PhaseShares], string(sh[1].Author), "stepped when the shares phase began")

	next := &Message{Kind: KindKeyAd, Round: 2, Base: Digest{9}, Data: f.keyAds[2].Data}
	next.Sign(f.cid, f.ids[2])
	require.NoError(t, f.m.Step(next))
	require.Len(t, f.m.early[string(next.Author)], 1, "a next-round message is kept")
	require.NoError(t, f.m.Step(next))
	require.Len(t, f.m.early[string(next.Author)], 1, "a repeat is kept once")
	for i := range 1000 {
		h := &Message{Kind: KindHave, Round: 2, Digest: Digest{byte(i), byte(i >> 8)}}
		h.Sign(f.cid, f.ids[2])
		require.NoError(t, f.m.Step(h))
	}
	require.Len(t, f.m.early[string(next.Author)], f.m.maxEarly(), "bounded per author")
}
