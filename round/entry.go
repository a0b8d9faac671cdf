package round

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/globalbrain/globalbrain/identity"
)

// EntryKind names a typed log entry.
type EntryKind string

// The kinds of typed log entries. Secure aggregation adds its phase entries
// (keys, shares, unmask) here; each is one step of a round's phase machine.
const (
	EntryCommit  EntryKind = "commit"  // a round's outcome: the included updates and the resulting model
	EntryAbandon EntryKind = "abandon" // a round closed without a new model: G(r) = G(r-1)

	// The phase entries of a secure-aggregation round (secagg.go): each
	// fixes one set of participants, and none changes the model.
	EntryKeys   EntryKind = "sa-keys"   // U1 and their KeyAds
	EntryShares EntryKind = "sa-shares" // U2, their share blobs and b-commitments
	EntryUnmask EntryKind = "sa-unmask" // U3 and their masked inputs; D = U2 \ U3
)

// Entry is a typed entry of the Raft log. A log index is never a round number.
type Entry struct {
	Kind       EntryKind  `json:"kind"`
	Round      uint64     `json:"round"`
	Base       Digest     `json:"base"`                 // G(r-1)
	Prev       Digest     `json:"prev"`                 // chain hash of the previous outcome
	Included   []*Message `json:"included,omitempty"`   // commit: the announcements, verbatim, by peer ID
	Haves      []*Message `json:"haves,omitempty"`      // commit: voters' signed Haves of each inclusion, by digest then author
	Aggregator string     `json:"aggregator,omitempty"` // commit: the strategy configuration's name
	Reveals    []*Message `json:"reveals,omitempty"`    // secagg commit: the t reveals the sum was unmasked with, by peer ID
	Phases     []Digest   `json:"phases,omitempty"`     // secagg commit: digests of the round's Keys, Shares and Unmask entries
	Result     Digest     `json:"result"`               // G(r)
	Reason     string     `json:"reason,omitempty"`     // abandon: why
}

// Encode returns the entry's log form.
func (e *Entry) Encode() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	return b
}

// DecodeEntry parses an entry's log form.
func DecodeEntry(b []byte) (*Entry, error) {
	var e Entry
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("round: entry: %w", err)
	}
	switch e.Kind {
	case EntryCommit, EntryAbandon, EntryKeys, EntryShares, EntryUnmask:
	default:
		return nil, fmt.Errorf("round: entry kind %q", e.Kind)
	}
	return &e, nil
}

// ChainHash links an outcome to the previous one: the Commits and Abandons
// form a hash chain every member can verify.
func ChainHash(prev Digest, encoded []byte) Digest {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(encoded)
	var d Digest
	h.Sum(d[:0])
	return d
}

// Authors returns the included announcements' authors, in entry order.
func (e *Entry) Authors() []identity.PeerID {
	ids := make([]identity.PeerID, len(e.Included))
	for i, m := range e.Included {
		ids[i] = m.Author
	}
	return ids
}

func sortAnnouncements(ms []*Message) {
	slices.SortFunc(ms, func(a, b *Message) int { return identity.Compare(a.Author, b.Author) })
}
