// Package yamltest holds the fixture checks the tests of the packages that
// read strict YAML (manifest, nodeconfig) share: the files in testdata, and
// the table of bad fixtures with the strings each one's error must contain.
package yamltest

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// Fixtures returns the names of the files testdata/*suffix, failing t if
// there are none.
func Fixtures(t testing.TB, suffix string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*"+suffix))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*%s: %v", suffix, err)
	}
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	return files
}

// Bad is a file in testdata that must not parse and the strings its error
// must contain. It is an unnamed struct type, so that a table of them can be
// written {"file.bad.yaml", []string{...}} in another package.
type Bad = struct {
	File string
	Errs []string
}

// CheckBad runs parse on every fixture of bad, each in a subtest, and
// checks that it fails with an error that matches invalid under errors.Is
// and contains every string of the fixture's Errs; parse may check more.
// Every testdata/*.bad.yaml must be in bad.
func CheckBad(t *testing.T, bad []Bad, invalid error, parse func(t *testing.T, tc Bad) error) {
	listed := map[string]bool{}
	for _, tc := range bad {
		listed[tc.File] = true
		t.Run(tc.File, func(t *testing.T) {
			err := parse(t, tc)
			if err == nil {
				t.Fatal("parsed without error")
			}
			if !errors.Is(err, invalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
			}
			for _, want := range tc.Errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error\n  %v\ndoes not contain\n  %s", err, want)
				}
			}
		})
	}
	for _, name := range Fixtures(t, ".bad.yaml") {
		if !listed[name] {
			t.Errorf("testdata/%s is not in the table of bad fixtures", name)
		}
	}
}
