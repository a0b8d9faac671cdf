// Package e2e holds the end-to-end test of the real binary: several
// globalbrain processes on 127.0.0.1 train MNIST together over libp2p, one
// is killed with SIGKILL in the middle of a round and restarted, and every
// member must end on the same model digest; a process that is not a member
// is refused.
package e2e
