package purity

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pure lists the packages that must stay free of I/O, clocks and networks.
// round and privacy join the check as soon as they exist.
var pure = []string{"fedavg", "round", "privacy"}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func goList(t *testing.T, root string, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, out)
	}
	return strings.Fields(string(out))
}

func TestPurePackagesHaveNoIO(t *testing.T) {
	root := repoRoot(t)
	var pkgs []string
	for _, p := range pure {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			pkgs = append(pkgs, "./"+p+"/...")
		}
	}
	if len(pkgs) == 0 || pkgs[0] != "./fedavg/..." {
		t.Fatalf("fedavg not found under %s", root)
	}
	for _, dep := range goList(t, root, append([]string{"-deps"}, pkgs...)...) {
		if dep == "net" || strings.HasPrefix(dep, "net/") || strings.Contains(dep, "libp2p") || strings.Contains(dep, "bbolt") {
			t.Errorf("a pure package depends on %s", dep)
		}
	}
	lines := goList(t, root, append([]string{"-f", "{{.ImportPath}}:{{join .Imports \",\"}}"}, pkgs...)...)
	for _, line := range lines {
		pkg, imports, _ := strings.Cut(line, ":")
		for _, imp := range strings.Split(imports, ",") {
			if imp == "os" || imp == "time" {
				t.Errorf("%s imports %s directly", pkg, imp)
			}
		}
	}
}

// TestEveryPackageHasDoc fails when a package lacks a doc comment saying what it owns.
func TestEveryPackageHasDoc(t *testing.T) {
	root := repoRoot(t)
	for _, line := range goList(t, root, "-f", "{{.ImportPath}}:{{if .Doc}}ok{{else}}missing{{end}}", "./...") {
		if strings.HasSuffix(line, ":missing") {
			t.Errorf("package %s has no doc comment", strings.TrimSuffix(line, ":missing"))
		}
	}
}
