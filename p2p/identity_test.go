package p2p

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/globalbrain/globalbrain/identity"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "identity.key")

	id, created, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("created = false for a new key")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %04o, want 0600", perm)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm != 0o700 {
		t.Errorf("key directory mode %04o, want 0700", perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil || k.Type() != crypto.Ed25519 {
		t.Fatalf("file is not a marshalled Ed25519 libp2p key: %v", err)
	}
	if pid, _ := peer.IDFromPrivateKey(k); string(pid) != string(id.ID) {
		t.Fatalf("file's peer ID %s, returned %s", pid, id.ID)
	}

	again, created, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Error("created = true when reloading")
	}
	if string(again.ID) != string(id.ID) || !again.Private.Equal(id.Private) {
		t.Errorf("reload gave peer ID %s, want %s", again.ID, id.ID)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = LoadOrCreateKey(path)
	if !errors.Is(err, ErrKeyPermissions) {
		t.Fatalf("0644 key file: err = %v, want ErrKeyPermissions", err)
	}
	if !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), "0644") {
		t.Errorf("error does not say what to do: %v", err)
	}
}

func TestLoadOrCreateKeyRefusesOtherKeys(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.key")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(garbage); err == nil || !strings.Contains(err.Error(), "not a libp2p private key") {
		t.Errorf("garbage key file: err = %v", err)
	}

	sk, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := crypto.MarshalPrivateKey(sk)
	secp := filepath.Join(dir, "secp.key")
	if err := os.WriteFile(secp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(secp); err == nil || !strings.Contains(err.Error(), "want Ed25519") {
		t.Errorf("secp256k1 key file: err = %v", err)
	}
}

func TestPeerIDsAgree(t *testing.T) {
	for i := range 5 {
		id := identity.Derive(7, i)
		k := privKey(id)
		pid, err := peer.IDFromPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if pid != toPeer(id.ID) {
			t.Fatalf("member %d: libp2p peer ID %s, identity %s", i, pid, id.ID)
		}
		if pid.String() != id.ID.String() {
			t.Fatalf("member %d: text forms differ: %s vs %s", i, pid, id.ID)
		}
		if string(fromPeer(pid)) != string(id.ID) {
			t.Fatalf("member %d: fromPeer does not round-trip", i)
		}
		if !k.GetPublic().Equals(mustPub(t, id)) {
			t.Fatalf("member %d: public keys differ", i)
		}
	}
}

func mustPub(t *testing.T, id identity.Identity) crypto.PubKey {
	t.Helper()
	k, err := crypto.UnmarshalEd25519PublicKey(id.Public)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPSKFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "swarm.key")
	psk := NewPSK()
	if err := WritePSK(path, psk); err != nil {
		t.Fatal(err)
	}
	got, err := LoadPSK(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(psk) {
		t.Fatal("LoadPSK does not return the key WritePSK wrote")
	}
	if err := WritePSK(path, psk); err == nil {
		t.Error("WritePSK replaced an existing file")
	}

	for _, c := range []struct {
		name, content string
		want          string
	}{
		{"no header", "00112233\n", "want the lines"},
		{"short", pskHeader + "0011", "shorter than 32 bytes"},
		{"not hex", pskHeader + strings.Repeat("zz", 32) + "\n", "invalid byte"},
		{"unknown encoding", "/key/swarm/psk/1.0.0/\n/base32/\nAAAA\n", "unknown encoding"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
		if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadPSK(p)
		if !errors.Is(err, ErrPSK) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want ErrPSK mentioning %q", c.name, err, c.want)
		}
	}

	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPSK(path); !errors.Is(err, ErrKeyPermissions) {
		t.Errorf("0640 PSK file: err = %v, want ErrKeyPermissions", err)
	}
	if _, err := LoadPSK(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing PSK file: err = %v", err)
	}
}
