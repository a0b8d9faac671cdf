// Package attacker is a hostile consortium member for the end-to-end tests:
// a bare libp2p host holding a listed member's key that speaks the
// consortium's protocols (/globalbrain/<consortium hex>/{blob,raft,sync}/1
// and the gossip topic) as the wire formats in p2p/frame.go define them,
// but does what the test tells it instead of what the protocol says. It
// never runs a node: it sends forged Raft messages, publishes signed
// gossip of its choosing and serves (or withholds, or trickles) blobs.
//
// It depends on nothing unexported: the protocol IDs, the frame format and
// the gossipsub settings every member must agree on are restated here, so
// a change to them in p2p breaks the e2e tests loudly rather than silently.
package attacker

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/round"
)

// ProtocolID is /globalbrain/<hex consortium ID>/<name>, as p2p names the
// consortium's protocols.
func ProtocolID(consortium [32]byte, name string) protocol.ID {
	return protocol.ID("/globalbrain/" + hex.EncodeToString(consortium[:]) + "/" + name)
}

// Topic is the consortium's gossip topic.
func Topic(consortium [32]byte) string {
	return "/globalbrain/" + hex.EncodeToString(consortium[:]) + "/gossip/1"
}

// maxGossipRPC is p2p.MaxGossipRPC: members reset the stream of a peer
// whose limit differs.
const maxGossipRPC = 256 << 10

// Frame is one frame of the node's stream protocols: a 4-byte big-endian
// length, then the payload.
func Frame(p []byte) []byte {
	return append(binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(p)), uint32(len(p))), p...)
}

// Blob policies: what the attacker does with a request for a blob.
type Policy int

const (
	Serve   Policy = iota // send the blob at once
	Refuse                // status 1, "not servable": the blob it announced is never served
	Trickle               // send the header, then one byte every TrickleEvery (to the peers Trickle selects)
	Stall                 // read the request and never answer
)

// Blob is a blob the attacker answers for.
type Blob struct {
	Data   []byte
	Policy Policy
	// TrickleTo selects the requesters a Trickle blob is trickled to; the
	// others get the Others policy. nil trickles to everyone.
	TrickleTo func(peer.ID) bool
	// Others is what the requesters TrickleTo leaves out get: Serve (the
	// zero value) or Refuse.
	Others Policy
}

// TrickleEvery is the pause between two bytes of a trickled blob: below
// the members' 30 s idle timeout, so each read makes progress and only
// the overall deadline cuts the transfer.
var TrickleEvery = 5 * time.Second

// Config configures a Host.
type Config struct {
	Identity   identity.Identity // a listed member's key
	Consortium [32]byte
	Listen     string // multiaddr, for example /ip4/127.0.0.1/tcp/4100
	Logf       func(format string, args ...any)
}

// Host is the attacker's libp2p host.
type Host struct {
	cfg   Config
	h     host.Host
	ps    *pubsub.PubSub
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup

	mu        sync.Mutex
	blobs     map[[32]byte]*Blob
	requests  map[peer.ID]int              // blob requests received, by requester
	active    map[peer.ID]map[[32]byte]int // streams being trickled, by requester and digest
	maxActive map[peer.ID]int              // the most digests trickled at once, by requester
	cut       map[peer.ID]int              // trickled streams the requester gave up on
	term      uint64                       // highest Raft term seen in messages to this host
	lead      uint64                       // the Raft node that sent the last MsgApp or MsgHeartbeat
	appIndex  uint64                       // the last (index, term) of the leader's log seen in a MsgApp
	appTerm   uint64
	raftIn    int                           // Raft messages received
	lastAnn   *round.Message                // the latest announcement of another member
	gossipIn  int                           // gossip messages received
	haves     map[[32]byte]map[peer.ID]bool // the members that said Have of a blob this host serves
}

// New starts the host: TCP only, no pre-shared key, the member's key, and
// the consortium's gossip topic joined and subscribed.
func New(ctx context.Context, c Config) (*Host, error) {
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	priv, err := crypto.UnmarshalEd25519PrivateKey(c.Identity.Private)
	if err != nil {
		return nil, fmt.Errorf("attacker: key: %w", err)
	}
	lh, err := libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(c.Listen),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.UserAgent("globalbrain"),
	)
	if err != nil {
		return nil, fmt.Errorf("attacker: libp2p: %w", err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	a := &Host{cfg: c, h: lh, ctx: cctx, stop: cancel,
		blobs: map[[32]byte]*Blob{}, requests: map[peer.ID]int{}, active: map[peer.ID]map[[32]byte]int{},
		maxActive: map[peer.ID]int{}, cut: map[peer.ID]int{}, haves: map[[32]byte]map[peer.ID]bool{}}
	lh.SetStreamHandler(ProtocolID(c.Consortium, "raft/1"), a.handleRaft)
	lh.SetStreamHandler(ProtocolID(c.Consortium, "sync/1"), a.handleSync)
	lh.SetStreamHandler(ProtocolID(c.Consortium, "blob/1"), a.handleBlob)

	// The gossipsub settings every member runs with (p2p/gossip.go): the
	// consortium's own meshsub ID, strict signing, the RPC size limit.
	meshsub := ProtocolID(c.Consortium, "meshsub/1.2.0")
	features := func(f pubsub.GossipSubFeature, p protocol.ID) bool {
		if p != meshsub {
			return false
		}
		switch f {
		case pubsub.GossipSubFeatureMesh, pubsub.GossipSubFeaturePX, pubsub.GossipSubFeatureIdontwant:
			return true
		}
		return false
	}
	params := pubsub.DefaultGossipSubParams()
	params.HeartbeatInterval = 500 * time.Millisecond
	params.HeartbeatInitialDelay = 50 * time.Millisecond
	ps, err := pubsub.NewGossipSub(cctx, lh,
		pubsub.WithGossipSubProtocols([]protocol.ID{meshsub}, features),
		pubsub.WithGossipSubParams(params),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithMaxMessageSize(maxGossipRPC),
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerExchange(false),
		// A flood should leave this host: queue generously.
		pubsub.WithPeerOutboundQueueSize(1<<15),
		pubsub.WithValidateQueueSize(1024),
	)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("attacker: gossipsub: %w", err)
	}
	a.ps = ps
	if a.topic, err = ps.Join(Topic(c.Consortium)); err != nil {
		a.Close()
		return nil, err
	}
	if a.sub, err = a.topic.Subscribe(pubsub.WithBufferSize(4096)); err != nil {
		a.Close()
		return nil, err
	}
	a.wg.Add(1)
	go a.readGossip()
	return a, nil
}

// ID is the host's peer ID.
func (a *Host) ID() peer.ID { return a.h.ID() }

// RaftID is the host's Raft node ID.
func (a *Host) RaftID() uint64 { return round.RaftID(a.cfg.Identity.ID) }

// Identity is the member key the host holds.
func (a *Host) Identity() identity.Identity { return a.cfg.Identity }

// Close stops the host.
func (a *Host) Close() {
	a.stop()
	if a.sub != nil {
		a.sub.Cancel()
	}
	_ = a.h.Close()
	a.wg.Wait()
}

// Connect dials a member at a full multiaddr (…/p2p/<peer ID>).
func (a *Host) Connect(ctx context.Context, addr string) error {
	ai, err := peer.AddrInfoFromString(addr)
	if err != nil {
		return err
	}
	return a.h.Connect(ctx, *ai)
}

// Connected reports whether the host has a connection to p.
func (a *Host) Connected(p peer.ID) bool {
	return a.h.Network().Connectedness(p) == network.Connected
}

// TopicPeers lists the members this host's pubsub sees on the topic.
func (a *Host) TopicPeers() []peer.ID { return a.topic.ListPeers() }

// Publish sends data on the gossip topic, signed by the host (pubsub's
// signature); data is what a member would publish, a round message.
func (a *Host) Publish(ctx context.Context, data []byte) error {
	return a.topic.Publish(ctx, data)
}

// PublishMessage signs m with the member key and publishes it.
func (a *Host) PublishMessage(ctx context.Context, m *round.Message) error {
	m.Sign(a.cfg.Consortium, a.cfg.Identity)
	return a.Publish(ctx, m.Encode())
}

// SendRaft opens a stream of the Raft protocol to p and writes each
// message as one frame of its protobuf encoding, as p2p's raftService
// does, then closes the stream.
func (a *Host) SendRaft(ctx context.Context, p peer.ID, msgs ...*pb.Message) error {
	var payloads [][]byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			return err
		}
		payloads = append(payloads, b)
	}
	return a.SendRaftRaw(ctx, p, payloads...)
}

// SendRaftRaw writes each payload as one frame on a fresh Raft stream to p.
func (a *Host) SendRaftRaw(ctx context.Context, p peer.ID, payloads ...[]byte) error {
	s, err := a.h.NewStream(ctx, p, ProtocolID(a.cfg.Consortium, "raft/1"))
	if err != nil {
		return err
	}
	_ = s.SetWriteDeadline(time.Now().Add(10 * time.Second))
	var buf []byte
	for _, b := range payloads {
		buf = append(buf, Frame(b)...)
	}
	if _, err := s.Write(buf); err != nil {
		_ = s.Reset()
		return err
	}
	// Give the receiver time to read before the half-close: it reads
	// frames until EOF, so closing at once loses nothing, but a reset
	// would.
	return s.Close()
}

// SetBlob makes the host answer requests for digest d with b.
func (a *Host) SetBlob(d [32]byte, b *Blob) {
	a.mu.Lock()
	a.blobs[d] = b
	a.mu.Unlock()
}

// BlobStats are what the blob server saw of one requester.
type BlobStats struct {
	Requests int // requests received
	// Active is the number of fetches being trickled now: distinct digests
	// with a stream open. A fetch resumes on a new stream after a cut, and
	// the old stream's end is seen only at its next write, so streams
	// would count one fetch twice.
	Active    int
	MaxActive int // the most fetches trickled at once
	Cut       int // trickled streams the requester gave up on (reset or deadline)
}

// BlobStatsOf returns what the blob server saw of requester p.
func (a *Host) BlobStatsOf(p peer.ID) BlobStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return BlobStats{Requests: a.requests[p], Active: len(a.active[p]), MaxActive: a.maxActive[p], Cut: a.cut[p]}
}

// RaftView is what the host learned from the Raft messages members sent it.
type RaftView struct {
	Term     uint64 // highest term seen
	Leader   uint64 // sender of the last MsgApp or MsgHeartbeat
	Messages int
	// AppIndex and AppLogTerm are the last entry of the leader's log seen
	// in a MsgApp (its Index and LogTerm when it carried no entries).
	AppIndex, AppLogTerm uint64
}

// Raft returns what the host learned from Raft messages sent to it.
func (a *Host) Raft() RaftView {
	a.mu.Lock()
	defer a.mu.Unlock()
	return RaftView{Term: a.term, Leader: a.lead, Messages: a.raftIn, AppIndex: a.appIndex, AppLogTerm: a.appTerm}
}

// ResetRaft forgets what Raft messages taught the host (the consortium
// was rebuilt from empty stores).
func (a *Host) ResetRaft() {
	a.mu.Lock()
	a.term, a.lead, a.appIndex, a.appTerm = 0, 0, 0, 0
	a.mu.Unlock()
}

// LastAnnouncement is the latest update announcement of another member
// that the host received by gossip, nil before the first.
func (a *Host) LastAnnouncement() *round.Message {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastAnn
}

// Haves returns the members that gossiped a Have of d, a blob this host
// serves.
func (a *Host) Haves(d [32]byte) []peer.ID {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []peer.ID
	for p := range a.haves[d] {
		out = append(out, p)
	}
	return out
}

// GossipIn counts the gossip messages of other members received.
func (a *Host) GossipIn() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gossipIn
}

func (a *Host) readGossip() {
	defer a.wg.Done()
	for {
		msg, err := a.sub.Next(a.ctx)
		if err != nil {
			return
		}
		if msg.GetFrom() == a.h.ID() {
			continue
		}
		m, err := round.DecodeMessage(msg.Data)
		a.mu.Lock()
		a.gossipIn++
		if err == nil && m.Kind == round.KindAnnounce {
			a.lastAnn = m
		}
		if err == nil && m.Kind == round.KindHave {
			if _, mine := a.blobs[m.Digest]; mine {
				if a.haves[m.Digest] == nil {
					a.haves[m.Digest] = map[peer.ID]bool{}
				}
				a.haves[m.Digest][msg.GetFrom()] = true
			}
		}
		a.mu.Unlock()
	}
}

// handleRaft reads the frames members send (a leader replicates to every
// member) and notes the term; it never answers.
func (a *Host) handleRaft(s network.Stream) {
	defer s.Close()
	for {
		_ = s.SetReadDeadline(time.Now().Add(time.Minute))
		var hdr [4]byte
		if _, err := io.ReadFull(s, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > 8<<20 {
			_ = s.Reset()
			return
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(s, b); err != nil {
			return
		}
		var m pb.Message
		if proto.Unmarshal(b, &m) != nil {
			continue
		}
		a.mu.Lock()
		a.raftIn++
		a.term = max(a.term, m.GetTerm())
		if t := m.GetType(); t == pb.MessageType_MsgApp || t == pb.MessageType_MsgHeartbeat {
			a.lead = m.GetFrom()
		}
		if m.GetType() == pb.MessageType_MsgApp {
			a.appIndex, a.appTerm = m.GetIndex(), m.GetLogTerm()
			if es := m.GetEntries(); len(es) > 0 {
				a.appIndex, a.appTerm = es[len(es)-1].GetIndex(), es[len(es)-1].GetTerm()
			}
		}
		a.mu.Unlock()
	}
}

// handleSync answers every sync request with no messages.
func (a *Host) handleSync(s network.Stream) {
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(s, hdr[:]); err != nil {
		return
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > 64 {
		_ = s.Reset()
		return
	}
	if _, err := io.CopyN(io.Discard, s, int64(n)); err != nil {
		return
	}
	_, _ = s.Write([]byte{0, 0, 0, 0})
}

// handleBlob answers a blob request (digest [32] | offset uint64) by the
// blob's policy: status 0, total size and the bytes from offset, or status
// 1 and a reason frame.
func (a *Host) handleBlob(s network.Stream) {
	from := s.Conn().RemotePeer()
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req [40]byte
	if _, err := io.ReadFull(s, req[:]); err != nil {
		_ = s.Reset()
		return
	}
	var d [32]byte
	copy(d[:], req[:32])
	off := binary.BigEndian.Uint64(req[32:])
	a.mu.Lock()
	a.requests[from]++
	b := a.blobs[d]
	a.mu.Unlock()
	_ = s.SetWriteDeadline(time.Time{})
	policy := Refuse
	if b != nil {
		policy = b.Policy
		if policy == Trickle && b.TrickleTo != nil && !b.TrickleTo(from) {
			policy = b.Others
		}
	}
	if policy == Refuse || off > uint64(len(b.Data)) {
		_, _ = s.Write(append([]byte{1}, Frame([]byte("not servable"))...))
		_ = s.Close()
		return
	}
	if policy == Stall {
		<-a.ctx.Done()
		_ = s.Reset()
		return
	}
	hdr := make([]byte, 9)
	binary.BigEndian.PutUint64(hdr[1:], uint64(len(b.Data)))
	rest := b.Data[off:]
	if policy == Serve {
		_ = s.SetWriteDeadline(time.Now().Add(time.Minute))
		_, _ = s.Write(append(hdr, rest...))
		_ = s.Close()
		return
	}
	// Trickle: the header at once, then a byte at a time, until the
	// requester gives up or the host closes.
	a.mu.Lock()
	if a.active[from] == nil {
		a.active[from] = map[[32]byte]int{}
	}
	a.active[from][d]++
	a.maxActive[from] = max(a.maxActive[from], len(a.active[from]))
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if a.active[from][d]--; a.active[from][d] == 0 {
			delete(a.active[from], d)
		}
		a.mu.Unlock()
	}()
	if _, err := s.Write(hdr); err != nil {
		a.gaveUp(from, s)
		return
	}
	t := time.NewTicker(TrickleEvery)
	defer t.Stop()
	for i := 0; i < len(rest); i++ {
		select {
		case <-a.ctx.Done():
			_ = s.Reset()
			return
		case <-t.C:
		}
		_ = s.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := s.Write(rest[i : i+1]); err != nil {
			a.gaveUp(from, s)
			return
		}
	}
	_ = s.Close()
}

func (a *Host) gaveUp(from peer.ID, s network.Stream) {
	a.mu.Lock()
	a.cut[from]++
	a.mu.Unlock()
	_ = s.Reset()
}
