package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/privacy/dp"
	"github.com/globalbrain/globalbrain/round"
)

// Tasks run off the loop: each reads what it needs, does its work and
// returns the function that reports the result to the machine on the loop.
// A task never decides what to do next: a missing blob goes back to the
// machine, which fetches it and hands the task out again.

// loadModel returns the model with digest d: the cached applied model, or
// the store's blob. cached is read on the loop before the task starts.
func (n *Node) loadModel(cached *fedavg.Global, d fedavg.Digest) (*fedavg.Global, error) {
	if cached != nil && cached.Digest() == d {
		return cached, nil
	}
	if !n.cfg.Store.HasBlob(d) {
		return nil, &round.MissingBlobError{Digests: []fedavg.Digest{d}}
	}
	b, err := n.cfg.Store.Blob(d)
	if err != nil {
		return nil, err
	}
	return fedavg.Decode(b)
}

// train trains the member's update for the round and publishes it: the
// blob stored and served, then the signed announcement. Under a privacy
// mode with a budget, the round is charged and the charge persisted before
// anything is stored or published, and a round past the ceiling is
// declined (the update mode's noise is added after the charge, and only
// the noisy update is ever stored).
func (n *Node) train(ctx context.Context, t *round.TrainTask) {
	cached := n.model
	consortium := n.m.Params().Consortium
	n.async(ctx, func() func() {
		decline := func(reason string) func() { return func() { n.m.Decline(t.Round, reason) } }
		base, err := n.loadModel(cached, t.Base)
		if err != nil {
			n.log.Error("cannot train: base model; declining", "round", t.Round, "err", err)
			return decline("no base model")
		}
		if n.secagg != nil && n.keptUpdate(t.Round, t.Base) {
			return func() { n.m.SecAggTrained(t.Round) } // kept before a restart: never trained again
		}
		if p, ok := n.lastPublished(t.Round, t.Base); ok {
			// Published before a restart: announced again as it was. A
			// fresh training would draw fresh noise (update mode) and
			// look like an equivocation, and be charged a second time.
			return func() {
				n.blobRound[p.Digest] = t.Round
				n.m.Trained(t.Round, p.Digest, p.Length, p.Examples)
			}
		}
		cfg := n.strategy.Configure(t.Round, base)
		var mech dp.Mechanism
		var steps int64
		if n.budget != nil {
			// Known before training: a node past its budget does not train.
			if mech, steps, err = n.budget.cost(n.cfg.Trainer, cfg, t.Noise); err == nil {
				err = n.budget.check(mech, steps)
			}
			if err != nil {
				return n.declineBudget(t.Round, err)
			}
		}
		delta, examples, err := n.cfg.Trainer.Train(ctx, t.Round, base, cfg)
		if err != nil {
			if ctx.Err() == nil {
				n.log.Error("training failed; declining", "round", t.Round, "err", err)
			}
			return decline("training failed")
		}
		if n.budget != nil {
			// Charged and persisted before anything derived from the data
			// is stored or published; never refunded.
			if err := n.budget.charge(mech, steps); err != nil {
				return n.declineBudget(t.Round, err)
			}
			if n.budget.mode == manifest.PrivacyUpdate {
				if delta, err = n.budget.addNoise(delta); err != nil {
					n.log.Error("cannot add privacy noise; declining", "round", t.Round, "err", err)
					return decline("privacy noise failed")
				}
			}
		}
		b := round.EncodeUpdate(delta)
		if err := round.CheckUpdate(b, len(base.Weights)); err != nil {
			n.log.Error("trained update fails the edge checks; declining", "round", t.Round, "err", err)
			return decline("update fails the edge checks")
		}
		if n.secagg != nil {
			// Under secure aggregation the update is never a blob: it
			// stays in the private record until it is masked. Norm
			// clipping is the participant's, before encoding: nobody
			// else sees the update to clip it.
			if c := n.cfg.Manifest.Strategy.ClipNorm; c > 0 {
				if _, err := dp.ClipL2(delta, c); err != nil {
					return decline("update cannot be clipped")
				}
			}
			body := floatsBody(delta)
			if t.Noise != nil && n.budget == nil {
				return decline("no privacy budget for the distributed mode")
			}
			if t.Noise != nil {
				// Mode distributed: noised here, after the charge, and
				// only the noised encoding is kept.
				rot := dp.NewRotation(round.RotationSeed(consortium, t.Round, t.Base), len(delta))
				words, err := n.budget.encodeDistributed(t.Noise, delta, rot)
				if err != nil {
					n.log.Error("cannot add privacy noise; declining", "round", t.Round, "err", err)
					return decline("privacy noise failed")
				}
				body = wordsBody(words)
			}
			if err := n.keepPrivate(t.Round, t.Base, body, examples); err != nil {
				n.log.Error("cannot keep update; declining", "round", t.Round, "err", err)
				return decline("cannot keep the update")
			}
			return func() { n.m.SecAggTrained(t.Round) }
		}
		d, err := n.cfg.Store.PutBlob(b) // persist before publish
		if err == nil {
			err = n.notePublished(ownUpdate{Round: t.Round, Base: t.Base, Digest: d, Length: int64(len(b)), Examples: examples})
		}
		if err != nil {
			n.log.Error("cannot store update; declining", "round", t.Round, "err", err)
			return decline("cannot store the update")
		}
		n.gate.Serve(d)
		return func() {
			n.blobRound[d] = t.Round
			n.m.Trained(t.Round, d, int64(len(b)), examples)
		}
	})
}

// declineBudget declines a round the privacy budget does not allow (or
// could not be charged for), saying so in the log, the status and the
// signed Decline.
func (n *Node) declineBudget(r uint64, err error) func() {
	var be *BudgetError
	if errors.As(err, &be) {
		n.budget.declined(r)
		n.log.Warn("privacy budget exhausted", "round", r, "epsilon_spent", be.Spent, "epsilon_next", be.Next,
			"epsilon_ceiling", be.Ceiling, "delta", be.Delta)
		reason := be.Error()
		return func() { n.m.Decline(r, reason) }
	}
	n.log.Error("cannot charge the privacy budget; declining", "round", r, "err", err)
	return func() { n.m.Decline(r, "privacy budget not charged") }
}

func (n *Node) fetch(ctx context.Context, f round.FetchTask) {
	if n.cfg.Store.HasBlob(f.Digest) {
		n.m.BlobStored(f.Digest)
		return
	}
	r := n.m.State().Round + 1
	params := n.m.Params() // read on the loop: the goroutine must not touch the machine
	n.async(ctx, func() func() {
		select {
		case n.fetches <- struct{}{}:
			defer func() { <-n.fetches }()
		case <-ctx.Done():
			return nil
		}
		b, err := n.cfg.Network.Fetch(ctx, f.From, f.Digest, f.Size)
		if err == nil && fedavg.DigestBytes(b) != f.Digest {
			err = fmt.Errorf("node: blob from %s does not match digest %s", f.From.Short(), f.Digest.String()[:12])
		}
		if err == nil && f.Kind != "" {
			// An update or a secagg blob: checked at the edge before it is
			// stored or vouched for.
			if bad := params.CheckBlob(f.Kind, r, b); bad != nil {
				return func() {
					n.log.Warn("update excluded", "digest", f.Digest.String()[:12], "from", f.From.Short(), "err", bad)
					n.m.BadBlob(f.Digest, bad)
				}
			}
		}
		if err == nil {
			err = n.cfg.Store.PutBlobVerified(f.Digest, b) // hashed to f.Digest above
		}
		return func() {
			if err != nil {
				n.log.Debug("fetch failed", "digest", f.Digest.String()[:12], "err", err)
				n.m.FetchFailed(f.Digest)
				return
			}
			n.blobRound[f.Digest] = r
			n.m.BlobStored(f.Digest)
		}
	})
}

// outcome computes G(r) on base from the stored blobs; a missing blob is a
// *round.MissingBlobError.
func (n *Node) outcome(cached *fedavg.Global, base fedavg.Digest, r uint64, inc []*round.Message, sa *round.SecAggView) (*fedavg.Global, error) {
	g, err := n.loadModel(cached, base)
	if err != nil {
		return nil, err
	}
	if sa != nil {
		return round.SecAggOutcome(n.strategy, g, n.m.Params().Consortium, n.secagg, sa, func(d fedavg.Digest) ([]byte, bool) {
			b, err := n.cfg.Store.Blob(d)
			return b, err == nil
		})
	}
	return round.Outcome(n.strategy, g, r, inc, n.cfg.Manifest.Round.MaxExamplesPerMember, func(d fedavg.Digest) ([]byte, bool) {
		b, err := n.cfg.Store.Blob(d)
		return b, err == nil
	})
}

func (n *Node) aggregate(ctx context.Context, t *round.AggregateTask) {
	cached := n.model
	n.async(ctx, func() func() {
		g, err := n.outcome(cached, t.Base, t.Round, t.Included, t.SecAgg)
		var d fedavg.Digest
		if err == nil {
			d = g.Digest() // the hash of g.Encode()
			if err = n.cfg.Store.PutBlobVerified(d, g.Encode()); err != nil {
				err = fmt.Errorf("node: store model: %w", err)
			} else {
				n.gate.Serve(d)
			}
		}
		return func() {
			if err == nil {
				n.blobRound[d] = t.Round
			}
			n.m.Aggregated(t, d, err)
		}
	})
}

// apply recomputes, verifies and persists a committed outcome: the model
// blob first, then one store transaction, then the machine hears of it.
func (n *Node) apply(ctx context.Context, t *round.ApplyTask) {
	cached := n.model
	n.async(ctx, func() func() {
		g, err := n.outcome(cached, t.Entry.Base, t.Entry.Round, t.Entry.Included, t.SecAgg)
		if err != nil {
			return func() { n.m.Applied(t, fedavg.Digest{}, err) }
		}
		d := g.Digest()
		if d != t.Entry.Result {
			return func() { n.m.Applied(t, d, nil) } // the machine judges the entry invalid
		}
		if err := n.cfg.Store.PutBlobVerified(d, g.Encode()); err != nil { // d = g.Digest(), the hash of g.Encode()
			return n.fail(fmt.Errorf("node: store model of round %d: %w", t.Entry.Round, err))
		}
		if err := n.cfg.Store.Apply(round.Applied{Index: t.Index, Round: t.Entry.Round, Model: d, ChainHash: t.Chain, Record: t.Encoded}); err != nil {
			return n.fail(fmt.Errorf("node: apply round %d: %w", t.Entry.Round, err))
		}
		n.gate.Serve(d)
		if n.secagg != nil {
			n.wipeSecrets(t.Entry.Round) // the round is decided: its secrets and own update go
		}
		return func() {
			n.model = g
			n.blobRound[d] = t.Entry.Round
			n.m.Applied(t, d, nil)
			n.collectBlobs(t.Entry.Round, d)
			n.log.Info("applied", "round", t.Entry.Round, "kind", t.Entry.Kind, "included", len(t.Entry.Included), "model", d.String()[:12])
			if n.cfg.OnApply != nil {
				n.cfg.OnApply(Applied{Round: t.Entry.Round, Index: t.Index, Entry: t.Entry, Model: g})
			}
		}
	})
}

// install persists the applied state of a snapshot the machine adopted,
// once its model blob is stored.
func (n *Node) install(ctx context.Context, st *round.State) {
	cached := n.model
	n.async(ctx, func() func() {
		g, err := n.loadModel(cached, st.Model)
		if err != nil {
			return func() { n.m.Installed(st, err) }
		}
		if err := n.cfg.Store.Apply(round.Applied{Index: st.Index, Round: st.Round, Model: st.Model, ChainHash: st.Chain}); err != nil && !errors.Is(err, round.ErrStale) {
			return n.fail(fmt.Errorf("node: install snapshot of round %d: %w", st.Round, err))
		}
		n.gate.Serve(st.Model)
		return func() {
			n.model = g
			n.m.Installed(st, nil)
			n.log.Info("installed snapshot", "round", st.Round, "model", st.Model.String()[:12])
		}
	})
}

// fail stops the loop with err: the store failed, and nothing the node
// does next could be trusted to persist.
func (n *Node) fail(err error) func() {
	return func() { n.stop = err }
}

func (n *Node) sync(ctx context.Context, r uint64) {
	n.async(ctx, func() func() {
		ins := n.cfg.Network.Pull(ctx, r)
		return func() {
			for _, in := range ins {
				n.receive(ctx, in)
			}
		}
	})
}

// collectBlobs deletes the blobs this run stored more than twice
// retain_rounds rounds ago (the log behind a snapshot can reach that far
// back, and members catching up through it fetch those blobs); the applied
// model is always kept. Blobs stored before a restart are not tracked and
// stay.
func (n *Node) collectBlobs(applied uint64, model fedavg.Digest) {
	keep := 2*uint64(max(n.cfg.Manifest.Round.RetainRounds, 1)) + 1
	if applied <= keep {
		return
	}
	for d, r := range n.blobRound {
		if r+keep < applied && d != model {
			n.gate.Unserve(d)
			if err := n.cfg.Store.DeleteBlob(d); err != nil {
				n.log.Warn("delete old blob", "digest", d.String()[:12], "err", err)
				continue
			}
			delete(n.blobRound, d)
		}
	}
}

// ownUpdate is the member's latest published update, kept so that after a
// restart it announces the same update again instead of training anew.
type ownUpdate struct {
	Round    uint64        `json:"round"`
	Base     fedavg.Digest `json:"base"`
	Digest   fedavg.Digest `json:"digest"`
	Length   int64         `json:"length"`
	Examples int64         `json:"examples"`
}

const publishedBucket = "published"

func (n *Node) notePublished(u ownUpdate) error {
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return n.cfg.Store.Put(publishedBucket, "latest", b)
}

// lastPublished returns the update published for round r on base, if it
// is still held.
func (n *Node) lastPublished(r uint64, base fedavg.Digest) (ownUpdate, bool) {
	vs, err := n.cfg.Store.List(publishedBucket)
	if err != nil || len(vs) != 1 {
		return ownUpdate{}, false
	}
	var u ownUpdate
	if json.Unmarshal(vs[0], &u) != nil || u.Round != r || u.Base != base || !n.cfg.Store.HasBlob(u.Digest) {
		return ownUpdate{}, false
	}
	return u, true
}
