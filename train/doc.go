// Package train owns local learning: the data sets a member trains on (IDX
// and CSV readers, MNIST found through the Go module proxy, Fashion-MNIST
// from Debian), a CSV's stated normalisation, the seeded validation split
// (Holdout), the check of a data set against a model's input shape and
// classes (CheckSchema), the partitioners that split a data set into
// members (IID, pathological shards, Dirichlet), the built-in models (logistic regression,
// the 2NN MLP and the MNIST CNN, all over one flat []float32 of parameters),
// minibatch SGD with an optional FedProx proximal term, and evaluation.
//
// Nothing here knows about rounds, peers or the network: a caller hands a
// model its parameters, a data set and a seeded random source, and gets the
// trained parameters and statistics back.
package train
