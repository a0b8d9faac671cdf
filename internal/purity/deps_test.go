package purity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// badDeps is the architecture as a table: for each package, what it may
// not depend on (anywhere in its dependencies, tests excluded) and why. A
// listed package that no longer exists fails the test, so the table cannot
// rot silently.
var badDeps = []struct {
	pkg    string
	banned map[string]string // substring of an import path -> reason
}{
	{"fedavg", map[string]string{
		"libp2p": "aggregation is pure: no network", "bbolt": "aggregation is pure: no storage", "net": "aggregation is pure: no network",
		"gonum": "aggregation is deterministic to the bit: no BLAS"}},
	{"round", map[string]string{
		"libp2p": "the round machine is pure: the node carries out its network work",
		"bbolt":  "the round machine is pure: the node persists",
		"net":    "the round machine is pure: no network",
		"/p2p":   "the round machine knows no transport", "/store": "the round machine knows no store"}},
	{"privacy", map[string]string{
		"libp2p": "privacy is pure: the node carries out its network work", "bbolt": "privacy is pure: no storage", "net": "privacy is pure: no network",
		"/round": "privacy knows no protocol: round uses privacy, not the reverse", "/node": "privacy knows no node", "/p2p": "privacy knows no transport"}},
	{"node", map[string]string{
		"bbolt":  "the node speaks to storage through its Store interface (package store implements it)",
		"gonum":  "training is the Trainer's (train/local), not the node's",
		"libp2p": "the node speaks to the network through its Network interface (package p2p implements it)",
		"/p2p":   "the transport attaches through node.Network and round.Gate, not the other way round",
		"/store": "the store implements node.Store; the node does not know it",
		"/sim":   "the production path never runs the simulator"}},
	{"p2p", map[string]string{
		"globalbrain/node":  "the transport attaches to the node through interfaces it defines (Gate, Inbox)",
		"globalbrain/store": "blobs are served through p2p.BlobSource",
		"globalbrain/round": "the transport decodes nothing: the gate judges and decodes once"}},
	{"store", map[string]string{"libp2p": "storage knows no network", "/p2p": "storage knows no network", "/sim": "the production path never runs the simulator"}},
	{"member", map[string]string{"/sim": "the production path never runs the simulator"}},
	{"audit", map[string]string{"libp2p": "the audit is offline: it reads a stopped node's store", "/p2p": "the audit is offline: no transport", "net": "the audit is offline: no network", "/sim": "the audit checks what nodes recorded, it never simulates"}},
	{"train/local", map[string]string{"libp2p": "local training knows no network", "bbolt": "local training knows no store", "/sim": "the simulator uses local training, not the reverse"}},
	{"api", map[string]string{"/sim": "the production path never runs the simulator", "bbolt": "the API reads the node, not the store"}},
	{"wire", map[string]string{"libp2p": "wire is the neutral ground between transport and node", "globalbrain/round": "wire is below round", "globalbrain/node": "wire is below node"}},
}

func TestDependencyRules(t *testing.T) {
	root := repoRoot(t)
	for _, rule := range badDeps {
		if _, err := os.Stat(filepath.Join(root, rule.pkg)); err != nil {
			t.Errorf("package %s is in the dependency table but does not exist: update the table", rule.pkg)
			continue
		}
		self := "github.com/globalbrain/globalbrain/" + rule.pkg
		for _, dep := range goList(t, root, "-deps", "./"+rule.pkg+"/...") {
			if dep == self {
				continue
			}
			for bad, why := range rule.banned {
				if matches(dep, bad) {
					t.Errorf("%s depends on %s: %s", rule.pkg, dep, why)
				}
			}
		}
	}
}

// matches reports whether import path dep is what a rule bans: "net" is
// the standard library's net and its subpackages; a pattern starting with
// "/" names a package of this module; anything else is a substring.
func matches(dep, bad string) bool {
	switch {
	case bad == "net":
		return dep == "net" || strings.HasPrefix(dep, "net/")
	case strings.HasPrefix(bad, "/"):
		p := "github.com/globalbrain/globalbrain" + bad
		return dep == p || strings.HasPrefix(dep, p+"/")
	}
	return strings.Contains(dep, bad)
}

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		dep, bad string
		want     bool
	}{
		{"net", "net", true}, {"net/http", "net", true}, {"github.com/x/netutil", "net", false},
		{"github.com/globalbrain/globalbrain/p2p", "/p2p", true}, {"github.com/libp2p/go-libp2p/p2p/net", "/p2p", false},
		{"github.com/globalbrain/globalbrain/store", "/store", true}, {"go.etcd.io/bbolt", "bbolt", true},
	} {
		if got := matches(tc.dep, tc.bad); got != tc.want {
			t.Errorf("matches(%q, %q) = %v, want %v", tc.dep, tc.bad, got, tc.want)
		}
	}
}
