package round

import (
	"encoding/json"
	"fmt"

	"github.com/globalbrain/globalbrain/identity"
)

// Evidence is proof that a member equivocated: two different
// announcements for one round, both signed by it. Anyone can check it
// (Verify) without trusting the member that kept it.
type Evidence struct {
	Round  uint64          `json:"round"`
	Author identity.PeerID `json:"author"`
	First  *Message        `json:"first"`
	Second *Message        `json:"second"`
}

// Key names the evidence in a store: one per (round, author).
func (e *Evidence) Key() string { return fmt.Sprintf("%020d/%s", e.Round, e.Author) }

// Encode returns the evidence's stored form.
func (e *Evidence) Encode() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	return b
}

// DecodeEvidence parses stored evidence.
func DecodeEvidence(b []byte) (*Evidence, error) {
	var e Evidence
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("round: evidence: %w", err)
	}
	return &e, nil
}

// Verify checks that the evidence proves an equivocation of its author in
// consortium: two valid signatures over different announcements of one
// round.
func (e *Evidence) Verify(consortium [32]byte) error {
	if e.First == nil || e.Second == nil {
		return fmt.Errorf("round: evidence lacks a message")
	}
	for _, m := range []*Message{e.First, e.Second} {
		if m.Kind != KindAnnounce || m.Round != e.Round || identity.Compare(m.Author, e.Author) != 0 {
			return fmt.Errorf("round: evidence message is not %s's announcement for round %d", e.Author.Short(), e.Round)
		}
		if err := m.Verify(consortium); err != nil {
			return err
		}
	}
	if sameAnnouncement(e.First, e.Second) {
		return fmt.Errorf("round: evidence messages announce the same update")
	}
	return nil
}

// maxPendingEvidence bounds the evidence the gate holds for the Machine.
const maxPendingEvidence = 64

// keepEvidence hands an equivocation out once per (round, author), to be
// persisted, and raises the alarm.
func (m *Machine) keepEvidence(e *Evidence) {
	if m.evidenceSeen[e.Key()] {
		return
	}
	m.evidenceSeen[e.Key()] = true
	m.Counters.Equivocations++
	m.alarm("equivocation: %s announced two updates for round %d (%s, %s); evidence kept", e.Author.Short(), e.Round,
		e.First.Digest.String()[:12], e.Second.Digest.String()[:12])
	m.out.Evidence = append(m.out.Evidence, e)
}
