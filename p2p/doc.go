// Package p2p is a member's libp2p transport. It owns:
//
//   - the host: an Ed25519 identity key persisted with mode 0600
//     (LoadOrCreateKey), explicit listen addresses, no relay, TCP and QUIC,
//     or TCP alone under a private network;
//   - the allow-list: Config.Members at start, replaced by SetMembers, which
//     also closes connections to peers that left. The connection gater
//     admits only its members, in either direction, and every gossip and
//     stream check reads it;
//   - the optional pre-shared key (LoadPSK), which encrypts every connection
//     of the consortium a second time and admits only TCP;
//   - the gossipsub topic /globalbrain/<consortium>/gossip/1 and its validator:
//     StrictSign, one fixed maximum RPC size for every member (MaxGossipRPC),
//     the author must be on the allow-list, then the node's Gate decides
//     (Gate.Validate: signer, window, signature) and decodes the message
//     once; every verdict is counted;
//   - the stream protocols /globalbrain/<consortium>/blob/1, raft/1 and
//     sync/1, which move blobs, Raft messages and round messages between two
//     members with bounded frames, deadlines and per-peer limits: streams
//     and requests per peer, Raft messages per peer and second, fetches per
//     server peer, so that one member cannot stall or starve the
//     transport of the others (Limits);
//   - the keeper, which redials members of the address book that are not
//     connected.
//
// p2p attaches to the node through one interface, the node's Gate
// (round.Gate implements it), and the Host is built in one step, before the
// node, with that Gate. The Gate judges gossip on pubsub's goroutines and says which blobs may be
// served. What arrives for the node waits in a bounded inbox, which the
// node pulls (Inbox): gossip the Gate accepted, carrying the Gate's decoded
// value so nothing decodes it twice (wire.Gossip); Raft messages
// (wire.Raft); and members' sync requests (wire.SyncRequest), which the
// node answers on the request's Reply channel. The host never waits for
// the node: a full inbox drops what arrives and counts it. The node calls
// the Host's methods to send (Publish, SendRaft, Fetch, Pull) and calls
// SetMembers when the membership it applies changes.
//
// Everything crosses the package boundary as plain Go types: peer IDs are
// identity.PeerID, messages are byte slices, verdicts and inbound messages
// are the wire package's. No *pubsub.Message or libp2p stream leaves the
// package, and p2p imports neither the node nor the round package, so the
// node can run on an in-memory network in tests and on a Host in
// production.
//
// Gossip carries only small signed announcements (64 KiB at most, the
// bound of round.MaxMessageBytes); update and model bytes move over the
// blob protocol and are checked against the digest of a signed
// announcement.
package p2p
