package roundtest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/globalbrain/globalbrain/round"
)

const seeds = 20

func forSeeds(t *testing.T, f func(t *testing.T, seed uint64)) {
	for s := uint64(0); s < seeds; s++ {
		t.Run("", func(t *testing.T) { f(t, s) })
	}
}

func newEnv(t *testing.T, o Options) *Env {
	t.Helper()
	e, err := New(o)
	require.NoError(t, err)
	return e
}

func applied(e *Env, r uint64, idx ...int) func() bool {
	return func() bool { return e.AllApplied(r, idx...) }
}

// sameModel asserts every listed member (all if none) holds one model digest.
func sameModel(t *testing.T, e *Env, idx ...int) {
	t.Helper()
	if idx == nil {
		for i := range e.Members {
			idx = append(idx, i)
		}
	}
	want := e.Members[idx[0]].M.State()
	for _, i := range idx[1:] {
		got := e.Members[i].M.State()
		require.Equal(t, want.Round, got.Round, "member %d", i)
		require.Equal(t, want.Model, got.Model, "member %d", i)
	}
}

func TestHappyPath(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 5, Seed: seed})
		require.NoError(t, e.Run(2000, applied(e, 3)))
		for r := uint64(1); r <= 3; r++ {
			require.Equal(t, round.EntryCommit, e.Decided[r].Kind, "round %d", r)
			require.Equal(t, 10, e.Decided[r].Included, "round %d", r)
		}
		sameModel(t, e)
	})
}

// A participant that never answers: at the deadline the round closes
// without it, at least min_participants being included.
func TestSilentParticipant(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 5, MinParticipants: 6, Seed: seed})
		e.Members[7].Silent = true
		require.NoError(t, e.Run(3000, applied(e, 2)))
		for r := uint64(1); r <= 2; r++ {
			require.Equal(t, round.EntryCommit, e.Decided[r].Kind)
			require.Equal(t, 9, e.Decided[r].Included)
		}
		sameModel(t, e)
	})
}

// Too few participants: Abandon, and the next round starts from the same model.
func TestTooFewParticipants(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 5, MinParticipants: 8, Seed: seed})
		for _, i := range []int{5, 6, 7, 8} {
			e.Members[i].Silent = true
		}
		require.NoError(t, e.Run(3000, applied(e, 2)))
		for r := uint64(1); r <= 2; r++ {
			require.Equal(t, round.EntryAbandon, e.Decided[r].Kind)
			require.Equal(t, e.Genesis(), e.Decided[r].Model)
		}
		sameModel(t, e)
	})
}

// The leader crashes mid-round: a new leader closes the round, one outcome.
func TestLeaderCrashMidRound(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 5, MinParticipants: 5, Seed: seed})
		require.NoError(t, e.Run(2000, applied(e, 1)))
		// Let round 2's announcements start flowing, then kill the leader.
		for range 50 + int(seed)*7 {
			require.NoError(t, e.Step())
		}
		l := e.Leader()
		require.GreaterOrEqual(t, l, 0)
		e.Crash(l)
		var live []int
		for i := range e.Members {
			if i != l {
				live = append(live, i)
			}
		}
		require.NoError(t, e.Run(4000, applied(e, 3, live...)))
		require.NoError(t, e.Restart(l))
		require.NoError(t, e.Run(4000, applied(e, 3)))
		sameModel(t, e)
	})
}

// A leader proposing an invalid entry: every honest member skips it and
// raises an alarm, the next leader commits the round, all end on one digest.
func TestInvalidEntryFromLeader(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 5, Seed: seed})
		require.NoError(t, e.Run(2000, func() bool { return e.Leader() >= 0 }))
		bad := e.Leader()
		e.Members[bad].Byzantine = true
		require.NoError(t, e.Run(6000, func() bool {
			return e.AllApplied(2) && e.Leader() >= 0 && e.Leader() != bad
		}))
		require.NotEqual(t, bad, e.Leader())
		for i, m := range e.Members {
			require.NotEmpty(t, m.Alarms, "member %d raised no alarm", i)
			require.Positive(t, m.M.Counters.InvalidEntries, "member %d", i)
		}
		require.Equal(t, round.EntryCommit, e.Decided[1].Kind)
		e.Members[bad].Byzantine = false
		require.NoError(t, e.Run(4000, applied(e, 3)))
		sameModel(t, e)
	})
}

// 10 voters split 5/5: nobody commits; after healing all converge.
func TestSplitFiveFive(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 10, MinParticipants: 3, Seed: seed})
		require.NoError(t, e.Run(3000, applied(e, 1)))
		e.Partition([]int{0, 1, 2, 3, 4}, []int{5, 6, 7, 8, 9})
		before := len(e.Decided)
		require.NoError(t, e.RunTicks(300))
		// At most the round in flight at the cut may close (its commit may
		// already have reached a majority); then nothing more.
		require.LessOrEqual(t, len(e.Decided), before+1)
		stuck := len(e.Decided)
		require.NoError(t, e.RunTicks(300))
		require.Equal(t, stuck, len(e.Decided), "a minority committed")
		e.Heal()
		r := uint64(stuck) + 2
		require.NoError(t, e.Run(6000, applied(e, r)))
		sameModel(t, e)
	})
}

// 10 voters split 3/7: the 7 go on; the 3 catch up after healing, FedAdam
// state included.
func TestSplitThreeSeven(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 10, MinParticipants: 5, Strategy: "fedadam", Seed: seed})
		require.NoError(t, e.Run(3000, applied(e, 1)))
		minority, majority := []int{0, 1, 2}, []int{3, 4, 5, 6, 7, 8, 9}
		e.Partition(minority, majority)
		r0 := e.Members[0].M.State().Round
		require.NoError(t, e.Run(6000, applied(e, r0+3, majority...)))
		for _, i := range minority {
			require.LessOrEqual(t, e.Members[i].M.State().Round, r0+1, "the minority went on")
		}
		e.Heal()
		target := e.Members[3].M.State().Round + 1
		require.NoError(t, e.Run(6000, applied(e, target)))
		sameModel(t, e)
		g, err := e.Model(0)
		require.NoError(t, err)
		require.Equal(t, "fedadam", g.State.Strategy)
		require.NotEmpty(t, g.State.Vectors)
	})
}

// 5 voters + 5 learners with the learners cut off: the voters keep
// committing; after healing the learners reach the same digest.
func TestLearnersCutOff(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 5, MinParticipants: 5, Seed: seed})
		voters, learners := []int{0, 1, 2, 3, 4}, []int{5, 6, 7, 8, 9}
		e.Partition(voters, learners)
		require.NoError(t, e.Run(6000, applied(e, 3, voters...)))
		for _, i := range learners {
			require.Zero(t, e.Members[i].M.State().Round)
		}
		e.Heal()
		target := e.Members[0].M.State().Round + 1
		require.NoError(t, e.Run(6000, applied(e, target)))
		sameModel(t, e)
	})
}

// A leader that stops proposing but still heartbeats is replaced within 2
// deadlines plus an election timeout; one outcome per round.
func TestLazyLeaderReplaced(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		o := Options{Members: 10, Voters: 5, Seed: seed}
		e := newEnv(t, o)
		require.NoError(t, e.Run(2000, applied(e, 1)))
		lazy := e.Leader()
		require.GreaterOrEqual(t, lazy, 0)
		e.Members[lazy].Lazy = true
		start := e.Ticks
		require.NoError(t, e.Run(4000, func() bool { l := e.Leader(); return l >= 0 && l != lazy }))
		// Replaced within 2 deadlines plus an election timeout (raft
		// randomizes it up to twice the base).
		p := e.Params
		require.LessOrEqual(t, e.Ticks-start, 2*p.DeadlineTicks+2*p.ElectionTicks, "replaced after %d ticks", e.Ticks-start)
		// The lazy member never proposes, so round 2 is closed by another leader.
		require.NoError(t, e.Run(4000, func() bool { _, ok := e.Decided[2]; return ok }))
		require.Equal(t, round.EntryCommit, e.Decided[2].Kind)
		require.NoError(t, e.Run(4000, applied(e, 3)))
		sameModel(t, e)
	})
}

// A member behind the compaction point catches up by snapshot (FedAdam
// state included) and ends on the same digest.
func TestBehindCompactionCatchesUpBySnapshot(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 5, MinParticipants: 5, Strategy: "fedadam", RetainRounds: 2, Seed: seed})
		require.NoError(t, e.Run(3000, applied(e, 1)))
		late := 9 // a learner
		e.Crash(late)
		var live []int
		for i := range 9 {
			live = append(live, i)
		}
		require.NoError(t, e.Run(20000, applied(e, 8, live...)))
		require.NoError(t, e.Restart(late))
		target := e.Members[0].M.State().Round + 1
		require.NoError(t, e.Run(20000, applied(e, target)))
		require.Positive(t, e.Members[late].Installed, "caught up without a snapshot")
		sameModel(t, e)
		g, err := e.Model(late)
		require.NoError(t, err)
		require.Equal(t, "fedadam", g.State.Strategy)
	})
}

// Genesis returns the indices of the genesis members.
func genesis(n int) []int {
	var idx []int
	for i := range n {
		idx = append(idx, i)
	}
	return idx
}

// AddMember with a majority's signatures: the new member joins as a learner,
// catches up through the log and is in the sample from the next round.
func TestAddMemberWithMajority(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 5, Joiners: 1, MinParticipants: 5, Seed: seed})
		g := genesis(10)
		require.NoError(t, e.Run(3000, applied(e, 1, g...)))
		req := round.NewAddMember(e.Members[10].ID.ID)
		for _, i := range []int{10, 0, 2, 4, 6, 8, 9} {
			req.Sign(e.Params.Consortium, e.Members[i].ID)
		}
		require.NoError(t, e.Run(3000, func() bool { return e.Leader() >= 0 }))
		require.NoError(t, e.Members[e.Leader()].M.ProposeAddMember(req))
		require.NoError(t, e.Run(6000, func() bool {
			for _, i := range g {
				if len(e.Members[i].M.Members()) != 11 {
					return false
				}
			}
			return true
		}))
		r := e.Members[0].M.State().Round
		require.NoError(t, e.Run(8000, applied(e, r+2)))
		require.Equal(t, 11, e.Decided[r+2].Included, "the new member is in the sample of the next round")
		sameModel(t, e)
	})
}

// AddMember with a minority's signatures is invalid: every member skips it
// and raises an alarm; nothing changes.
func TestAddMemberWithMinorityIsInvalid(t *testing.T) {
	forSeeds(t, func(t *testing.T, seed uint64) {
		e := newEnv(t, Options{Members: 10, Voters: 5, Joiners: 1, MinParticipants: 5, Seed: seed})
		g := genesis(10)
		require.NoError(t, e.Run(3000, applied(e, 1, g...)))
		req := round.NewAddMember(e.Members[10].ID.ID)
		for _, i := range []int{10, 0, 1, 2, 3, 4} { // the new member and 5 of 10: not a majority
			req.Sign(e.Params.Consortium, e.Members[i].ID)
		}
		require.NoError(t, e.Run(3000, func() bool { return e.Leader() >= 0 }))
		require.NoError(t, e.Members[e.Leader()].M.ProposeAddMember(req))
		r := e.Members[0].M.State().Round
		require.NoError(t, e.Run(8000, applied(e, r+2, g...)))
		for _, i := range g {
			m := e.Members[i]
			require.Len(t, m.M.Members(), 10, "member %d", i)
			require.Positive(t, m.M.Counters.InvalidEntries, "member %d", i)
			require.NotEmpty(t, m.Alarms, "member %d", i)
		}
		require.Equal(t, 10, e.Decided[r+2].Included)
		sameModel(t, e, g...)
	})
}
