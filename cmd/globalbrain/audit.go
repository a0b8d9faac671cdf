package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/globalbrain/globalbrain/audit"
	"github.com/globalbrain/globalbrain/store"
)

// auditCommand is `globalbrain audit`: a stopped node's log verified
// offline, and who contributed what to which model version.
func auditCommand(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "the node's config: its store and manifest (default "+configName+" unless --store and --manifest are given)")
	storeDir := fs.String("store", "", "the node's store directory (with --manifest, instead of --config)")
	manPath := fs.String("manifest", "", "the consortium's manifest (with --store, instead of --config)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: globalbrain audit [--config node.yaml | --store DIR --manifest consortium.yaml] [--json]\n\n"+
			"Verifies a stopped node's store offline (read-only): the hash chain of the applied rounds, every signature\n"+
			"they carry, the models recomputed from the kept blobs, the stored model blobs; prints who contributed how\n"+
			"many examples to which model version and a ledger per member. Exits non-zero if anything fails to verify.\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("audit: unexpected argument %q", pos[0])
	}
	dir, man, err := offlineSource(*cfgPath, *storeDir, *manPath)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	db, err := store.OpenReadOnly(dir, 0)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer db.Close()
	rep, err := audit.Run(db, man)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if !rep.OK {
		reasons := make([]string, 0, len(rep.Failures))
		for _, f := range rep.Failures {
			reasons = append(reasons, f.String())
		}
		return errors.New("audit: verification failed: " + strings.Join(reasons, "; "))
	}
	return nil
}
