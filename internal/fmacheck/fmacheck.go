// Package fmacheck holds the source check that keeps arithmetic the same
// to the bit on every CPU: in a package that must be deterministic (fedavg,
// privacy/dp), every floating-point product must be the direct operand of
// an explicit float32(...) or float64(...) conversion, which forbids the
// compiler to fuse it into an FMA (Go fuses x*y+z on arm64 and on amd64
// with GOAMD64=v3). Golden digests cannot catch every fusion: most change a
// float64 intermediate by one ulp, which a final rounding hides.
package fmacheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io/fs"
	"strings"
	"testing"
)

// Products fails t for every float product in package pkg, the package in
// the current directory (its tests aside), that is not wrapped in a
// conversion; and if it finds fewer than 10 products at all.
func Products(t testing.TB, pkg string) {
	t.Helper()
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, f := range pkgs[pkg].Files {
		files = append(files, f)
	}
	// Type-check without the imported packages, which would cost seconds:
	// their identifiers get an invalid type. A product of invalid type is
	// held to the rule when one of its operands is known to be a float.
	info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}}
	conf := types.Config{Importer: emptyImporter{}, Error: func(error) {}}
	_, _ = conf.Check(pkg, fset, files, info) // errors about the empty imports are expected
	kind := func(e ast.Expr) types.BasicKind {
		if tv, ok := info.Types[e]; ok && tv.Type != nil {
			if b, ok := tv.Type.Underlying().(*types.Basic); ok {
				return b.Kind()
			}
			return -1
		}
		return types.Invalid
	}
	isFloat := func(e ast.Expr) bool {
		k := kind(e)
		return k == types.Float32 || k == types.Float64 || k == types.UntypedFloat
	}
	isFloatProduct := func(m *ast.BinaryExpr) bool {
		if info.Types[m].Value != nil { // constant, folded exactly
			return false
		}
		return isFloat(m) || kind(m) == types.Invalid && (isFloat(m.X) && info.Types[m.X].Value == nil || isFloat(m.Y) && info.Types[m.Y].Value == nil)
	}
	products := 0
	for _, f := range files {
		var stack []ast.Node
		ast.Inspect(f, func(n ast.Node) bool {
			if n == nil {
				stack = stack[:len(stack)-1]
				return true
			}
			stack = append(stack, n)
			mul, ok := n.(*ast.BinaryExpr)
			if !ok || mul.Op != token.MUL || !isFloatProduct(mul) {
				return true
			}
			products++
			i := len(stack) - 2
			for i >= 0 {
				if _, paren := stack[i].(*ast.ParenExpr); !paren {
					break
				}
				i--
			}
			if i >= 0 {
				// The conversion's target type, not the conversion's
				// type: with the imports empty, float64(l2 * math.Min(a, b))
				// has an invalid type.
				if call, ok := stack[i].(*ast.CallExpr); ok && len(call.Args) == 1 && info.Types[call.Fun].IsType() && isFloatType(info.Types[call.Fun].Type) {
					return true
				}
			}
			t.Errorf("%s: product not wrapped in float32(...) or float64(...)", fset.Position(mul.Pos()))
			return true
		})
	}
	if products < 10 {
		t.Errorf("found only %d float products; is the check looking at the right files?", products)
	}
}

func isFloatType(t types.Type) bool {
	b, ok := t.Underlying().(*types.Basic)
	return ok && (b.Kind() == types.Float32 || b.Kind() == types.Float64)
}

// emptyImporter imports every package as an empty one.
type emptyImporter struct{}

func (emptyImporter) Import(path string) (*types.Package, error) {
	name := path[strings.LastIndex(path, "/")+1:]
	p := types.NewPackage(path, name)
	p.MarkComplete()
	return p, nil
}
