package p2p

import (
	"log/slog"
	"sync"
	"time"

	"github.com/globalbrain/globalbrain/wire"
)

// inboxLogEvery limits the "inbox full" warning to one line per interval: a
// node that stalls would otherwise log every message it misses.
const inboxLogEvery = 10 * time.Second

// inbox is the bounded queue of what arrived for the node (Host.Inbox). The
// host's goroutines push to it and never wait: pubsub's delivery loop, the
// Raft streams and the sync server must not stall because the node is slow,
// so a full inbox drops what arrives and counts it under the protocol's
// name ("gossip/inbox_full", "raft/inbox_full", "sync/inbox_full"). Gossip
// the node misses is fetched again by sync; Raft retransmits.
type inbox struct {
	ch    chan wire.Inbound
	stats *Stats
	log   *slog.Logger

	mu     sync.Mutex
	logged time.Time // last "inbox full" warning
}

func newInbox(size int, stats *Stats, log *slog.Logger) *inbox {
	return &inbox{ch: make(chan wire.Inbound, size), stats: stats, log: log}
}

// push queues in for the node, or drops and counts it when the inbox is
// full. It reports whether in was queued.
func (b *inbox) push(protocolName string, in wire.Inbound) bool {
	select {
	case b.ch <- in:
		return true
	default:
	}
	b.stats.Inc(protocolName, ReasonInboxFull)
	now := time.Now()
	b.mu.Lock()
	warn := now.Sub(b.logged) >= inboxLogEvery
	if warn {
		b.logged = now
	}
	b.mu.Unlock()
	if warn {
		b.log.Warn("inbox full: the node is not keeping up; dropping what arrives", "protocol", protocolName, "capacity", cap(b.ch))
	}
	return false
}
