// Package e2e holds the end-to-end tests of the real binary: several
// globalbrain processes on 127.0.0.1 train MNIST together over libp2p.
//
//   - TestKillLeaderMidRound, TestKillFollowerMidRound: one of 4 members is
//     killed with SIGKILL in the middle of a round and restarted; every
//     member must end on the same model digest.
//   - TestNonMemberRefused: a process that is not a member is refused.
//   - TestKillRandomInstant: 5 voters; per trial one of them (alternately
//     the leader and a follower) is SIGKILLed at a uniformly random instant
//     of a round and restarted from its store; no applied round may be
//     lost, it must catch up, and at the end every process runs, all are on
//     one digest at one applied round and rounds are still applied.
//     E2E_TRIALS sets the trials (default 3; the full run is 20), E2E_SEED
//     the random choices.
//   - TestSecAggKill: 5 voters under privacy.mode secagg; a follower is
//     SIGKILLed once its round's share blobs are everywhere, the others go
//     on committing secure-aggregation rounds without it, it is restarted
//     and catches up; the stopped stores hold no plain update and no
//     private secagg record of a decided round.
//   - TestAttack (only with E2E_ATTACK=1, several minutes): a hostile
//     listed member, played by the test through package attacker (a bare
//     go-libp2p host on the consortium's protocols), forges Raft messages,
//     gossip and blob transfers, one attack per subtest; after each, the
//     honest members must be alive, agree, keep applying rounds, and have
//     counted the attack with a reason in /metrics or /status.
//
// E2E_KEEP=1 keeps the members' directories (logs, stores) and
// E2E_LOG_LEVEL=debug raises their log level, for a post-mortem.
package e2e
