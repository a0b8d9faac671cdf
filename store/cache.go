package store

import (
	"container/list"
	"sync"

	"github.com/globalbrain/globalbrain/fedavg"
)

// DefaultBlobCache is the blob cache a member's store keeps when its
// options leave Options.BlobCache zero (member.Open): room for a round's
// inputs on the 2NN (199k parameters) from ten secure-aggregation
// participants (masked, 8 bytes a parameter) or forty plain ones, and the
// model.
const DefaultBlobCache int64 = 32 << 20

// blobCache keeps the bytes of blobs this process wrote or read and
// verified, least recently used first out, up to max bytes in all. Every
// entry holds bytes that hash to its digest: PutBlob hashed them,
// PutBlobVerified's caller did, or Blob did when it read them from disk.
// It shares the bytes it holds with the writer that handed them over and
// with every reader, none of whom may change them (PutBlob's and Blob's
// contracts).
type blobCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	items map[fedavg.Digest]*list.Element // of *cachedBlob
	lru   *list.List                      // front: least recently used
}

type cachedBlob struct {
	d fedavg.Digest
	b []byte
}

func newBlobCache(max int64) *blobCache {
	if max <= 0 {
		return nil
	}
	return &blobCache{max: max, items: map[fedavg.Digest]*list.Element{}, lru: list.New()}
}

// get returns blob d's bytes, if held: shared, to be read only.
func (c *blobCache) get(d fedavg.Digest) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[d]
	if !ok {
		return nil, false
	}
	c.lru.MoveToBack(e)
	return e.Value.(*cachedBlob).b, true
}

// put keeps b, which must hash to d and must not be changed by anyone
// afterwards. A blob larger than the whole cache is not kept.
func (c *blobCache) put(d fedavg.Digest, b []byte) {
	if c == nil || int64(len(b)) > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[d]; ok {
		c.lru.MoveToBack(e)
		return
	}
	c.items[d] = c.lru.PushBack(&cachedBlob{d: d, b: b})
	c.size += int64(len(b))
	for c.size > c.max {
		c.removeElement(c.lru.Front())
	}
}

// drop forgets blob d.
func (c *blobCache) drop(d fedavg.Digest) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[d]; ok {
		c.removeElement(e)
	}
}

func (c *blobCache) removeElement(e *list.Element) {
	cb := c.lru.Remove(e).(*cachedBlob)
	delete(c.items, cb.d)
	c.size -= int64(len(cb.b))
}

// bytes is what the cache holds (tests).
func (c *blobCache) bytes() int64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
