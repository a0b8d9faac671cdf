package node_test

import (
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/member/membertest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/privacy/dp"
	"github.com/globalbrain/globalbrain/round"
)

// updatePrivacy is the update mode of the tests: noise std z*S = 2 per
// coordinate of the logistic regression's 7850.
var updatePrivacy = manifest.Privacy{Mode: manifest.PrivacyUpdate, DP: manifest.DP{Z: 2, Clip: 1, Epsilon: 100}}

// logregDim is the logistic regression's parameter count on MNIST.
const logregDim = 28*28*10 + 10

// epsilonAfter is what a node spends in k rounds of p.
func epsilonAfter(t *testing.T, p manifest.Privacy, k int64) float64 {
	t.Helper()
	a, err := dp.NewAccountant(dp.DefaultOrders())
	require.NoError(t, err)
	eps, _, err := a.EpsilonAfter(p.DP.Delta, p.UpdateNoise().Mechanism(logregDim), k)
	require.NoError(t, err)
	return eps
}

// persisted reads member i's budget record from its store.
func persisted(t *testing.T, c *membertest.Cluster, i int) (rounds int64, epsilon float64) {
	t.Helper()
	vals, err := c.Store(i).List("privacy")
	require.NoError(t, err)
	if len(vals) == 0 {
		return 0, 0
	}
	require.Len(t, vals, 1)
	acct, err := dp.NewAccountant(nil)
	require.NoError(t, err)
	rec := struct {
		Version    int
		Rounds     int64
		Accountant *dp.Accountant
	}{Accountant: acct}
	require.NoError(t, json.Unmarshal(vals[0], &rec))
	eps, _, err := acct.Epsilon(c.Manifest.Privacy.DP.Delta)
	require.NoError(t, err)
	return rec.Rounds, eps
}

// gossip is what the tap saw, in order.
type gossip struct {
	mu   sync.Mutex
	msgs []*round.Message
	errs []string
}

func (g *gossip) add(m *round.Message) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.msgs = append(g.msgs, m)
}

func (g *gossip) fail(msg string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.errs = append(g.errs, msg)
}

func (g *gossip) of(kind round.Kind, author identity.PeerID) []*round.Message {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*round.Message
	for _, m := range g.msgs {
		if m.Kind == kind && identity.Compare(m.Author, author) == 0 {
			out = append(out, m)
		}
	}
	return out
}

// TestBudgetChargedBeforePublish: under the update mode, at the instant a
// member gossips an announcement its store already holds the charge of
// that round; once the next round would pass its ceiling the member
// declines with a signed Decline that says why, logs nothing else in
// status but the exhausted budget, and the consortium goes on without it.
func TestBudgetChargedBeforePublish(t *testing.T) {
	p := updatePrivacy
	p.DP.Delta = manifest.DefaultDelta
	p.DP.Scale = manifest.DefaultDPScale
	eps2, eps3 := epsilonAfter(t, p, 2), epsilonAfter(t, p, 3)
	ceiling := (eps2 + eps3) / 2 // member 0 may publish twice
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 4, Privacy: p, Ceilings: map[int]float64{0: ceiling},
		Rand: func(i int) io.Reader { return rand.NewChaCha8([32]byte{byte(i)}) }})
	cid := c.Manifest.ConsortiumID()
	var seen gossip
	published := map[string]map[uint64]bool{} // author -> rounds announced so far
	var mu sync.Mutex
	c.Net.Tap(func(from identity.PeerID, b []byte) {
		m, err := round.DecodeMessage(b)
		if err != nil {
			seen.fail("undecodable gossip: " + err.Error())
			return
		}
		if err := m.Verify(cid); err != nil {
			seen.fail("unsigned gossip: " + err.Error())
			return
		}
		seen.add(m)
		if m.Kind != round.KindAnnounce {
			return
		}
		i := slicesIndex(c.IDs, from)
		mu.Lock()
		if published[string(from)] == nil {
			published[string(from)] = map[uint64]bool{}
		}
		published[string(from)][m.Round] = true
		k := int64(len(published[string(from)]))
		mu.Unlock()
		// The charge of this announcement is on disk already.
		if rounds, _ := persisted(t, c, i); rounds < k {
			seen.fail("member announced before its budget charge was persisted")
		}
	})
	c.RunUntil(t, func() bool { return c.AllApplied(4) })
	require.Empty(t, seen.errs)

	// Member 0 published twice, then declined rounds 3 and 4, saying why.
	id0 := c.IDs[0].ID
	require.Equal(t, []uint64{1, 2}, roundsOf(seen.of(round.KindAnnounce, id0)))
	declines := seen.of(round.KindDecline, id0)
	require.NotEmpty(t, declines)
	for _, d := range declines {
		require.Contains(t, d.Reason, "privacy budget exhausted")
		require.NoError(t, d.Verify(cid), "the Decline is signed, its reason included")
		d.Reason = "something else"
		require.Error(t, d.Verify(cid), "the reason is under the signature")
	}
	st := c.Node(0).Status().Privacy
	require.NotNil(t, st)
	require.True(t, st.Exhausted)
	require.Equal(t, int64(2), st.Rounds)
	require.InDelta(t, eps2, st.Spent, 1e-9)
	require.Equal(t, ceiling, st.Ceiling)
	require.LessOrEqual(t, st.Spent, st.Ceiling)
	require.GreaterOrEqual(t, st.Declines, uint64(1))
	rounds, eps := persisted(t, c, 0)
	require.Equal(t, int64(2), rounds)
	require.InDelta(t, eps2, eps, 1e-9)

	// The others, under the manifest's ceiling, took part in every round.
	for i := 1; i < 3; i++ {
		require.Equal(t, []uint64{1, 2, 3, 4}, roundsOf(seen.of(round.KindAnnounce, c.IDs[i].ID)))
		s := c.Node(i).Status().Privacy
		require.False(t, s.Exhausted)
		require.Equal(t, int64(4), s.Rounds)
		require.Equal(t, 100.0, s.Ceiling)
	}
}

// roundsOf lists the distinct rounds of msgs, in order (a member
// re-gossips its announcement).
func roundsOf(msgs []*round.Message) []uint64 {
	var out []uint64
	for _, m := range msgs {
		if len(out) == 0 || out[len(out)-1] != m.Round {
			out = append(out, m.Round)
		}
	}
	return out
}

func slicesIndex(ids []identity.Identity, id identity.PeerID) int {
	for i, x := range ids {
		if identity.Compare(x.ID, id) == 0 {
			return i
		}
	}
	return -1
}

// TestBudgetNotRefundedAcrossRestart: a restarted member reads back what
// it spent and keeps charging on top of it.
func TestBudgetNotRefundedAcrossRestart(t *testing.T) {
	p := updatePrivacy
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 4, Privacy: p})
	c.RunUntil(t, func() bool { return c.AllApplied(2) })
	before := c.Node(0).Status().Privacy
	require.GreaterOrEqual(t, before.Rounds, int64(2))
	c.Stop(0)
	c.Start(t, 0)
	after := c.Node(0).Status().Privacy
	// Member 0 may have charged round 3 between the status read and the
	// stop: never less than before, never refunded.
	require.GreaterOrEqual(t, after.Rounds, before.Rounds, "rounds charged read back after a restart")
	require.GreaterOrEqual(t, after.Spent, before.Spent, "epsilon spent read back after a restart")
	c.RunUntil(t, func() bool { return c.AllApplied(4) })
	final := c.Node(0).Status().Privacy
	require.Greater(t, final.Spent, after.Spent)
	rounds, eps := persisted(t, c, 0)
	require.Equal(t, final.Rounds, rounds)
	require.Equal(t, final.Spent, eps)
}

// TestUpdateModeNoise: what a member publishes under the update mode is
// its update plus discrete Gaussian noise of std z*S, never the update.
func TestUpdateModeNoise(t *testing.T) {
	p := updatePrivacy
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 1, Privacy: p})
	var mu sync.Mutex
	var ann []*round.Message
	c.Net.Tap(func(from identity.PeerID, b []byte) {
		if m, err := round.DecodeMessage(b); err == nil && m.Kind == round.KindAnnounce {
			mu.Lock()
			ann = append(ann, m)
			mu.Unlock()
		}
	})
	c.RunUntil(t, func() bool { return c.AllApplied(1) })
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, ann)
	for _, a := range ann {
		i := slicesIndex(c.IDs, a.Author)
		b, err := c.Store(i).Blob(a.Digest)
		require.NoError(t, err)
		u, err := round.DecodeUpdate(b, logregDim)
		require.NoError(t, err)
		// FixedTrainer's update: (i+1) * 1e-4 in every coordinate, well
		// inside the clip.
		want := float64(i+1) * 1e-4
		var sum, sq float64
		for _, x := range u {
			e := float64(x) - want
			sum += e
			sq += e * e
		}
		n := float64(len(u))
		mean, std := sum/n, math.Sqrt(sq/n)
		require.InDelta(t, 0, mean, 0.1, "member %d: noise mean", i)
		require.InDelta(t, p.DP.Z*p.DP.Clip, std, 0.1, "member %d: noise std", i)
	}
}

// fakeDPSGD is FixedTrainer claiming to run DP-SGD: each participation
// costs 30 steps of the subsampled Gaussian at q = 0.01, z = 1.
type fakeDPSGD struct{ membertest.FixedTrainer }

var fakeStep = dp.SampledGaussian{Q: 0.01, Z: 1}

func (fakeDPSGD) PrivacyCost(fedavg.TrainConfig) (dp.Mechanism, int64, error) {
	return fakeStep, 30, nil
}

// TestDPSGDCharged: under dp-sgd the node charges its trainer's steps for
// every round it publishes in, and declines past its ceiling; a trainer
// that is not DP-SGD cannot run the mode.
func TestDPSGDCharged(t *testing.T) {
	p := manifest.Privacy{Mode: manifest.PrivacyDPSGD, DP: manifest.DP{Z: 1, ExampleClip: 1, Delta: 1e-5}}
	a, err := dp.NewAccountant(nil)
	require.NoError(t, err)
	eps := func(k int64) float64 {
		e, _, err := a.EpsilonAfter(1e-5, fakeStep, 30*k)
		require.NoError(t, err)
		return e
	}
	p.DP.Epsilon = (eps(3) + eps(4)) / 2
	trainers := map[int]node.Trainer{}
	for i := range 3 {
		trainers[i] = fakeDPSGD{membertest.FixedTrainer{Scale: float32(i + 1)}}
	}
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 5, Privacy: p, Trainers: trainers})
	c.RunUntil(t, func() bool { return c.AllApplied(5) })
	for i := range 3 {
		st := c.Node(i).Status().Privacy
		require.Equal(t, int64(3), st.Rounds, "member %d", i)
		require.InDelta(t, eps(3), st.Spent, 1e-9)
		require.True(t, st.Exhausted)
		require.Equal(t, uint64(4), st.FirstDeclined)
	}
}

// A member restarted after it published its noisy update for a round
// announces that same update again: training anew would draw new noise,
// a second update the others would hold as an equivocation, and a second
// charge.
func TestRestartRepublishesTheNoisyUpdate(t *testing.T) {
	c := membertest.MakeCluster(t, membertest.Options{Members: 3, Rounds: 2, Privacy: updatePrivacy,
		Trainers: map[int]node.Trainer{2: membertest.Silent{}}}) // round 1 waits for member 2 until its deadline
	published := func() bool {
		vs, err := c.Store(0).List("published")
		return err == nil && len(vs) == 1
	}
	c.RunUntil(t, published)
	vs, err := c.Store(0).List("published")
	require.NoError(t, err)
	var before struct {
		Round  uint64        `json:"round"`
		Digest fedavg.Digest `json:"digest"`
	}
	require.NoError(t, json.Unmarshal(vs[0], &before))
	require.Equal(t, uint64(1), before.Round)
	c.Stop(0) // no ticks meanwhile: round 1 is still open
	c.Start(t, 0)
	c.RunUntil(t, func() bool { return c.AllApplied(1) })
	for i := range c.Members {
		require.Zero(t, c.Node(i).Status().Counters.Equivocations, "member %d saw member 0 equivocate", i)
	}
	_, _, ents, err := c.Store(1).LoadRaft()
	require.NoError(t, err)
	found := false
	for _, ent := range ents {
		e, err := round.DecodeEntry(ent.GetData())
		if err != nil || e.Kind != round.EntryCommit || e.Round != 1 {
			continue
		}
		for _, a := range e.Included {
			if identity.Compare(a.Author, c.IDs[0].ID) == 0 {
				found = true
				require.Equal(t, before.Digest, a.Digest, "round 1 holds the update published before the restart")
			}
		}
	}
	require.True(t, found, "member 0's update is in round 1")
}
