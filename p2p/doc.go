// Package p2p is a member's libp2p transport. It owns:
//
//   - the host: an Ed25519 identity key persisted with mode 0600
//     (LoadOrCreateKey), explicit listen addresses, no relay, TCP and QUIC,
//     or TCP alone under a private network;
//   - the allow-list connection gater: only peers in Config.Members connect,
//     in either direction, and Reload closes connections to peers that left;
//   - the optional pre-shared key (LoadPSK), which encrypts every connection
//     of the consortium a second time and admits only TCP;
//   - the gossipsub topic /globalbrain/<consortium>/gossip/1 and its validator:
//     StrictSign, one fixed maximum RPC size for every member (MaxGossipRPC),
//     the author must be a member and the signer of the round message it
//     carries, then Config.Validate decides; every verdict is counted;
//   - the stream protocols /globalbrain/<consortium>/blob/1, raft/1 and
//     sync/1, which move blobs, Raft messages and round messages between two
//     members with bounded frames, deadlines and per-peer limits;
//   - the keeper, which redials members of the address book that are not
//     connected.
//
// Everything crosses the package boundary as plain Go types: peer IDs are
// identity.PeerID, messages are byte slices handed to a Handler, verdicts are
// a Verdict. No *pubsub.Message or libp2p stream leaves the package, so the
// node can run on an in-memory network in tests and on a Host in production:
// *Host implements the node's Network, and the node is the Host's Handler.
//
// Gossip carries only small signed announcements (round.MaxMessageBytes at
// most); update and model bytes move over the blob protocol and are checked
// against the digest of a signed announcement.
package p2p
