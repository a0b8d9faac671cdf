package p2p

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/globalbrain/globalbrain/identity"
)

// ErrKeyPermissions reports a secret file (identity key or pre-shared key)
// that group or others may read.
var ErrKeyPermissions = errors.New("p2p: secret file is accessible to group or others")

// LoadOrCreateKey loads the member's identity key from path, or creates one
// if the file does not exist. The file holds a libp2p-marshalled Ed25519
// private key (crypto.MarshalPrivateKey) with mode 0600; missing directories
// are created with mode 0700. A key file that group or others can access is
// refused (ErrKeyPermissions), as ssh refuses a private key. created reports
// whether a new key was written.
func LoadOrCreateKey(path string) (id identity.Identity, created bool, err error) {
	b, err := readSecret(path)
	switch {
	case err == nil:
		id, err := decodeKey(b)
		if err != nil {
			return identity.Identity{}, false, fmt.Errorf("p2p: identity key %s: %w", path, err)
		}
		return id, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return identity.Identity{}, false, fmt.Errorf("p2p: identity key: %w", err)
	}

	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return identity.Identity{}, false, fmt.Errorf("p2p: generate identity key: %w", err)
	}
	b, err = crypto.MarshalPrivateKey(k)
	if err != nil {
		return identity.Identity{}, false, fmt.Errorf("p2p: marshal identity key: %w", err)
	}
	if err := writeSecret(path, b); err != nil {
		return identity.Identity{}, false, fmt.Errorf("p2p: identity key: %w", err)
	}
	id, err = decodeKey(b)
	if err != nil {
		return identity.Identity{}, false, fmt.Errorf("p2p: identity key %s: %w", path, err)
	}
	return id, true, nil
}

// decodeKey turns a marshalled libp2p private key into an Identity and checks
// that the identity package derives the same peer ID as libp2p.
func decodeKey(b []byte) (identity.Identity, error) {
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return identity.Identity{}, fmt.Errorf("not a libp2p private key: %w", err)
	}
	if k.Type() != crypto.Ed25519 {
		return identity.Identity{}, fmt.Errorf("key type %s, want Ed25519", k.Type())
	}
	raw, err := k.Raw()
	if err != nil || len(raw) != ed25519.PrivateKeySize {
		return identity.Identity{}, fmt.Errorf("Ed25519 key of %d bytes: %v", len(raw), err)
	}
	id := identity.FromSeed(raw[:ed25519.SeedSize])
	pid, err := peer.IDFromPrivateKey(k)
	if err != nil {
		return identity.Identity{}, err
	}
	if string(pid) != string(id.ID) {
		return identity.Identity{}, fmt.Errorf("peer ID mismatch: libp2p %s, identity %s", pid, id.ID)
	}
	return id, nil
}

// readSecret reads a file that must not be accessible to group or others.
func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run chmod 600 %s", ErrKeyPermissions, path, perm, path)
	}
	const maxSecret = 64 << 10 // a marshalled key is 68 bytes, a PSK file about 100
	b, err := io.ReadAll(io.LimitReader(f, maxSecret+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecret {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxSecret)
	}
	return b, nil
}

// writeSecret writes b to path with mode 0600 through a temporary file, so a
// crash never leaves a partial key behind, and refuses to replace an existing
// file. Missing directories are created with mode 0700.
func writeSecret(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Link, unlike Rename, fails if path appeared meanwhile: two processes
	// creating a key at once never swap identities under each other.
	if err := os.Link(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// privKey returns an identity's key as a libp2p private key. It panics if
// the identity holds no valid Ed25519 key, which is a programming error.
func privKey(id identity.Identity) crypto.PrivKey {
	k, err := crypto.UnmarshalEd25519PrivateKey(id.Private)
	if err != nil {
		panic(fmt.Sprintf("p2p: identity without a valid Ed25519 key: %v", err))
	}
	return k
}

// toPeer converts a peer ID to libp2p's type; the bytes are the same.
func toPeer(id identity.PeerID) peer.ID { return peer.ID(id) }

// fromPeer converts a libp2p peer ID to the identity package's type.
func fromPeer(p peer.ID) identity.PeerID { return identity.PeerID(p) }
