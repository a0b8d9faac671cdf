package node

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/privacy/secagg"
	"github.com/globalbrain/globalbrain/round"
)

// A participant's part of a secure-aggregation round (PRIVACY.md section
// 1): its round secrets and its own update live only in the private
// bucket of its store; before it publishes anything it persists the secrets
// and the exact bytes it publishes, and after a restart it republishes
// those bytes, never new ones (a second input under the same masks would
// leak the difference). The record is wiped when the round is decided.

// The private buckets: nothing in them is ever served. The own update is
// kept apart from the small record, in binary (round, examples, then the
// float32 coordinates, little-endian; in mode distributed its noised DDG
// encoding instead, uint64 words), so each phase reads and rewrites only
// the record.
const (
	secretsBucket = "secagg-private"
	updateBucket  = "secagg-private-update"
)

// published is an announcement made in a phase, to republish verbatim.
type published struct {
	Digest fedavg.Digest `json:"digest"`
	Length int64         `json:"length"`
	Data   []byte        `json:"data,omitempty"`
}

// secrets is a participant's private record of one round.
type secrets struct {
	Round   uint64        `json:"round"`
	Base    fedavg.Digest `json:"base"`
	Keys    []byte        `json:"keys,omitempty"`    // c and s private keys, 32 bytes each
	B       []byte        `json:"b,omitempty"`       // the self-mask secret
	Updated bool          `json:"updated,omitempty"` // the own update is kept in updateBucket: never a blob
	Shares  *published    `json:"shares,omitempty"`
	Input   *published    `json:"input,omitempty"`
	Reveal  *published    `json:"reveal,omitempty"`
}

func secretsKey(r uint64) string { return fmt.Sprintf("%020d", r) }

// loadSecrets returns round r's record, a fresh one if there is none. The
// store is read once per process; the record is then kept in memory,
// and every change is written through (saveSecrets) before it is used.
// Callers hold secMu.
func (n *Node) loadSecrets(r uint64, base fedavg.Digest) (*secrets, error) {
	if s := n.secCache; s != nil && s.Round == r {
		if s.Base != base {
			return nil, fmt.Errorf("node: private secagg record of round %d is for another base", r)
		}
		return s, nil
	}
	vs, err := n.cfg.Store.List(secretsBucket)
	if err != nil {
		return nil, err
	}
	s := &secrets{Round: r, Base: base}
	for _, v := range vs {
		var rec secrets
		if err := json.Unmarshal(v, &rec); err != nil {
			return nil, fmt.Errorf("node: private secagg record: %w", err)
		}
		if rec.Round == r {
			if rec.Base != base {
				return nil, fmt.Errorf("node: private secagg record of round %d is for another base", r)
			}
			s = &rec
			break
		}
	}
	n.secCache = s
	return s, nil
}

func (n *Node) saveSecrets(s *secrets) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := n.cfg.Store.Put(secretsBucket, secretsKey(s.Round), b); err != nil {
		n.secCache = nil // the memory must never hold what the store does not
		return err
	}
	return nil
}

// keptDelta reads round r's own update back from the private store.
func (n *Node) keptDelta(r uint64) ([]float32, int64, error) {
	body, examples, err := n.keptBody(r, 4)
	if err != nil {
		return nil, 0, err
	}
	delta := make([]float32, len(body)/4)
	for i := range delta {
		delta[i] = math.Float32frombits(binary.LittleEndian.Uint32(body[4*i:]))
	}
	return delta, examples, nil
}

// keptWords reads round r's own DDG encoding (mode distributed) back.
func (n *Node) keptWords(r uint64) ([]uint64, error) {
	body, _, err := n.keptBody(r, 8)
	if err != nil {
		return nil, err
	}
	words := make([]uint64, len(body)/8)
	for i := range words {
		words[i] = binary.LittleEndian.Uint64(body[8*i:])
	}
	return words, nil
}

// keptBody finds round r's private update record: the body after the
// round and the example count, a whole number of unit-byte values.
func (n *Node) keptBody(r uint64, unit int) ([]byte, int64, error) {
	vs, err := n.cfg.Store.List(updateBucket)
	if err != nil {
		return nil, 0, err
	}
	for _, v := range vs {
		if len(v) >= 16 && binary.LittleEndian.Uint64(v) == r {
			if (len(v)-16)%unit != 0 {
				return nil, 0, fmt.Errorf("node: the update kept for round %d does not read (%d bytes)", r, len(v))
			}
			return v[16:], int64(binary.LittleEndian.Uint64(v[8:])), nil
		}
	}
	return nil, 0, fmt.Errorf("node: no update kept for round %d", r)
}

// floatsBody and wordsBody lay out a private update's body.
func floatsBody(delta []float32) []byte {
	b := make([]byte, 0, 4*len(delta))
	for _, v := range delta {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func wordsBody(words []uint64) []byte {
	b := make([]byte, 0, 8*len(words))
	for _, v := range words {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// wipeSecrets deletes the records of the rounds up to r (decided).
func (n *Node) wipeSecrets(r uint64) {
	n.secMu.Lock()
	defer n.secMu.Unlock()
	vs, err := n.cfg.Store.List(secretsBucket)
	if err != nil {
		n.log.Warn("list private secagg records", "err", err)
		return
	}
	for _, v := range vs {
		var s secrets
		if json.Unmarshal(v, &s) == nil && s.Round <= r {
			for _, b := range []string{updateBucket, secretsBucket} { // the update first: the record says it is kept
				if err := n.cfg.Store.Delete(b, secretsKey(s.Round)); err != nil {
					n.log.Warn("wipe private secagg record", "round", s.Round, "err", err)
				}
			}
		}
	}
	if n.secCache != nil && n.secCache.Round <= r {
		n.secCache = nil
	}
}

// keepPrivate stores the own update of round r in the private record.
func (n *Node) keepPrivate(r uint64, base fedavg.Digest, body []byte, examples int64) error {
	n.secMu.Lock()
	defer n.secMu.Unlock()
	s, err := n.loadSecrets(r, base)
	if err != nil {
		return err
	}
	if s.Updated {
		return nil // kept before a restart: the input, if any, was made from it
	}
	b := make([]byte, 16, 16+len(body))
	binary.LittleEndian.PutUint64(b, r)
	binary.LittleEndian.PutUint64(b[8:], uint64(examples))
	b = append(b, body...)
	if err := n.cfg.Store.Put(updateBucket, secretsKey(r), b); err != nil {
		return err
	}
	s.Updated = true
	return n.saveSecrets(s)
}

// keptUpdate reports whether round r's own update is kept already.
func (n *Node) keptUpdate(r uint64, base fedavg.Digest) bool {
	n.secMu.Lock()
	defer n.secMu.Unlock()
	s, err := n.loadSecrets(r, base)
	return err == nil && s.Updated
}

func (n *Node) secAggWork(ctx context.Context, t *round.SecAggTask) {
	n.async(ctx, func() func() {
		msg, err := n.secAggPhase(t)
		return func() {
			if err != nil {
				n.m.SecAggFailed(t, err)
				return
			}
			if err := n.crash(CrashSecAgg + t.Phase.String()); err != nil {
				n.stop = err
				return
			}
			n.m.SecAggDone(t, msg)
		}
	})
}

func (n *Node) rand() interface{ Read([]byte) (int, error) } {
	if n.cfg.Rand != nil {
		return n.cfg.Rand
	}
	return rand.Reader
}

// secAggPhase does a phase's work: the announcement to sign comes back,
// everything it names persisted first.
func (n *Node) secAggPhase(t *round.SecAggTask) (*round.Message, error) {
	n.secMu.Lock()
	defer n.secMu.Unlock()
	s, err := n.loadSecrets(t.Round, t.Base)
	if err != nil {
		return nil, err
	}
	self := n.cfg.Identity.ID
	sess := t.View.Session(n.m.Params().Consortium)
	if t.Phase != round.PhaseKeys && s.Keys == nil {
		return nil, fmt.Errorf("no keys kept for round %d", t.Round)
	}
	var keys secagg.Keys
	if s.Keys != nil {
		if keys, err = parseKeys(s.Keys); err != nil {
			return nil, err
		}
	}
	switch t.Phase {
	case round.PhaseKeys:
		if s.Keys == nil {
			if keys, err = secagg.GenerateKeys(n.rand()); err != nil {
				return nil, err
			}
			s.Keys = append(keys.Share.Bytes(), keys.Mask.Bytes()...)
			if err := n.saveSecrets(s); err != nil {
				return nil, err
			}
		}
		return &round.Message{Kind: round.KindKeyAd, Data: append(keys.Share.PublicKey().Bytes(), keys.Mask.PublicKey().Bytes()...)}, nil

	case round.PhaseShares:
		if s.Shares == nil {
			u1 := make([]secagg.Recipient, len(t.View.KeyAds))
			for i, a := range t.View.KeyAds {
				c, _, err := round.KeyAdKeys(a)
				if err != nil {
					return nil, err
				}
				u1[i] = secagg.Recipient{ID: a.Author, SharePub: c}
			}
			b, err := secagg.NewSelfSecret(n.rand())
			if err != nil {
				return nil, err
			}
			sealed, err := secagg.Deal(sess, self, keys, b, t.View.T, u1, n.rand())
			if err != nil {
				return nil, err
			}
			blob := round.EncodeShareBlob(t.Round, sealed)
			d, err := n.cfg.Store.PutBlob(blob)
			if err != nil {
				return nil, err
			}
			c := secagg.CommitSelf(sess, b)
			s.B, s.Shares = b[:], &published{Digest: d, Length: int64(len(blob)), Data: c[:]}
			if err := n.saveSecrets(s); err != nil {
				return nil, err
			}
		}
		return &round.Message{Kind: round.KindShares, Digest: s.Shares.Digest, Length: s.Shares.Length, Data: s.Shares.Data}, nil

	case round.PhaseInput:
		if s.Input == nil {
			if !s.Updated || len(s.B) != 32 {
				return nil, errors.New("no update or self secret kept")
			}
			enc, err := n.ownEncoding(t.Round)
			if err != nil {
				return nil, err
			}
			u2, err := maskPeers(t.View.KeyAds, t.View.Shares)
			if err != nil {
				return nil, err
			}
			y, err := secagg.Mask(sess, self, keys.Mask, [32]byte(s.B), u2, enc)
			if err != nil {
				return nil, err
			}
			blob := round.EncodeInput(y)
			d, err := n.cfg.Store.PutBlob(blob)
			if err != nil {
				return nil, err
			}
			s.Input = &published{Digest: d, Length: int64(len(blob))}
			if err := n.saveSecrets(s); err != nil {
				return nil, err
			}
		}
		return &round.Message{Kind: round.KindInput, Digest: s.Input.Digest, Length: s.Input.Length}, nil

	case round.PhaseReveal:
		if s.Reveal == nil {
			blob, err := n.reveal(t, sess, keys)
			if err != nil {
				return nil, err
			}
			d, err := n.cfg.Store.PutBlob(blob)
			if err != nil {
				return nil, err
			}
			s.Reveal = &published{Digest: d, Length: int64(len(blob))}
			if err := n.saveSecrets(s); err != nil {
				return nil, err
			}
		}
		return &round.Message{Kind: round.KindReveal, Digest: s.Reveal.Digest, Length: s.Reveal.Length}, nil
	}
	return nil, fmt.Errorf("secagg phase %d", t.Phase)
}

// reveal opens the shares the members of U2 dealt this member and reveals,
// for each, the share of b_j if j is in U3 and of s_j if j dropped: never
// both.
func (n *Node) reveal(t *round.SecAggTask, sess secagg.Session, keys secagg.Keys) ([]byte, error) {
	self := n.cfg.Identity.ID
	pubs := map[string]*ecdh.PublicKey{}
	for _, a := range t.View.KeyAds {
		c, _, err := round.KeyAdKeys(a)
		if err != nil {
			return nil, err
		}
		pubs[string(a.Author)] = c
	}
	var missing []fedavg.Digest
	var out []round.RevealShare
	for _, sh := range t.View.Shares {
		if !n.cfg.Store.HasBlob(sh.Digest) {
			missing = append(missing, sh.Digest)
			continue
		}
		b, err := n.cfg.Store.Blob(sh.Digest)
		if err != nil {
			return nil, err
		}
		boxes, err := round.DecodeShareBlob(t.Round, b)
		if err != nil {
			return nil, fmt.Errorf("share blob of %s: %w", sh.Author.Short(), err)
		}
		rec, err := secagg.OpenShare(sess, keys.Share, pubs[string(sh.Author)], sh.Author, self, boxes[string(self)])
		if err != nil {
			return nil, fmt.Errorf("share of %s: %w", sh.Author.Short(), err)
		}
		survived := slices.ContainsFunc(t.View.Inputs, func(m *round.Message) bool { return identity.Compare(m.Author, sh.Author) == 0 })
		if survived {
			out = append(out, round.RevealShare{Of: sh.Author, Share: rec.B})
		} else {
			out = append(out, round.RevealShare{Of: sh.Author, Mask: true, Share: rec.S})
		}
	}
	if len(missing) > 0 {
		return nil, &round.MissingBlobError{Digests: missing}
	}
	return round.EncodeRevealBlob(t.Round, out), nil
}

func parseKeys(b []byte) (secagg.Keys, error) {
	if len(b) != 64 {
		return secagg.Keys{}, errors.New("node: kept secagg keys are not 64 bytes")
	}
	c, err := ecdh.X25519().NewPrivateKey(b[:32])
	if err != nil {
		return secagg.Keys{}, err
	}
	s, err := ecdh.X25519().NewPrivateKey(b[32:])
	if err != nil {
		return secagg.Keys{}, err
	}
	return secagg.Keys{Share: c, Mask: s}, nil
}

// maskPeers are U2 with their mask public keys from U1's KeyAds.
func maskPeers(keyAds, u2 []*round.Message) ([]secagg.MaskPeer, error) {
	out := make([]secagg.MaskPeer, 0, len(u2))
	for _, sh := range u2 {
		i := slices.IndexFunc(keyAds, func(a *round.Message) bool { return identity.Compare(a.Author, sh.Author) == 0 })
		if i < 0 {
			return nil, fmt.Errorf("no KeyAd of %s", sh.Author.Short())
		}
		_, s, err := round.KeyAdKeys(keyAds[i])
		if err != nil {
			return nil, err
		}
		out = append(out, secagg.MaskPeer{ID: sh.Author, MaskPub: s})
	}
	return out, nil
}

// ownEncoding is the participant's input before masking: its kept update
// encoded as [w, w*x] (mode secagg), or the DDG encoding it kept (mode
// distributed: noised and charged when it was trained).
func (n *Node) ownEncoding(r uint64) ([]uint64, error) {
	if n.secagg.Distributed != nil {
		words, err := n.keptWords(r)
		if err == nil && len(words) != n.secagg.InputWords(len(n.cfg.Genesis.Weights)) {
			err = fmt.Errorf("node: the encoding kept for round %d has %d words, want %d", r, len(words), n.secagg.InputWords(len(n.cfg.Genesis.Weights)))
		}
		return words, err
	}
	delta, examples, err := n.keptDelta(r)
	if err != nil {
		return nil, err
	}
	return n.secagg.Encoding.Encode(float64(examples), delta)
}
