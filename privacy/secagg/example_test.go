package secagg_test

import (
	"fmt"
	"math/rand/v2"

	"github.com/globalbrain/globalbrain/privacy/secagg"
)

// Example runs one round of secure aggregation for four members, with
// t = 3: all four deal their shares and send masked inputs, member "d"
// drops before phase 3, and the other three rebuild what they need to read
// the sum of their three updates, and nothing else.
func Example() {
	rand := rand.NewChaCha8([32]byte{1}) // crypto/rand.Reader in production
	session := secagg.Session{Consortium: [32]byte{0xc0}, Round: 7}
	enc := secagg.Encoding{Clip: 1, Scale: 1 << 20, MaxWeight: 1000}
	const t = 3
	type member struct {
		id    []byte
		keys  secagg.Keys
		b     [32]byte
		w     float64
		x     []float32
		boxes []secagg.Sealed
	}
	ms := []*member{
		{id: []byte("a"), w: 100, x: []float32{0.5, -0.25}},
		{id: []byte("b"), w: 300, x: []float32{0.1, 0.75}},
		{id: []byte("c"), w: 600, x: []float32{-0.2, 2}}, // 2 is clamped to 1
		{id: []byte("d"), w: 50, x: []float32{1, 1}},
	}

	// Phase 0: keys, advertised as KeyAds.
	for _, m := range ms {
		m.keys, _ = secagg.GenerateKeys(rand)
	}
	// Phase 1: b_i, its commitment, the sealed shares for every member.
	var u1 []secagg.Recipient
	var u2 []secagg.MaskPeer
	for _, m := range ms {
		u1 = append(u1, secagg.Recipient{ID: m.id, SharePub: m.keys.Share.PublicKey()})
		u2 = append(u2, secagg.MaskPeer{ID: m.id, MaskPub: m.keys.Mask.PublicKey()})
	}
	commit := map[string][32]byte{}
	for _, m := range ms {
		m.b, _ = secagg.NewSelfSecret(rand)
		commit[string(m.id)] = secagg.CommitSelf(session, m.b)
		m.boxes, _ = secagg.Deal(session, m.id, m.keys, m.b, t, u1, rand)
	}
	// Phase 2: every member of U2 sends its masked input.
	ys := map[string][]uint64{}
	for _, m := range ms {
		e, _ := enc.Encode(m.w, m.x)
		ys[string(m.id)], _ = secagg.Mask(session, m.id, m.keys.Mask, m.b, u2, e)
	}
	// Phase 3: d dropped. The survivors (all three reveal, t = 3) open what
	// the others dealt them and reveal b's share of each survivor, s's share
	// of d.
	survivors, dropped := ms[:3], ms[3]
	var self []secagg.Seed
	var inputs [][]uint64
	for _, j := range survivors {
		var shares []secagg.Share
		for k, r := range survivors { // r opens j's box for r (roster order = ms order here)
			rec, _ := secagg.OpenShare(session, r.keys.Share, j.keys.Share.PublicKey(), j.id, r.id, j.boxes[k].Box)
			shares = append(shares, rec.B)
		}
		b, err := secagg.RebuildSelfSecret(session, shares, t, commit[string(j.id)])
		if err != nil {
			panic(err)
		}
		self = append(self, secagg.SelfMaskSeed(session, b))
		inputs = append(inputs, ys[string(j.id)])
	}
	var shares []secagg.Share
	for k, r := range survivors {
		rec, _ := secagg.OpenShare(session, r.keys.Share, dropped.keys.Share.PublicKey(), dropped.id, r.id, dropped.boxes[k].Box)
		shares = append(shares, rec.S)
	}
	key, err := secagg.RebuildMaskKey(shares, t, dropped.keys.Mask.PublicKey())
	if err != nil {
		panic(err)
	}
	pairs, _ := secagg.DroppedPairs(session, dropped.id, key, u2[:3])
	sum, _ := secagg.Sum(inputs)
	plain, _ := secagg.Unmask(sum, self, pairs)
	w, wx, err := enc.Decode(plain, len(survivors))
	if err != nil {
		panic(err)
	}
	// (100*0.5 + 300*0.1 - 600*0.2)/1000 = -0.04; (-25 + 225 + 600)/1000 = 0.8
	fmt.Printf("total weight %.0f, FedAvg mean [%.4f %.4f]\n", w, wx[0]/w, wx[1]/w)
	// Output: total weight 1000, FedAvg mean [-0.0400 0.8000]
}
