package round

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
)

// sigCacheSize bounds each of the two generations of a sigCache: a round
// of 50 members sees a few thousand distinct signed messages (every member's
// Haves of every blob), so a generation outlasts the round that filled it.
const sigCacheSize = 1 << 14

// sigCache remembers the messages whose signatures verified, so that a
// message verified once (at the gate, as gossip) is not verified again
// when an entry carries it or a member repeats it: the Haves a Commit or
// a secure-aggregation entry names, a re-announcement. The key is a hash
// of everything Verify depends on (the author, which embeds the public
// key, the signed bytes, which include the consortium, and the signature),
// so a hit answers exactly as Verify would: ed25519 verification is a
// function of those alone. Only successes are kept. Two generations: when
// the current one is full it becomes the old one and the older is dropped.
type sigCache struct {
	mu       sync.Mutex
	cur, old map[[32]byte]struct{}
}

func sigKey(msg *Message, consortium [32]byte) [32]byte {
	h := sha256.New()
	var n [8]byte
	for _, part := range [][]byte{msg.Author, msg.signedBytes(consortium), msg.Sig} {
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func (c *sigCache) has(k [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.cur[k]; ok {
		return true
	}
	_, ok := c.old[k]
	return ok
}

func (c *sigCache) add(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil || len(c.cur) >= sigCacheSize {
		c.old, c.cur = c.cur, make(map[[32]byte]struct{}, 64)
	}
	c.cur[k] = struct{}{}
}

// verify is msg.Verify(consortium), remembered for the messages that pass.
func (c *sigCache) verify(msg *Message, consortium [32]byte) error {
	k := sigKey(msg, consortium)
	if c.has(k) {
		return nil
	}
	if err := msg.Verify(consortium); err != nil {
		return err
	}
	c.add(k)
	return nil
}
