package secagg

import (
	"bytes"
	"fmt"
	"slices"
)

// Roster is a set of peer IDs in byte order, the order PRIVACY.md uses
// wherever one is needed. It gives each member its Shamir x-coordinate:
// 1 for the lowest ID, Len() for the highest, never 0. In phase 1 the roster
// is U1, so a share's x names the member it was dealt to.
type Roster struct {
	ids [][]byte
}

// NewRoster copies and sorts ids. It fails on an empty or overlong ID, on a
// repeated ID and on more members than MaxShares.
func NewRoster(ids [][]byte) (Roster, error) {
	if len(ids) > MaxShares {
		return Roster{}, fmt.Errorf("secagg: %d members, more than %d", len(ids), MaxShares)
	}
	sorted := make([][]byte, len(ids))
	for i, id := range ids {
		if err := checkID(id); err != nil {
			return Roster{}, err
		}
		sorted[i] = bytes.Clone(id)
	}
	slices.SortFunc(sorted, bytes.Compare)
	for i := 1; i < len(sorted); i++ {
		if bytes.Equal(sorted[i-1], sorted[i]) {
			return Roster{}, fmt.Errorf("%w: %x appears twice", ErrBadID, sorted[i])
		}
	}
	return Roster{ids: sorted}, nil
}

// Len is the number of members.
func (r Roster) Len() int { return len(r.ids) }

// IDs returns a copy of the members in byte order; member k (0-based) has
// x-coordinate k+1.
func (r Roster) IDs() [][]byte {
	out := make([][]byte, len(r.ids))
	for i, id := range r.ids {
		out[i] = bytes.Clone(id)
	}
	return out
}

// X returns the x-coordinate of id, and false when id is not a member.
func (r Roster) X(id []byte) (uint16, bool) {
	i, ok := slices.BinarySearchFunc(r.ids, id, bytes.Compare)
	if !ok {
		return 0, false
	}
	return uint16(i + 1), true
}

// ID returns the member with x-coordinate x, and nil when there is none.
func (r Roster) ID(x uint16) []byte {
	if x == 0 || int(x) > len(r.ids) {
		return nil
	}
	return bytes.Clone(r.ids[x-1])
}
