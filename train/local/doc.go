// Package local owns a member's local learning, everything between the
// global model it is handed and the update it hands back: the model the
// manifest names (Spec), G(0) from the init seed (Genesis), the member's
// slice of a data set (Partition), the training randomness of a round
// (Seed), one local update (Update), the built-in Trainer that the node
// calls each round, and the Evaluator that scores applied models on the
// local test set off the node's loop.
//
// With Trainer.DPSGD set, local training is record-level DP-SGD
// (UpdateDPSGD: Poisson-sampled steps, per-example clipping, Gaussian
// noise; PRIVACY.md section 2), its randomness from the member's secret
// (DPRand) rather than from Seed, and DPSGDCharge (Trainer.DPCharge) is
// what the member's accountant must be charged before the update is
// published.
//
// The simulator's direct loop and every node, in one process or many, train
// through the same functions with the same seeds, so they produce the same
// updates to the bit.
package local
