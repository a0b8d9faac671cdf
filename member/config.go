package member

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/nodeconfig"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/local"
)

// Flags are what `globalbrain run` adds to the node config.
type Flags struct {
	Join   bool      // allow a peer ID that is not a genesis member (added since)
	Logs   io.Writer // JSON log lines
	NoSync bool      // store without fsync (tests)
}

// FromConfig opens the member a node config describes: it loads the
// manifest, the identity key, the pre-shared key and the local data,
// builds the trainer and evaluator, listens for the HTTP API and calls
// Open. The member ticks itself in real time.
func FromConfig(ctx context.Context, path string, f Flags) (*Member, error) {
	cfg, err := nodeconfig.Load(path)
	if err != nil {
		return nil, err
	}
	man, err := manifest.Load(cfg.Manifest)
	if err != nil {
		return nil, err
	}
	if err := cfg.CheckManifest(man); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Path, err)
	}
	if _, err := os.Stat(cfg.IdentityKey); err != nil {
		return nil, fmt.Errorf("identity key: %w (create one with globalbrain init)", err)
	}
	id, _, err := p2p.LoadOrCreateKey(cfg.IdentityKey)
	if err != nil {
		return nil, err
	}
	genesisMember := slices.ContainsFunc(man.MemberIDs(), func(p identity.PeerID) bool { return identity.Compare(p, id.ID) == 0 })
	if !genesisMember && !f.Join {
		return nil, fmt.Errorf("this node's peer ID %s is not a member of %q (%s): add it to the manifest's members, "+
			"or, if the consortium added it since genesis (member add/sign/submit), run with --join", id.ID, man.Name, cfg.Manifest)
	}
	var psk []byte
	if cfg.PSKFile != "" {
		if psk, err = p2p.LoadPSK(cfg.PSKFile); err != nil {
			return nil, err
		}
	}
	board := new(node.Board)
	logs := f.Logs
	if logs == nil {
		logs = io.Discard
	}
	log := slog.New(newStatusHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: cfg.Level()}), id.ID.Short(), func() (uint64, string) {
		st := board.Load()
		return st.Round, st.Phase
	}))
	trainer, test, err := loadTrainer(cfg, man, id, log)
	if err != nil {
		return nil, err
	}
	var tr node.Trainer = trainer
	if cfg.Trainer.Command != nil {
		if tr, err = externalTrainer(cfg, man, id, log); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return nil, fmt.Errorf("http API: %w", err)
	}
	m, err := Open(ctx, Options{
		Identity:  id,
		Manifest:  man,
		StoreDir:  cfg.Store,
		Store:     store.Options{NoSync: f.NoSync},
		Libp2p:    &Libp2p{Listen: cfg.Listen, AddressBook: cfg.AddressBook, PSK: psk},
		Trainer:   tr,
		Evaluator: local.NewEvaluator(local.Spec(man), test, log),
		HTTP:      ln,
		Tick:      time.Duration(man.Round.Tick),
		Logger:    log,
		Board:     board,
		Joining:   !genesisMember,

		EpsilonCeiling: cfg.EpsilonCeiling(man),
	})
	if err != nil {
		if !errors.Is(err, net.ErrClosed) {
			ln.Close()
		}
		return nil, err
	}
	return m, nil
}

// loadTrainer builds the built-in trainer over the configured partition of
// the data set's training set (loadData), and returns the set to evaluate
// on: the test set, or the held-out validation split.
func loadTrainer(cfg *nodeconfig.Config, man *manifest.Manifest, id identity.Identity, log *slog.Logger) (*local.Trainer, *train.Dataset, error) {
	start := time.Now()
	ld, err := loadData(cfg, man)
	if err != nil {
		return nil, nil, err
	}
	spec, dc, trainSet, testSet := local.Spec(man), cfg.Data, ld.train, ld.eval
	t, err := local.NewTrainer(spec, trainSet, ld.part, id.ID, dc.Seed, cfg.ExampleCap(man))
	if err != nil {
		return nil, nil, err
	}
	t.Observe = func(r uint64, u fedavg.Update, st train.TrainStats, took time.Duration) {
		log.Info("trained", "round", r, "examples", u.Examples, "train_loss", st.Loss, "seconds", took.Seconds())
	}
	t.Progress = func(r uint64, p train.Progress, took time.Duration) { // at most one line per local.DefaultProgressEvery
		log.Info("training", "round", r, "epoch", p.Epoch, "epochs", p.Epochs, "step", p.Step, "steps", p.Steps,
			"examples_done", p.Examples, "train_loss", p.Loss, "seconds", took.Seconds())
	}
	log.Info("data loaded", "dataset", trainSet.Name, "source", ld.source, "partition", dc.Partition, "part", fmt.Sprintf("%d/%d", dc.Index, dc.Members),
		"examples", len(t.Part), "eval", ld.evalKind, "eval_examples", testSet.N, "seconds", time.Since(start).Seconds())
	return t, testSet, nil
}

// checkStoreOwner records the store's identity and consortium on first use
// and refuses a store that belongs to another node or consortium.
func checkStoreOwner(db *store.DB, id identity.Identity, man *manifest.Manifest) error {
	cid := man.ConsortiumID()
	for _, kv := range []struct {
		key, what string
		want      []byte
	}{{"peer", "peer ID", id.ID}, {"consortium", "consortium", cid[:]}} {
		got, err := db.Get("owner", kv.key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if err := db.Put("owner", kv.key, kv.want); err != nil {
				return err
			}
		case err != nil:
			return err
		case string(got) != string(kv.want):
			return fmt.Errorf("store %s belongs to another %s; give this node its own store directory (or restore the manifest it was created with)", db.Dir(), kv.what)
		}
	}
	return nil
}
