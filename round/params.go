package round

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/privacy/dp"
	"github.com/globalbrain/globalbrain/privacy/secagg"
)

// Params are the consortium-wide protocol parameters every member derives
// from the genesis manifest. They must be identical on every member.
type Params struct {
	Consortium      [32]byte
	Members         []identity.PeerID // genesis members
	Voters          []identity.PeerID // the Raft voters, a subset of Members
	Fraction        float64
	MinParticipants int
	OverSelect      int
	DeadlineTicks   int
	ElectionTicks   int
	MaxExamples     int64
	UpdateBytes     int64  // the length every update blob must have (4 x parameters)
	RetainRounds    int    // a snapshot every RetainRounds rounds; the log is compacted behind it (0: never)
	Aggregator      string // names the strategy configuration; entries must carry it
	Rounds          uint64 // last round; 0: no end
	// SecAgg, if set, runs every round as a secure aggregation
	// (PRIVACY.md section 1, secagg.go).
	SecAgg *SecAggParams
}

// SecAggParams are the secure-aggregation parameters.
type SecAggParams struct {
	Gamma      int // colluding participants tolerated; 0: floor(n/3) of each sample (manifest.SecAgg.GammaFor)
	KMin       int // the fewest honest updates a revealed sum may contain, >= 2
	PhaseTicks int // deadline of the keys, shares and reveal phases; the input phase has the round's
	// Encoding is the fixed-point encoding [w, w*x] of mode secagg.
	Encoding secagg.Encoding
	// Distributed, if set, is mode distributed: each participant's input
	// is its Distributed Discrete Gaussian encoding (clipped, rotated,
	// rounded, noised; PaddedDim words), the sum is decoded to the
	// unweighted mean, and Encoding is unused. Its Honest is 0 here; each
	// round's is t - gamma of its sample (NoiseFor).
	Distributed *dp.DistributedNoise
}

// InputWords is the length in 64-bit words of a masked input for updates
// of dim coordinates: dim+1 ([w, w*x]), or the rotation's PaddedDim(dim)
// in mode distributed.
func (s *SecAggParams) InputWords(dim int) int {
	if s.Distributed != nil {
		return dp.PaddedDim(dim)
	}
	return dim + 1
}

// NoiseFor is the distributed mode's encoding in a round of threshold t
// that tolerates gamma colluders: each participant's noise is scaled so
// that t - gamma honest inputs reach the target. Nil outside mode
// distributed.
func (s *SecAggParams) NoiseFor(t, gamma int) *dp.DistributedNoise {
	if s.Distributed == nil {
		return nil
	}
	p := *s.Distributed
	p.Honest = t - gamma
	return &p
}

// Threshold is t = max(ceil(2n/3), gamma + k_min) for a sample of n, and
// the gamma it used; ok is false when no secure aggregation is possible
// (n < 3, or t > n).
func (s *SecAggParams) Threshold(n int) (t, gamma int, ok bool) {
	gamma = s.Gamma
	if gamma <= 0 {
		gamma = n / 3
	}
	t = max((2*n+2)/3, gamma+s.KMin)
	return t, gamma, n >= 3 && t <= n && t >= 2
}

// Validate checks the parameters.
func (p *Params) Validate() error {
	var errs []error
	if len(p.Voters) < 3 {
		errs = append(errs, fmt.Errorf("round: %d voters, want >= 3", len(p.Voters)))
	}
	for _, v := range p.Voters {
		if !slices.ContainsFunc(p.Members, func(m identity.PeerID) bool { return identity.Compare(m, v) == 0 }) {
			errs = append(errs, fmt.Errorf("round: voter %s is not a member", v))
		}
	}
	seen := map[uint64]bool{}
	for _, m := range p.Members {
		id := RaftID(m)
		if seen[id] {
			errs = append(errs, fmt.Errorf("round: raft node ID collision for %s", m))
		}
		seen[id] = true
	}
	if !(p.Fraction > 0 && p.Fraction <= 1) {
		errs = append(errs, fmt.Errorf("round: fraction %v", p.Fraction))
	}
	if p.MinParticipants < 1 || p.MinParticipants > len(p.Members) {
		errs = append(errs, fmt.Errorf("round: min_participants %d", p.MinParticipants))
	}
	if p.DeadlineTicks < 4 || p.ElectionTicks < 3 {
		errs = append(errs, fmt.Errorf("round: deadline %d ticks, election %d ticks", p.DeadlineTicks, p.ElectionTicks))
	}
	if p.UpdateBytes <= 0 || p.UpdateBytes%4 != 0 {
		errs = append(errs, fmt.Errorf("round: update length %d", p.UpdateBytes))
	}
	if s := p.SecAgg; s != nil {
		if s.KMin < 2 || s.PhaseTicks < 2 {
			errs = append(errs, fmt.Errorf("round: secagg k_min %d, phase %d ticks", s.KMin, s.PhaseTicks))
		}
		if s.Distributed == nil {
			if err := s.Encoding.Validate(max(len(p.Members), 1)); err != nil {
				errs = append(errs, fmt.Errorf("round: secagg encoding: %w", err))
			}
		} else if p.UpdateBytes > 0 {
			// The least noise a participant adds is for the most honest
			// inputs a round can count on, all of its members.
			if err := s.NoiseFor(max(len(p.Members), 1), 0).Validate(int(p.UpdateBytes / 4)); err != nil {
				errs = append(errs, fmt.Errorf("round: secagg distributed encoding: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// Target is max(min_participants, ceil(fraction x |M|)): how many includable
// updates close a round early.
func (p *Params) Target(members int) int {
	k := int(math.Ceil(p.Fraction * float64(members)))
	return min(max(k, p.MinParticipants), members)
}

// RaftID derives the Raft node ID of a member from its peer ID.
func RaftID(id identity.PeerID) uint64 {
	h := sha256.Sum256(append([]byte("globalbrain/raft-id/1"), id...))
	return binary.BigEndian.Uint64(h[:8]) | 1 // never zero
}

// Sample returns the k members of round r with the smallest
// SHA-256(consortium ID, r, peer ID), in peer-ID order. Nobody can steer it.
func Sample(consortium []byte, r uint64, ids []identity.PeerID, k int) []identity.PeerID {
	type ranked struct {
		id   identity.PeerID
		rank [32]byte
	}
	rs := make([]ranked, len(ids))
	var rb [8]byte
	binary.BigEndian.PutUint64(rb[:], r)
	for i, id := range ids {
		h := sha256.New()
		h.Write(consortium)
		h.Write(rb[:])
		h.Write(id)
		rs[i].id = id
		h.Sum(rs[i].rank[:0])
	}
	slices.SortFunc(rs, func(a, b ranked) int { return identity.Compare(a.rank[:], b.rank[:]) })
	out := make([]identity.PeerID, 0, k)
	for _, x := range rs[:min(k, len(rs))] {
		out = append(out, x.id)
	}
	slices.SortFunc(out, identity.Compare)
	return out
}

func contains(ids []identity.PeerID, id identity.PeerID) bool {
	_, ok := slices.BinarySearchFunc(ids, id, identity.Compare)
	return ok
}

// Majority is the size of a majority of the voters.
func (p *Params) Majority() int { return len(p.Voters)/2 + 1 }
