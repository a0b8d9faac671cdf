package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/train/local"
	"github.com/globalbrain/globalbrain/train/modelfile"
)

// exportLockWait is how long export waits for the store's lock, which a
// running node holds.
const exportLockWait = 2 * time.Second

// export is `globalbrain export`: the global model of an applied round,
// read from a stopped node's store, its digest verified, written as
// safetensors or .npz in PyTorch's layout.
func export(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "the node's config: its store and manifest")
	storeDir := fs.String("store", "", "the node's store directory (with --manifest, instead of --config)")
	manPath := fs.String("manifest", "", "the consortium's manifest (with --store)")
	roundN := fs.Uint64("round", 0, "the round whose global model to export (default: the latest applied)")
	format := fs.String("format", "safetensors", "safetensors or npz")
	out := fs.String("out", "", "the file to write (default model-round-N.safetensors or .npz)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: globalbrain export (--config node.yaml | --store DIR --manifest consortium.yaml) [--round N] [--format safetensors|npz] [--out FILE]\n\n"+
			"Writes the global model of an applied round as named tensors in PyTorch's layout\n"+
			"(torch's load_state_dict takes them; see examples/pytorch). It reads the store,\n"+
			"so the node must be stopped.\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("export: unexpected argument %q", pos[0])
	}
	if *format != "safetensors" && *format != "npz" {
		return fmt.Errorf("export: --format %q, want safetensors or npz", *format)
	}
	dir, man, err := offlineSource(*cfgPath, *storeDir, *manPath)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	round, g, err := exportModel(dir, man, *roundN)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	spec := local.Spec(man)
	d := g.Digest()
	var buf bytes.Buffer
	switch *format {
	case "safetensors":
		cid := man.ConsortiumID()
		meta := map[string]string{"format": "pt", "arch": spec.Arch, "round": fmt.Sprint(round),
			"model_digest": d.String(), "consortium": fmt.Sprintf("%x", cid[:])}
		b, err := modelfile.EncodeSafetensors(spec, g.Weights, meta)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		buf.Write(b)
	case "npz":
		if err := modelfile.WriteNPZ(&buf, spec, g.Weights); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	path := *out
	if path == "" {
		path = fmt.Sprintf("model-round-%d.%s", round, *format)
	}
	if err := writeFileAtomic(path, buf.Bytes()); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s: round %d, model %s, %s, %d parameters, %d bytes\n", path, round, d, spec.Arch, len(g.Weights), buf.Len())
	return nil
}

// exportModel reads G(round) (the latest applied round for 0) from
// the store in dir and verifies it: its outcome record names its digest,
// the blob hashes to it, and it decodes to the manifest's model.
func exportModel(dir string, man *manifest.Manifest, round uint64) (uint64, *fedavg.Global, error) {
	if _, err := os.Stat(filepath.Join(dir, "meta.db")); err != nil {
		return 0, nil, fmt.Errorf("no store in %s: %w", dir, err)
	}
	db, err := store.OpenReadOnly(dir, exportLockWait)
	if err != nil {
		return 0, nil, fmt.Errorf("%w (a running node holds its store: stop it, export, start it again)", err)
	}
	defer db.Close()
	cid := man.ConsortiumID()
	if owner, err := db.Get("owner", "consortium"); err == nil && !bytes.Equal(owner, cid[:]) {
		return 0, nil, fmt.Errorf("store %s belongs to another consortium than %s's", dir, man.Name)
	}
	last, err := db.LastApplied()
	if err != nil {
		return 0, nil, err
	}
	if last.Model == (fedavg.Digest{}) {
		return 0, nil, fmt.Errorf("store %s has applied no round yet", dir)
	}
	if round == 0 {
		round = last.Round
	}
	if round > last.Round {
		return 0, nil, fmt.Errorf("round %d is not applied yet: the store's latest is round %d", round, last.Round)
	}
	digest := last.Model
	if round != last.Round {
		o, err := db.Outcome(round)
		if errors.Is(err, store.ErrNotFound) {
			return 0, nil, fmt.Errorf("round %d is no longer kept (the store keeps the last round.retain_rounds = %d rounds; latest %d)", round, man.Round.RetainRounds, last.Round)
		}
		if err != nil {
			return 0, nil, err
		}
		digest = o.Model
	}
	f, _, err := db.OpenBlob(digest)
	if errors.Is(err, store.ErrNoBlob) {
		return 0, nil, fmt.Errorf("round %d: model %s is no longer kept (round.retain_rounds = %d)", round, digest, man.Round.RetainRounds)
	}
	if err != nil {
		return 0, nil, err
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return 0, nil, err
	}
	if got := fedavg.DigestBytes(b); got != digest {
		return 0, nil, fmt.Errorf("round %d: blob %s is corrupt (its bytes hash to %s); the node fetches it again when it runs", round, digest, got)
	}
	g, err := fedavg.Decode(b)
	if err != nil {
		return 0, nil, fmt.Errorf("round %d: model %s: %w", round, digest, err)
	}
	if g.Digest() != digest {
		return 0, nil, fmt.Errorf("round %d: model decodes to digest %s, the outcome names %s", round, g.Digest(), digest)
	}
	return round, g, nil
}

// writeFileAtomic writes b to path through a temporary file and a rename.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
