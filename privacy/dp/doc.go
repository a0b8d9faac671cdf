// Package dp owns differential privacy (PRIVACY.md section 2): clipping,
// the noise each mode adds, and the Renyi-DP accountant with which every
// node charges, before it publishes, what it releases.
//
// # Modes
//
//   - update (member-level, zero-out adjacency, enforced by the node alone):
//     UpdateNoise clips an update to L2 norm S, rounds it onto the
//     fixed-point grid of step 1/Scale, and adds exact discrete Gaussian
//     noise of standard deviation zS on the grid. The charge per published
//     round is the unsampled Gaussian, RDP alpha/(2 z'^2), with z' = z S
//     Scale / (S Scale + sqrt(d)/2): the sensitivity includes the grid
//     rounding.
//   - distributed (member-level for the aggregate while at most gamma
//     collude; needs secure aggregation): DistributedNoise is the
//     Distributed Discrete Gaussian encoding of Kairouz, Liu and Steinke
//     2021: clip to S, scale, seeded random rotation, conditional
//     randomized rounding, discrete Gaussian noise of variance
//     (z S Scale)^2 / n with n = t - gamma honest contributions, mod 2^64.
//     The charge is the DDG bound (their Proposition 14), DDG.
//   - dp-sgd (record-level for the member's own data): DPSGD clips every
//     example's gradient to example_clip, adds continuous Gaussian noise of
//     standard deviation z * example_clip to each Poisson-sampled batch
//     sum, and charges ceil(E N / B) steps of the subsampled Gaussian with
//     q = B/N (Mironov, Talwar and Zhang 2019).
//
// No amplification by sampling is claimed for the member-level modes: the
// round's sample is public.
//
// # Noise
//
// DiscreteGaussian samples N_Z(0, sigma^2) exactly, by the algorithms of
// Canonne, Kamath and Steinke 2020 (Bernoulli(exp(-gamma)), discrete
// Laplace, rejection), with sigma^2 a rational and every probability a
// ratio of integers: no floating point touches a sample. Randomness is
// injected: a Source reads an io.Reader (crypto/rand in production, a
// seeded ChaCha8 in tests, where every sample is then fixed by the seed).
// AddGaussian is the float64 Gaussian for DP-SGD's gradients, from an
// injected *rand.Rand.
//
// # Accounting
//
// Accountant composes the history of a node's releases (SampledGaussian,
// DDG) by adding their RDP order by order and converts the total to
// (epsilon, delta) with the conversion of Balle et al. 2020 that Opacus's
// get_privacy_spent uses, returning epsilon and the best order. Its orders
// are, by default, Opacus's (DefaultOrders: 1.1, 1.2, ..., 10.9, 12, ...,
// 63), and its subsampled-Gaussian RDP follows
// opacus/accountants/analysis/rdp.py step for step: the tests hold all 300
// rows of an Opacus reference table (testdata/dp-opacus-rdp.tsv) to 1e-6
// relative on epsilon and exactly on the best order. It marshals to JSON,
// so a node persists what it spent, and EpsilonAfter tells a node whether
// its next participation would exceed its budget.
//
// The package is pure: no goroutines, no clock, no I/O. Decoding an
// aggregate (DistributedNoise.DecodeSum) gives the same bits on every CPU:
// every floating-point product is wrapped in an explicit conversion, which
// forbids a fused multiply-add.
package dp
