package p2p

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/globalbrain/globalbrain/wire"
)

// MaxGossipRPC is the largest gossipsub RPC a member sends or reads. It is
// a protocol constant, not a setting: a receiver whose limit is below a
// sender's resets the sender's stream, and the sender then loses that
// receiver from the topic until they reconnect. It leaves room for a few
// round messages (maxMessageBytes each) and their framing per RPC; pubsub
// splits larger batches.
const MaxGossipRPC = 256 << 10

// maxMessageBytes bounds one gossip message, as round.MaxMessageBytes bounds
// an encoded round message (a test keeps the two equal; p2p does not import
// round).
const maxMessageBytes = 64 << 10

// ErrMessageTooLarge reports a gossip message above 64 KiB, the largest
// round message.
var ErrMessageTooLarge = errors.New("p2p: gossip message too large")

// Reasons the gossip validator counts under "gossip/..." besides
// wire.ReasonNotMember (checked by the host) and those of Gate.Validate
// (wire.ReasonMalformed, wire.ReasonAuthorMismatch, wire.ReasonStale,
// wire.ReasonBadSignature, ...).
const (
	ReasonAccepted      = "accept"        // passed every check
	ReasonUndeliverable = "undeliverable" // accepted but pubsub's subscription buffer was full
	ReasonDropRPC       = "drop_rpc"      // an outbound RPC dropped (queue full or oversized)
	ReasonBadVerdict    = "bad_verdict"   // the Gate returned a verdict that is none of Accept, Ignore, Reject
)

// gossipName is the protocol name under which gossip counts in Stats.
const gossipName = "gossip"

// gossipTopic is the consortium's gossip topic.
func gossipTopic(consortium [32]byte) string {
	return "/globalbrain/" + hex.EncodeToString(consortium[:]) + "/gossip/1"
}

// gossipTuning holds what every member's pubsub must agree on, or what keeps
// it responsive: the protocol ID, the size limit, the heartbeat and the
// scoring. Both the Host and tests that need a raw publisher use it.
type gossipTuning struct {
	consortium [32]byte
	isMember   *allowList
	stats      *Stats
	log        *slog.Logger
}

// options are the pubsub options every member runs with.
func (t gossipTuning) options() []pubsub.Option {
	topic := gossipTopic(t.consortium)
	// Our own gossipsub protocol ID: a different max message size must not
	// meet default gossipsub nodes, and consortia never share a mesh.
	meshsub := protocolID(t.consortium, "meshsub/1.2.0")
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

	score, thresholds := t.scoring(topic)
	return []pubsub.Option{
		pubsub.WithGossipSubProtocols([]protocol.ID{meshsub}, features),
		pubsub.WithGossipSubParams(params),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithMaxMessageSize(MaxGossipRPC),
		pubsub.WithPeerFilter(func(p peer.ID, _ string) bool { return t.isMember.has(p) }),
		pubsub.WithSubscriptionFilter(pubsub.NewAllowlistSubscriptionFilter(topic)),
		// Announcements are few and small, and a consortium has tens of
		// members: sending our own to every member at once is cheap and
		// does not wait for the mesh.
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerExchange(false),
		pubsub.WithPeerScore(score, thresholds),
		pubsub.WithPeerOutboundQueueSize(128),
		pubsub.WithValidateQueueSize(128),
		pubsub.WithRawTracer(&gossipTracer{stats: t.stats}),
		pubsub.WithLogger(t.log.With("component", "pubsub")),
	}
}

// scoring returns gossipsub's peer-score parameters. They keep strangers out
// and let a member survive a bad message:
//
//   - AppSpecificScore: -1000 for a non-member (below the graylist), 0 for a
//     member; the gater and the peer filter keep strangers out already.
//   - Invalid messages (P4) count -1 x n², decaying to 1% in a minute. One
//     rejected message costs -1; it takes a burst of about 10 to stop
//     gossiping with a member, 20 to ignore it (graylist at -400).
//   - No mesh-delivery penalties (P3, P3b): the topic is quiet between
//     rounds, and a quiet member is not a faulty one.
//   - No IP-colocation penalty: members are authenticated, and several
//     may share an address (tests, one site hosting two members).
//   - TimeInMeshQuantum is set although its weight is zero: a zero quantum
//     divides by zero in pubsub's score.
func (t gossipTuning) scoring(topic string) (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	params := &pubsub.PeerScoreParams{
		Topics: map[string]*pubsub.TopicScoreParams{
			topic: {
				TopicWeight:                    1,
				TimeInMeshQuantum:              time.Second,
				InvalidMessageDeliveriesWeight: -1,
				InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(time.Minute),
			},
		},
		AppSpecificScore: func(p peer.ID) float64 {
			if t.isMember.has(p) {
				return 0
			}
			return -1000
		},
		AppSpecificWeight:         1,
		BehaviourPenaltyWeight:    -1,
		BehaviourPenaltyThreshold: 10,
		BehaviourPenaltyDecay:     pubsub.ScoreParameterDecay(time.Minute),
		DecayInterval:             time.Second,
		DecayToZero:               0.01,
		RetainScore:               10 * time.Minute,
	}
	thresholds := &pubsub.PeerScoreThresholds{
		GossipThreshold:             -100,
		PublishThreshold:            -200,
		GraylistThreshold:           -400,
		AcceptPXThreshold:           1000, // peer exchange is off; never trust PX
		OpportunisticGraftThreshold: 1,
	}
	return params, thresholds
}

// gossip is the consortium's topic: a validator, and a loop handing
// accepted messages of other members to the inbox with the Gate's decoded
// value.
type gossip struct {
	self     peer.ID
	isMember *allowList
	gate     Gate
	inbox    *inbox
	stats    *Stats
	log      *slog.Logger

	ps     *pubsub.PubSub
	topic  *pubsub.Topic
	sub    *pubsub.Subscription
	cancel context.CancelFunc
	done   chan struct{}
}

// newGossip joins the consortium's topic on h and starts delivering to in.
func newGossip(h host.Host, c *Config, isMember *allowList, in *inbox, stats *Stats, log *slog.Logger) (*gossip, error) {
	ctx, cancel := context.WithCancel(context.Background())
	g := &gossip{
		self: h.ID(), isMember: isMember, gate: c.Gate, inbox: in,
		stats: stats, log: log, cancel: cancel, done: make(chan struct{}),
	}
	fail := func(err error) (*gossip, error) {
		cancel()
		return nil, fmt.Errorf("p2p: gossip: %w", err)
	}
	tuning := gossipTuning{consortium: c.Consortium, isMember: isMember, stats: stats, log: log}
	ps, err := pubsub.NewGossipSub(ctx, h, tuning.options()...)
	if err != nil {
		return fail(err)
	}
	name := gossipTopic(c.Consortium)
	if err := ps.RegisterTopicValidator(name, g.validator, pubsub.WithValidatorInline(true)); err != nil {
		return fail(err)
	}
	topic, err := ps.Join(name)
	if err != nil {
		return fail(err)
	}
	sub, err := topic.Subscribe(pubsub.WithBufferSize(256))
	if err != nil {
		return fail(err)
	}
	g.ps, g.topic, g.sub = ps, topic, sub
	go g.loop(ctx)
	return g, nil
}

// validator is the topic's ValidatorEx. It runs for every message, the
// member's own publishes included (there Publish returns its refusal). The
// Gate decodes an accepted message once; the decoded value travels with the
// message in ValidatorData to the subscription loop.
func (g *gossip) validator(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	author := msg.GetFrom()
	v, reason, decoded := g.judge(author, msg.Data)
	local := author == g.self
	if !local {
		g.stats.Inc(gossipName, reason)
	}
	if v != wire.Accept {
		g.log.Debug("gossip refused", "verdict", v, "reason", reason, "author", author, "forwarder", msg.ReceivedFrom, "local", local)
	}
	switch v {
	case wire.Accept:
		msg.ValidatorData = decoded
		return pubsub.ValidationAccept
	case wire.Ignore:
		return pubsub.ValidationIgnore
	default:
		return pubsub.ValidationReject
	}
}

// judge decides a message by its authenticated author (the pubsub
// signature covers author and data): the author must be on the host's
// allow-list, then the Gate decides.
func (g *gossip) judge(author peer.ID, data []byte) (wire.Verdict, string, any) {
	if !g.isMember.has(author) {
		return wire.Reject, wire.ReasonNotMember, nil
	}
	v, reason, decoded := g.gate.Validate(fromPeer(author), data)
	switch v {
	case wire.Accept, wire.Ignore, wire.Reject:
	default:
		return wire.Reject, ReasonBadVerdict, nil
	}
	if reason == "" {
		reason = v.String()
	}
	return v, reason, decoded
}

// loop hands accepted messages of other members to the inbox, without
// waiting: a full inbox drops the message (gossip/inbox_full).
func (g *gossip) loop(ctx context.Context) {
	defer close(g.done)
	for {
		msg, err := g.sub.Next(ctx)
		if err != nil {
			return // closed
		}
		author := msg.GetFrom()
		if author == g.self {
			continue
		}
		g.inbox.push(gossipName, wire.Inbound{Kind: wire.Gossip, From: fromPeer(author), Data: msg.Data, Msg: msg.ValidatorData})
	}
}

// publish signs and sends msg to every member. It copies msg: pubsub keeps
// the slice it is given and sends it later.
func (g *gossip) publish(ctx context.Context, msg []byte) error {
	if len(msg) > maxMessageBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(msg), maxMessageBytes)
	}
	if err := g.topic.Publish(ctx, bytes.Clone(msg)); err != nil {
		return fmt.Errorf("p2p: publish: %w", err)
	}
	return nil
}

// peers returns the members pubsub knows to be subscribed to the topic.
func (g *gossip) peers() []peer.ID { return g.topic.ListPeers() }

// close stops delivery and pubsub, and waits for the loop.
func (g *gossip) close() {
	g.sub.Cancel()
	g.cancel()
	<-g.done
}

// gossipTracer counts what pubsub drops on its own: full queues, oversized
// RPCs, a slow subscriber, bad pubsub signatures. The validator's own
// verdicts are counted by the validator.
type gossipTracer struct {
	stats *Stats
}

var _ pubsub.RawTracer = (*gossipTracer)(nil)

func (t *gossipTracer) DropRPC(*pubsub.RPC, peer.ID) { t.stats.Inc(gossipName, ReasonDropRPC) }
func (t *gossipTracer) UndeliverableMessage(*pubsub.Message) {
	t.stats.Inc(gossipName, ReasonUndeliverable)
}
func (t *gossipTracer) RejectMessage(_ *pubsub.Message, reason string) {
	switch reason {
	case pubsub.RejectValidationFailed, pubsub.RejectValidationIgnored:
		return // counted by the validator
	}
	t.stats.Inc(gossipName, "pubsub_"+strings.ReplaceAll(reason, " ", "_"))
}
func (t *gossipTracer) ThrottlePeer(peer.ID)                                 { t.stats.Inc(gossipName, "throttled") }
func (t *gossipTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (t *gossipTracer) OnClosedOutboundStream(peer.ID)                       {}
func (t *gossipTracer) Join(string)                                          {}
func (t *gossipTracer) Leave(string)                                         {}
func (t *gossipTracer) Graft(peer.ID, string)                                {}
func (t *gossipTracer) Prune(peer.ID, string)                                {}
func (t *gossipTracer) ValidateMessage(*pubsub.Message)                      {}
func (t *gossipTracer) DeliverMessage(*pubsub.Message)                       {}
func (t *gossipTracer) DuplicateMessage(*pubsub.Message)                     {}
func (t *gossipTracer) RecvRPC(*pubsub.RPC)                                  {}
func (t *gossipTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (t *gossipTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
