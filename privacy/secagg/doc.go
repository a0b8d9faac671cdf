// Package secagg is the pure cryptographic core of secure aggregation,
// PRIVACY.md section 1 (Bonawitz et al., CCS 2017, without a server): the
// keys, the Shamir sharing, the share encryption, the fixed-point encoding
// and the masks that cancel in the sum. It decides nothing about rounds:
// who is in U1, U2 and U3, the signatures, the entries, deadlines, echoes and
// persistence belong to the round machine and the node. It imports the
// standard library only, has no goroutines, no clock and no I/O, and never
// reads global randomness: every function that draws takes an io.Reader
// (crypto/rand.Reader in production, a seeded reader in tests).
//
// # The phases
//
// Phase 0, keys: GenerateKeys makes the two X25519 key pairs of a round,
// c_i (Keys.Share) and s_i (Keys.Mask). ParsePublicKey reads an advertised
// public key and refuses low-order points, whose agreement is all zero.
//
// Phase 1, shares: NewSelfSecret draws b_i and CommitSelf commits to it.
// Deal splits b_i and the private key of s_i t-of-|U1| (Split) with the
// x-coordinates of a Roster (1..|U1| by sorted peer ID) and seals each
// recipient's pair of shares with EncryptShare; OpenShare opens one.
//
// Phase 2, masked input: Encoding.Encode turns the weighted update
// [w, w*x] into integers mod 2^64; Mask adds the self mask PRG(b_i) and the
// pairwise masks, signed by peer-ID order.
//
// Phase 3, unmask: Combine (through RebuildSelfSecret and RebuildMaskKey,
// which check the commitment and the advertised key) rebuilds b_j of every
// survivor and s_j of every dropped member; DroppedPairs derives the pairwise
// seeds a dropped member left in the survivors' inputs; Unmask removes all
// masks from Sum of the survivors' inputs, and Encoding.Decode reads the sum
// and checks it against the encoding's bounds.
//
// # Byte layouts
//
// PRIVACY.md writes concatenations as "a | b". Here a round number is 8
// bytes big-endian, the consortium ID its 32 bytes, a label its ASCII bytes
// and a peer ID a 2-byte big-endian length followed by its bytes (so two
// different (id_i, id_j) pairs never frame to the same string):
//
//	share key  k_ij = HKDF-SHA256(X25519(c_i, c_j.pub), salt = consortium ID,
//	                  info = "gb/secagg/share/1" | r | id_i | id_j), 32 bytes
//	share AAD       = consortium ID | r | id_i | id_j
//	share box       = nonce (12 random bytes) | AES-256-GCM(k_ij, nonce, record, AAD)
//	record          = id_i | id_j | x (2 bytes) | y of b_i's share (66) | y of s_i's share (66)
//	pairwise seed   = HKDF-SHA256(X25519(s_i, s_j.pub), salt = consortium ID,
//	                  info = "gb/secagg/mask/1" | r | lower id | higher id)
//	self seed       = HKDF-SHA256(b_i, no salt, info = "gb/secagg/self/1" | r)
//	commitment      = SHA-256("gb/b" | consortium ID | r | b_i)
//	PRG(seed)       = AES-256-CTR keyed by seed, IV 0, keystream read as
//	                  little-endian uint64
//
// # The field
//
// Secrets are 32 bytes (b_i and an X25519 private key), shared over the prime
// field of p = 2^521 - 1, the Mersenne prime PRIVACY.md names. Every 32-byte
// string is an element below p, so nothing is reduced or lost, and a
// reconstruction from too few shares, or with a share replaced by random
// bytes, lands below 2^256 with probability about 2^-265, so Combine reports
// it (ErrNotASecret) instead of returning a wrong secret. A few flipped bits
// in a share move the result by a small multiple and are not caught that
// way, and a share forged on purpose can aim the result anywhere, which is why
// RebuildSelfSecret and RebuildMaskKey check the result against the
// commitment and the advertised public key. 2^255 - 19 was not taken: it is smaller than 2^256, so some
// 32-byte secrets do not fit. A byte-wise GF(2^8) sharing would cap n at
// 255 and give none of that check. The field arithmetic uses math/big, which
// is not constant time; the secrets it handles are per-round and the shares
// stay in the process until they are sealed. PRIVACY.md suggests
// cloudflare/circl; this package is standard library only, so Shamir is
// written here and tested against its algebra.
//
// # Modulus
//
// Only the 2^64 modulus is implemented. The 2^32 variant that PRIVACY.md
// allows when config validation proves the sum cannot pass 2^31 is not, and
// the Distributed Discrete Gaussian encoding of the distributed DP mode is
// privacy/dp's.
package secagg
