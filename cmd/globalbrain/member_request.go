package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/globalbrain/globalbrain/round"
)

func readRequest(path string) (*round.AddMember, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	req, err := round.DecodeAddMember(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := req.Member.PublicKey(); err != nil {
		return nil, fmt.Errorf("%s: member: %w", path, err)
	}
	return req, nil
}

// writeRequest writes a request through a temporary file; unless replace,
// an existing file is left alone.
func writeRequest(path string, req *round.AddMember, replace bool) error {
	if !replace {
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("%s exists (pick another --out, or remove it)", path)
		}
	}
	var b bytes.Buffer
	if err := json.Indent(&b, req.Encode(), "", "  "); err != nil {
		return err
	}
	b.WriteByte('\n')
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
