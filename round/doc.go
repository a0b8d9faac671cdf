// Package round owns the agreed round protocol: the state machine every
// member runs around an etcd raft RawNode (PreVote and CheckQuorum on) to
// agree on each round's outcome without a server.
//
// A round r samples members unsteerably (the smallest SHA-256(consortium ID,
// r, peer ID)); participants train from G(r-1), persist their update as a
// blob and gossip a signed announcement; members fetch the blob and gossip a
// signed Have; the leader includes an update once it and floor((voters-1)/2)
// other voters hold it, and proposes a Commit (or an Abandon below
// min_participants at the deadline). Every member validates each committed
// entry with a pure function of the applied log and the blobs it names,
// applies the first valid entry for r, and gossips a signed attestation of
// the resulting model digest; a member contradicted by a majority of voters
// halts.
//
// Round and phase state are a pure function of the applied log. The Machine
// does no I/O, reads no clock and starts no goroutines, and it makes every
// protocol decision: what to fetch, when to fetch again, when a task that
// waited for a blob is handed out again. The Gate is its admission rule for
// gossip, shared with the transport's validator (safe for concurrent use).
// The caller's loop:
//
//	for {
//		// feed: m.Tick(), m.StepRaft(msg), m.Step(gossip from the gate), and
//		// task results (m.Trained, m.Decline, m.BlobStored, m.FetchFailed,
//		// m.Aggregated, m.Applied, m.Installed)
//		rd := m.Ready()
//		persist(rd.HardState, rd.Entries, rd.Snapshot) // before anything is sent
//		send(rd.Messages); publish(rd.Gossip); setAllowList(rd.Members)
//		start(rd.Install, rd.Train, rd.Sync, rd.Fetch, rd.Aggregate, rd.Apply)
//		m.Advance(rd)
//	}
package round
