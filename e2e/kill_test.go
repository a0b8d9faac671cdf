package e2e

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// killTrialTimeout bounds one trial: finding the victim, the kill, the
// restart and the catch-up.
const killTrialTimeout = 2 * time.Minute

// killTrial is what one trial of TestKillRandomInstant observed.
type killTrial struct {
	victim   string
	role     string        // the victim's role at the kill: leader or follower
	round    uint64        // the round in progress at the victim
	phase    string        // its phase at the kill
	into     time.Duration // how far into the round (from the victim's previous apply)
	before   uint64        // applied round read just before the kill
	after    uint64        // applied round at the first status after the restart
	target   uint64        // the round at which it caught up
	catchup  time.Duration // restart to caught up: a new round applied, none of the others ahead
	resumed  bool
	problems []string
}

// TestKillRandomInstant runs 5 voters and, per trial, SIGKILLs one of them
// at a random instant of a round (uniform over the round's measured
// length, from the victim's last apply), alternately the leader and a
// follower, restarts it at once from its store and waits until it has
// caught up with the others. It checks that no applied round is lost
// across the restart, and at the end that every process runs, all are on
// one model digest at one applied round, rounds are still applied, and no
// two members ever reported different models for one round.
//
// E2E_TRIALS sets the number of trials (default 3; the full run is 20),
// E2E_SEED the seed of the random choices (printed).
func TestKillRandomInstant(t *testing.T) {
	trials := int(envInt(t, "E2E_TRIALS", 3))
	seed := envInt(t, "E2E_SEED", time.Now().UnixNano())
	t.Logf("%d trials, E2E_SEED=%d", trials, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))

	c, _ := newCluster(t, clusterSpec{honest: 5, voters: 5, minParticipants: 3, deadline: "4s", retain: 3})
	for _, m := range c.members {
		c.start(m)
	}
	c.waitFor("round 2 applied", 3*time.Minute, c.members, func(s status) bool { return s.Applied >= 2 })
	w := startWatcher(c)
	defer w.close()

	// The length of a round, measured over 4 rounds.
	r0, t0 := c.maxApplied(), time.Now()
	c.waitFor("4 more rounds applied", 2*time.Minute, c.members[:1], func(s status) bool { return s.Applied >= r0+4 })
	roundLen := time.Since(t0) / 4
	t.Logf("a round takes %.2f s", roundLen.Seconds())

	var results []killTrial
	summary := func() {
		var cs []float64
		resumed := true
		for _, r := range results {
			if r.resumed {
				cs = append(cs, r.catchup.Seconds())
			} else {
				resumed = false
			}
		}
		slices.Sort(cs)
		var maxC, med float64
		if len(cs) > 0 {
			maxC = cs[len(cs)-1]
			med = cs[len(cs)/2]
			if len(cs)%2 == 0 {
				med = (cs[len(cs)/2-1] + cs[len(cs)/2]) / 2
			}
		}
		yes := map[bool]string{true: "yes", false: "no"}
		t.Logf("SUMMARY kill -9: trials=%d all_resumed=%s catchup_max=%.2fs catchup_median=%.2fs",
			len(results), yes[resumed && len(results) == trials], maxC, med)
	}
	for i := range trials {
		r := c.killOnce(rng, i%2 == 0, roundLen)
		results = append(results, r)
		t.Logf("trial %d/%d: SIGKILL %s (%s) in round %d, phase %s, %.2f s into the round; applied %d before the kill, %d after the restart; caught up at round %d in %.2f s after the restart",
			i+1, trials, r.victim, r.role, r.round, r.phase, r.into.Seconds(), r.before, r.after, r.target, r.catchup.Seconds())
		for _, p := range r.problems {
			t.Errorf("trial %d: %s", i+1, p)
		}
		if !r.resumed {
			summary()
			c.dumpLogs()
			t.Fatalf("trial %d: %s did not resume", i+1, r.victim)
		}
	}

	// Every process runs, rounds are still applied, one digest.
	for _, m := range c.members {
		if !m.alive() {
			t.Errorf("%s is not running: %v\n%s", m.name(), m.waitErr, logExcerpt(m, 20))
		}
	}
	last := c.maxApplied()
	c.waitFor("2 more rounds applied after the kills", time.Minute, c.members, func(s status) bool { return s.Applied >= last+2 })
	r, digest, err := c.agree(30 * time.Second)
	if err != nil {
		c.dumpLogs()
		t.Fatal(err)
	}
	t.Logf("every member at applied round %d, model %s", r, digest[:16])
	w.poll()
	for _, p := range w.problems() {
		t.Error(p)
	}
	summary()
	for _, m := range c.members {
		c.stop(m)
	}
}

// killOnce runs one trial: it picks the leader (or a random follower),
// waits for the victim's next apply, sleeps a uniform fraction of a round,
// SIGKILLs it, restarts it and waits for it to catch up.
func (c *consortium) killOnce(rng *rand.Rand, leader bool, roundLen time.Duration) killTrial {
	t := c.t
	t.Helper()
	deadline := time.Now().Add(killTrialTimeout)
	var r killTrial
	late := func(what string) bool {
		if time.Now().After(deadline) {
			r.problems = append(r.problems, fmt.Sprintf("timed out after %v %s", killTrialTimeout, what))
			return true
		}
		return false
	}

	// A steady state: every member answers and one leads.
	var victim *member
	for victim == nil {
		sts, oks := c.statuses()
		lead := -1
		all := true
		for i, s := range sts {
			all = all && oks[i] && s.Halted == ""
			if oks[i] && s.Leader {
				lead = i
			}
		}
		if all && lead >= 0 {
			if leader {
				victim = c.members[lead]
			} else {
				var fs []*member
				for i, m := range c.members {
					if i != lead {
						fs = append(fs, m)
					}
				}
				victim = fs[rng.IntN(len(fs))]
			}
			break
		}
		if late("waiting for every member to answer under one leader") {
			return r
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.victim = victim.name()

	// The victim's next apply starts its next round; the kill comes a
	// uniform fraction of a round later.
	s0, err := c.status(victim)
	for err != nil || s0.Phase == "starting" {
		if late("reading the victim's status") {
			return r
		}
		time.Sleep(50 * time.Millisecond)
		s0, err = c.status(victim)
	}
	for {
		s, err := c.status(victim)
		if err == nil && s.Applied > s0.Applied {
			break
		}
		if late("waiting for the victim's next apply") {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	time.Sleep(time.Duration(rng.Int64N(int64(roundLen))))
	before, err := c.status(victim)
	if err != nil {
		r.problems = append(r.problems, fmt.Sprintf("no status just before the kill: %v", err))
		return r
	}
	r.into = time.Since(start)
	c.kill(victim)
	r.round, r.phase, r.before = before.Round, before.Phase, before.Applied
	r.role = "follower"
	if before.Leader {
		r.role = "leader"
	}

	restart := time.Now()
	c.start(victim)
	for {
		s, err := c.status(victim)
		if err == nil && s.Phase != "starting" {
			r.after = s.Applied
			if s.Applied < before.Applied {
				r.problems = append(r.problems, fmt.Sprintf("%s lost applied rounds: %d before the kill, %d after the restart", r.victim, before.Applied, s.Applied))
			}
			break
		}
		if !victim.alive() {
			r.problems = append(r.problems, fmt.Sprintf("%s exited after the restart: %v\n%s", r.victim, victim.waitErr, logExcerpt(victim, 20)))
			return r
		}
		if late("waiting for the restarted member's status") {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Caught up: the victim has applied a round it did not have at the
	// kill, and one read of every member shows none ahead of it.
	for {
		sts, oks := c.statuses()
		var s status
		var ok bool
		var ahead uint64
		for i, m := range c.members {
			if m == victim {
				s, ok = sts[i], oks[i]
			} else if oks[i] {
				ahead = max(ahead, sts[i].Applied)
			}
		}
		if ok && s.Halted != "" {
			r.problems = append(r.problems, fmt.Sprintf("%s halted after the restart: %s", r.victim, s.Halted))
			return r
		}
		if ok && s.Applied > before.Applied && s.Applied >= ahead {
			r.catchup = time.Since(restart)
			r.target = s.Applied
			r.resumed = true
			return r
		}
		if !victim.alive() {
			r.problems = append(r.problems, fmt.Sprintf("%s exited after the restart: %v\n%s", r.victim, victim.waitErr, logExcerpt(victim, 20)))
			return r
		}
		if late(fmt.Sprintf("waiting for %s (at applied round %d) to reach the others (at %d)", r.victim, s.Applied, ahead)) {
			r.problems[len(r.problems)-1] += "\n" + strings.TrimSpace(logExcerpt(victim, 15))
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
}
