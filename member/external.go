package member

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/nodeconfig"
	"github.com/globalbrain/globalbrain/train"
	"github.com/globalbrain/globalbrain/train/external"
	"github.com/globalbrain/globalbrain/train/local"
)

// externalTrainer builds the trainer of the node config's trainer section:
// its command, run in the config's directory, with a working directory
// under the store, the manifest's model and the node's example cap, and
// the node's data section (its dir resolved as the built-in trainer
// resolves it) for the command to read the same data.
func externalTrainer(cfg *nodeconfig.Config, man *manifest.Manifest, id identity.Identity, log *slog.Logger) (*external.Trainer, error) {
	data, err := dataSection(cfg)
	if err != nil {
		return nil, err
	}
	seed := cfg.Data.Seed
	t, err := external.New(external.Config{
		Command: cfg.Trainer.Command,
		Dir:     cfg.Trainer.Dir,
		Timeout: cfg.Trainer.TimeoutDuration(),
		WorkDir: filepath.Join(cfg.Store, "trainer"),
		Spec:    local.Spec(man),
		Cap:     cfg.ExampleCap(man),
		Data:    data,
		Seed:    func(r uint64) uint64 { return local.Seed(seed, id.ID, r).Uint64() },
		Log:     log,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: trainer: %w", cfg.Path, err)
	}
	log.Info("external trainer", "command", cfg.Trainer.Command, "dir", cfg.Trainer.Dir, "timeout", cfg.Trainer.Timeout)
	return t, nil
}

// dataSection is the node config's data section as the YAML names it,
// with dir resolved.
func dataSection(cfg *nodeconfig.Config) (map[string]any, error) {
	b, err := yaml.Marshal(cfg.Data)
	if err != nil {
		return nil, err
	}
	data := map[string]any{}
	if err := yaml.Unmarshal(b, &data); err != nil {
		return nil, err
	}
	if dir, _ := data["dir"].(string); dir == "" {
		switch cfg.Data.Dataset {
		case "mnist":
			if dir, err = train.MNISTDir(); err != nil {
				return nil, fmt.Errorf("data: %w", err)
			}
		case "fashion-mnist":
			dir = train.FashionMNISTDir
		}
		data["dir"] = dir
	}
	return data, nil
}
