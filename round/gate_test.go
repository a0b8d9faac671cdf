package round

import (
	"testing"

	"github.com/globalbrain/globalbrain/wire"
	"github.com/stretchr/testify/require"
)

// The servable set stays bounded: digests older than the window are
// withdrawn, the pinned genesis model never is (20,000 neighbour-round
// announcements used to grow it without end).
func TestGateServablePruned(t *testing.T) {
	g := NewGate([32]byte{1}, nil)
	g.pin(Digest{1})
	for r := uint64(1); r <= 20000; r++ {
		var d Digest
		d[0], d[1], d[2] = byte(r), byte(r>>8), 7
		g.applied.Store(r - 1)
		g.Serve(d)
		if r > 21 {
			g.prune(r - 21)
		}
	}
	n := 0
	g.servable.Range(func(any, any) bool { n++; return true })
	require.LessOrEqual(t, n, 23)
	require.True(t, g.Servable([32]byte{1}), "genesis stays servable")
}

// The gate rejects, so that peer scoring sees it, what cannot be valid in
// the round in progress: unsampled and wrong-base announcements, a wrong
// size, and a second, different announcement (kept as evidence for the
// Machine).
func TestGateRejectsWhatTheRoundCannotUse(t *testing.T) {
	m, ids := boundaryMachine(t)
	g := m.Gate()
	cid := m.Params().Consortium
	ann := func(i int, d byte, base Digest, length int64) []byte {
		a := &Message{Kind: KindAnnounce, Round: 1, Base: base, Digest: Digest{d}, Length: length, Examples: 10}
		a.Sign(cid, ids[i])
		return a.Encode()
	}
	base := m.State().Model
	_, v, reason := g.Check(ids[1].ID, ann(1, 1, Digest{42}, 40))
	require.Equal(t, [2]any{wire.Reject, wire.ReasonWrongBase}, [2]any{v, reason})
	_, v, reason = g.Check(ids[1].ID, ann(1, 1, base, 41))
	require.Equal(t, [2]any{wire.Reject, wire.ReasonBadUpdate}, [2]any{v, reason})
	_, v, _ = g.Check(ids[1].ID, ann(1, 1, base, 40))
	require.Equal(t, wire.Accept, v)
	_, v, _ = g.Check(ids[1].ID, ann(1, 1, base, 40))
	require.Equal(t, wire.Accept, v, "an identical repeat is accepted")
	_, v, reason = g.Check(ids[1].ID, ann(1, 2, base, 40))
	require.Equal(t, [2]any{wire.Reject, wire.ReasonEquivocation}, [2]any{v, reason})
	m.Advance(m.Ready())
	require.Equal(t, uint64(1), m.Status().Counters.Equivocations, "the machine took the gate's evidence")

	// With a fraction below one, a member outside the sample is refused.
	p := m.Params()
	p.Fraction = 0.25
	p.OverSelect = 0
	small, err := New(Config{Params: p, Self: ids[0], Genesis: Digest{1}})
	require.NoError(t, err)
	small.Advance(small.Ready())
	sampled := small.Sample(1)
	for i, id := range ids {
		if !contains(sampled, id.ID) {
			_, v, reason := small.Gate().Check(id.ID, ann(i, 1, small.State().Model, 40))
			require.Equal(t, [2]any{wire.Reject, wire.ReasonNotSampled}, [2]any{v, reason})
			return
		}
	}
	t.Fatal("everyone sampled")
}

// The gate is read by the transport's goroutines while the machine moves
// it on: run under the race detector.
func TestGateConcurrentUse(t *testing.T) {
	m, ids := boundaryMachine(t)
	cid := m.Params().Consortium
	h := &Message{Kind: KindHave, Round: 1, Digest: Digest{3}}
	h.Sign(cid, ids[1])
	b := h.Encode()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 2000 {
			m.Gate().Validate(ids[1].ID, b)
			m.Gate().Servable([32]byte{3})
			m.Gate().Members()
		}
	}()
	for r := uint64(1); r < 200; r++ {
		m.st = State{Index: r + 1, Round: r, Model: Digest{byte(r)}}
		m.startRound()
		m.Advance(m.Ready())
	}
	<-done
}
