package member

import (
	"crypto/sha256"
	"fmt"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/privacy/dp"
	"github.com/globalbrain/globalbrain/train/local"
)

// dpsgdTrainer is the built-in trainer running DP-SGD: the node charges
// its PrivacyCost before it publishes.
type dpsgdTrainer struct{ *local.Trainer }

// PrivacyCost implements node.DPSGDTrainer: ceil(E N / B) steps of the
// subsampled Gaussian over the trainer's part.
func (t dpsgdTrainer) PrivacyCost(cfg fedavg.TrainConfig) (dp.Mechanism, int64, error) {
	m, steps, err := t.DPCharge(cfg.Epochs)
	if err != nil {
		return nil, 0, err
	}
	return m, steps, nil
}

// wirePrivacy makes the built-in trainer run the manifest's DP-SGD under
// mode dp-sgd: example clip and z from privacy.dp, the expected batch
// size training.batch_size, and the samples and noise keyed by a secret
// derived from the member's identity key (so a member retraining a round
// after a restart publishes the same update, and nobody else can compute
// its noise). A trainer that is not the built-in one is used as it is: it
// must implement node.DPSGDTrainer itself.
func wirePrivacy(man *manifest.Manifest, id identity.Identity, tr node.Trainer) (node.Trainer, error) {
	if man.Privacy.Mode != manifest.PrivacyDPSGD {
		return tr, nil
	}
	lt, ok := tr.(*local.Trainer)
	if !ok {
		return tr, nil
	}
	if lt.DPSGD == nil {
		p := dp.DPSGD{ExampleClip: man.Privacy.DP.ExampleClip, Z: man.Privacy.DP.Z, BatchSize: man.Training.BatchSize}
		if err := p.Validate(len(lt.Part)); err != nil {
			return nil, fmt.Errorf("member: privacy.mode dp-sgd: %w", err)
		}
		lt.DPSGD = &p
	}
	if lt.DPKey == nil && len(id.Private) > 0 {
		h := sha256.New()
		h.Write([]byte("globalbrain/dp-sgd/key/1\x00"))
		h.Write(id.Private.Seed())
		lt.DPKey = h.Sum(nil)
	}
	return dpsgdTrainer{lt}, nil
}
