package main

import (
	"errors"
	"os"

	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/nodeconfig"
)

// offlineSource returns the store directory and the manifest a command that
// reads a stopped node's store works on (audit, export): those of the node
// config (--config; node.yaml in the current directory when no flag is
// given and it exists), or --store and --manifest, not both.
func offlineSource(cfgPath, storeDir, manPath string) (string, *manifest.Manifest, error) {
	if cfgPath == "" && storeDir == "" && manPath == "" {
		if _, err := os.Stat(configName); err == nil {
			cfgPath = configName
		}
	}
	switch {
	case cfgPath != "" && (storeDir != "" || manPath != ""):
		return "", nil, errors.New("give --config, or --store and --manifest, not both")
	case cfgPath != "":
		c, err := nodeconfig.Load(cfgPath)
		if err != nil {
			return "", nil, err
		}
		storeDir, manPath = c.Store, c.Manifest
	case storeDir == "" || manPath == "":
		return "", nil, errors.New("give --config node.yaml, or both --store DIR and --manifest FILE")
	}
	man, err := manifest.Load(manPath)
	if err != nil {
		return "", nil, err
	}
	return storeDir, man, nil
}
