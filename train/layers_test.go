package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestSgemmTiling checks the tiled product against a direct one for all
// transpositions and shapes on both sides of the tile sizes.
func TestSgemmTiling(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sh := range [][3]int{{1, 1, 1}, {10, 200, 30}, {200, 10, 7}, {130, 400, 5}, {64, 193, 3}, {65, 64, 9}, {300, 70, 2}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				t.Run(fmt.Sprintf("%dx%dx%d-%v-%v", m, n, k, tA, tB), func(t *testing.T) {
					a, b := gcRandom(rng, m*k, 1), gcRandom(rng, k*n, 1)
					c := gcRandom(rng, m*n, 1)
					at := func(i, l int) float64 { // op(A)[i,l]
						if tA {
							return float64(a[l*m+i])
						}
						return float64(a[i*k+l])
					}
					bt := func(l, j int) float64 {
						if tB {
							return float64(b[j*k+l])
						}
						return float64(b[l*n+j])
					}
					want := make([]float64, m*n)
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							s := 0.5 * float64(c[i*n+j])
							for l := 0; l < k; l++ {
								s += 2 * at(i, l) * bt(l, j)
							}
							want[i*n+j] = s
						}
					}
					lda, ldb := k, n
					if tA {
						lda = m
					}
					if tB {
						ldb = k
					}
					sgemm(tA, tB, m, n, k, 2, a, lda, b, ldb, 0.5, c, n)
					for i, w := range want {
						if math.Abs(float64(c[i])-w) > 1e-4*(1+math.Abs(w)) {
							t.Fatalf("C[%d,%d] = %v, want %v", i/n, i%n, c[i], w)
						}
					}
				})
			}
		}
	}
}

func TestBalancedTile(t *testing.T) {
	for _, tc := range [][3]int{{200, 192, 100}, {192, 192, 192}, {193, 192, 97}, {800, 192, 160}, {10, 192, 10}, {512, 192, 171}} {
		if got := balancedTile(tc[0], tc[1]); got != tc[2] {
			t.Errorf("balancedTile(%d, %d) = %d, want %d", tc[0], tc[1], got, tc[2])
		}
	}
}

func TestReLUEdgeValues(t *testing.T) {
	nan := float32(math.NaN())
	x := []float32{-1, float32(math.Copysign(0, -1)), 0, math.SmallestNonzeroFloat32, 2, float32(math.Inf(1)), float32(math.Inf(-1)), nan}
	l := newReLU(len(x))
	y := l.forward(x, 1)
	want := []float32{0, 0, 0, math.SmallestNonzeroFloat32, 2, float32(math.Inf(1)), 0}
	for i, w := range want {
		if y[i] != w || math.Signbit(float64(y[i])) {
			t.Errorf("relu(x[%d]) = %v, want %v", i, y[i], w)
		}
	}
	if y[7] == y[7] {
		t.Errorf("relu(NaN) = %v, want NaN", y[7])
	}
	dy := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	l.backward(dy, 1, true, false)
	wantD := []float32{0, 0, 0, 4, 5, 6, 0, 8}
	for i, w := range wantD {
		if dy[i] != w {
			t.Errorf("gradient through relu at x[%d]: %v, want %v", i, dy[i], w)
		}
	}
}
