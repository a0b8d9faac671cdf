package train

import (
	"math"
	"math/rand/v2"
)

// conv is a stride-1 k x k convolution with "same" zero padding over
// channel-last images (h x w x cin) producing h x w x cout, computed by
// im2col: the whole minibatch is unrolled into one (b*h*w) x (k*k*cin)
// matrix whose product with the transposed kernel gives the output.
//
// The kernel is stored output-channel first, cout x (k*k*cin) ([cout][kh]
// [kw][cin]), so that both backward products skip the zeros max-pooling
// and ReLU leave in the output gradient and run over rows of k*k*cin.
//
// With a small k*k*cin (the first layer: 25 values) those rows are too
// short for the vector kernels, so a channel-major conv instead unrolls the
// input transposed, (k*k*cin) x (b*h*w), and produces its output channel
// by channel, cout x (b*h*w): all products then run along the b*h*w
// positions. The layer after it (ReLU, then a channel-major max-pool) must
// accept that layout; its gradient comes back in the same layout.
type conv struct {
	name            string
	h, w, cin, cout int
	k, pad          int
	cmajor          bool // output cout x (b*h*w), input unrolled transposed

	wt, b, dw, db []float32
	col           []float32 // im2col of the last input; reused for its gradient
	y, dx         []float32
}

func newConv(name string, h, w, cin, cout, k int, cmajor bool) *conv {
	return &conv{name: name, h: h, w: w, cin: cin, cout: cout, k: k, pad: k / 2, cmajor: cmajor}
}

func (l *conv) kdim() int { return l.k * l.k * l.cin }

func (l *conv) tensors() []Tensor {
	return []Tensor{
		{Name: l.name + ".weight", Shape: []int{l.cout, l.k, l.k, l.cin}, Len: l.kdim() * l.cout},
		{Name: l.name + ".bias", Shape: []int{l.cout}, Len: l.cout},
	}
}

func (l *conv) numParams() int { return l.kdim()*l.cout + l.cout }

func (l *conv) bind(p, g []float32) {
	nw := l.kdim() * l.cout
	l.wt, l.b = p[:nw], p[nw:]
	l.dw, l.db = g[:nw], g[nw:]
}

func (l *conv) initParams(rng *rand.Rand) {
	uniformFill(l.wt, math.Sqrt(6/float64(l.kdim())), rng)
	clear(l.b)
}

func (l *conv) alloc(b int) {
	rows := b * l.h * l.w
	l.col = growF32(l.col, rows*l.kdim())
	l.y = growF32(l.y, rows*l.cout)
	l.dx = growF32(l.dx, rows*l.cin)
}

// im2col unrolls the b images in x into l.col: row (n, oh, ow) holds the
// k x k x cin patch centred on (oh, ow), in the kernel's [kh][kw][cin]
// order, zero where the patch leaves the image.
func (l *conv) im2col(x []float32, b int) {
	kd, rowLen := l.kdim(), l.k*l.cin
	imgLen := l.h * l.w * l.cin
	r := 0
	for n := 0; n < b; n++ {
		img := x[n*imgLen : (n+1)*imgLen]
		for oh := 0; oh < l.h; oh++ {
			for ow := 0; ow < l.w; ow++ {
				row := l.col[r*kd : (r+1)*kd]
				r++
				lo, hi := ow-l.pad, ow-l.pad+l.k // input columns [lo, hi)
				clo, chi := max(lo, 0), min(hi, l.w)
				for kh := 0; kh < l.k; kh++ {
					seg := row[kh*rowLen : (kh+1)*rowLen]
					ih := oh - l.pad + kh
					if ih < 0 || ih >= l.h {
						clear(seg)
						continue
					}
					a := (clo - lo) * l.cin
					e := (chi - lo) * l.cin
					clear(seg[:a])
					copy(seg[a:e], img[(ih*l.w+clo)*l.cin:(ih*l.w+chi)*l.cin])
					clear(seg[e:])
				}
			}
		}
	}
}

// col2im sums the patch gradients in l.col back into dx (b images).
func (l *conv) col2im(dx []float32, b int) {
	clear(dx)
	kd, rowLen := l.kdim(), l.k*l.cin
	imgLen := l.h * l.w * l.cin
	r := 0
	for n := 0; n < b; n++ {
		img := dx[n*imgLen : (n+1)*imgLen]
		for oh := 0; oh < l.h; oh++ {
			for ow := 0; ow < l.w; ow++ {
				row := l.col[r*kd : (r+1)*kd]
				r++
				lo, hi := ow-l.pad, ow-l.pad+l.k
				clo, chi := max(lo, 0), min(hi, l.w)
				a := (clo - lo) * l.cin
				e := (chi - lo) * l.cin
				for kh := 0; kh < l.k; kh++ {
					ih := oh - l.pad + kh
					if ih < 0 || ih >= l.h {
						continue
					}
					src := row[kh*rowLen+a : kh*rowLen+e]
					dst := img[(ih*l.w+clo)*l.cin : (ih*l.w+chi)*l.cin]
					blasImpl.Saxpy(len(src), 1, src, 1, dst, 1)
				}
			}
		}
	}
}

// im2colT unrolls the b images in x transposed into l.col: row (kh, kw,
// ci) holds, for every output position (n, oh, ow), the input value the
// kernel tap (kh, kw) on channel ci sees there (zero outside the image).
func (l *conv) im2colT(x []float32, b int) {
	hw := l.h * l.w
	p := b * hw
	imgLen := hw * l.cin
	for kh := 0; kh < l.k; kh++ {
		for kw := 0; kw < l.k; kw++ {
			dw := kw - l.pad
			lo, hi := max(0, -dw), min(l.w, l.w-dw) // valid ow range
			for ci := 0; ci < l.cin; ci++ {
				row := l.col[((kh*l.k+kw)*l.cin+ci)*p : ((kh*l.k+kw)*l.cin+ci+1)*p]
				for n := 0; n < b; n++ {
					img := x[n*imgLen : (n+1)*imgLen]
					for oh := 0; oh < l.h; oh++ {
						seg := row[(n*l.h+oh)*l.w : (n*l.h+oh+1)*l.w]
						ih := oh + kh - l.pad
						if ih < 0 || ih >= l.h || lo >= hi {
							clear(seg)
							continue
						}
						clear(seg[:lo])
						src := img[(ih*l.w+lo+dw)*l.cin+ci:]
						if l.cin == 1 {
							copy(seg[lo:hi], src)
						} else {
							for ow := lo; ow < hi; ow++ {
								seg[ow] = src[(ow-lo)*l.cin]
							}
						}
						clear(seg[hi:])
					}
				}
			}
		}
	}
}

// col2imT sums the transposed patch gradients in l.col back into dx.
func (l *conv) col2imT(dx []float32, b int) {
	clear(dx)
	hw := l.h * l.w
	p := b * hw
	imgLen := hw * l.cin
	for kh := 0; kh < l.k; kh++ {
		for kw := 0; kw < l.k; kw++ {
			dw := kw - l.pad
			lo, hi := max(0, -dw), min(l.w, l.w-dw)
			if lo >= hi {
				continue
			}
			for ci := 0; ci < l.cin; ci++ {
				row := l.col[((kh*l.k+kw)*l.cin+ci)*p : ((kh*l.k+kw)*l.cin+ci+1)*p]
				for n := 0; n < b; n++ {
					img := dx[n*imgLen : (n+1)*imgLen]
					for oh := 0; oh < l.h; oh++ {
						ih := oh + kh - l.pad
						if ih < 0 || ih >= l.h {
							continue
						}
						seg := row[(n*l.h+oh)*l.w+lo : (n*l.h+oh)*l.w+hi]
						dst := img[(ih*l.w+lo+dw)*l.cin+ci:]
						if l.cin == 1 {
							blasImpl.Saxpy(len(seg), 1, seg, 1, dst, 1)
						} else {
							for j, v := range seg {
								dst[j*l.cin] += v
							}
						}
					}
				}
			}
		}
	}
}

func (l *conv) forward(x []float32, b int) []float32 {
	rows := b * l.h * l.w
	kd := l.kdim()
	y := l.y[:rows*l.cout]
	if l.cmajor {
		// Y^T = W colT + b, cout x rows.
		l.im2colT(x, b)
		for c, v := range l.b {
			yc := y[c*rows : (c+1)*rows]
			for i := range yc {
				yc[i] = v
			}
		}
		sgemm(false, false, l.cout, rows, kd, 1, l.wt, kd, l.col, rows, 1, y, rows)
		return y
	}
	// Y = col W^T + b, rows x cout.
	l.im2col(x, b)
	for i := 0; i < rows; i++ {
		copy(y[i*l.cout:(i+1)*l.cout], l.b)
	}
	sgemm(false, true, rows, l.cout, kd, 1, l.col, kd, l.wt, kd, 1, y, l.cout)
	return y
}

func (l *conv) backward(dy []float32, b int, needDX, acc bool) []float32 {
	rows := b * l.h * l.w
	kd := l.kdim()
	dx := l.dx[:rows*l.cin]
	if l.cmajor {
		// dY^T is cout x rows: dW = dY^T colT^T, db = row sums of dY^T,
		// dcolT = W^T dY^T, dX = col2imT(dcolT).
		sgemm(false, true, l.cout, kd, rows, 1, dy, rows, l.col, rows, accBeta(acc), l.dw, kd)
		for c := range l.db {
			var s float32
			for _, v := range dy[c*rows : (c+1)*rows] {
				s += v
			}
			if acc {
				s += l.db[c]
			}
			l.db[c] = s
		}
		if !needDX {
			return nil
		}
		sgemm(true, false, kd, rows, l.cout, 1, l.wt, kd, dy, rows, 0, l.col, rows)
		l.col2imT(dx, b)
		return dx
	}
	// Y = col W^T + b, so dW = dY^T col, db = column sums of dY,
	// dcol = dY W (into col, no longer needed), then dX = col2im(dcol).
	sgemm(true, false, l.cout, kd, rows, 1, dy, l.cout, l.col, kd, accBeta(acc), l.dw, kd)
	sumRows(l.db, dy, rows, l.cout, acc)
	if !needDX {
		return nil
	}
	sgemm(false, false, rows, kd, l.cout, 1, dy, l.cout, l.wt, kd, 0, l.col, kd)
	l.col2im(dx, b)
	return dx
}

func (l *conv) macs() (fwd, bwdW, bwdX float64) {
	n := float64(l.h*l.w) * float64(l.kdim()) * float64(l.cout)
	return n, n, n
}

// maxPool is 2x2 max-pooling with stride 2 over images of h x w x c (h and
// w even), producing channel-last h/2 x w/2 x c. A channel-major max-pool
// reads its input as c x (b*h*w), the layout of a channel-major conv, and
// returns its input gradient in that layout.
type maxPool struct {
	h, w, c int
	cmajor  bool
	arg     []uint8 // per output value: which of its 4 inputs won
	y, dx   []float32
}

func newMaxPool(h, w, c int, cmajor bool) *maxPool {
	return &maxPool{h: h, w: w, c: c, cmajor: cmajor}
}

func (l *maxPool) tensors() []Tensor       { return nil }
func (l *maxPool) numParams() int          { return 0 }
func (l *maxPool) bind(_, _ []float32)     {}
func (l *maxPool) initParams(_ *rand.Rand) {}
func (l *maxPool) macs() (_, _, _ float64) { return }
func (l *maxPool) outLen() int             { return l.h / 2 * l.w / 2 * l.c }
func (l *maxPool) alloc(b int) {
	l.y = growF32(l.y, b*l.outLen())
	l.dx = growF32(l.dx, b*l.h*l.w*l.c)
	if cap(l.arg) >= b*l.outLen() {
		l.arg = l.arg[:b*l.outLen()]
	} else {
		l.arg = make([]uint8, b*l.outLen())
	}
}

// strides returns, for example n, the input offset of (0, 0, channel 0),
// the stride between channels and the strides between rows and columns.
func (l *maxPool) strides(n, b int) (base, cs, rs, ws int) {
	if l.cmajor {
		hw := l.h * l.w
		return n * hw, b * hw, l.w, 1
	}
	return n * l.h * l.w * l.c, 1, l.w * l.c, l.c
}

func (l *maxPool) forward(x []float32, b int) []float32 {
	oh2, ow2 := l.h/2, l.w/2
	y := l.y[:b*l.outLen()]
	for n := 0; n < b; n++ {
		base, cs, rs, ws := l.strides(n, b)
		o := n * l.outLen()
		for oh := 0; oh < oh2; oh++ {
			for ow := 0; ow < ow2; ow++ {
				p := base + 2*oh*rs + 2*ow*ws
				ys, args := y[o:o+l.c], l.arg[o:o+l.c]
				for ch := range ys {
					q := p + ch*cs
					best, at := x[q], uint8(0)
					if v := x[q+ws]; v > best {
						best, at = v, 1
					}
					if v := x[q+rs]; v > best {
						best, at = v, 2
					}
					if v := x[q+rs+ws]; v > best {
						best, at = v, 3
					}
					ys[ch], args[ch] = best, at
				}
				o += l.c
			}
		}
	}
	return y
}

func (l *maxPool) backward(dy []float32, b int, _, _ bool) []float32 {
	oh2, ow2 := l.h/2, l.w/2
	dx := l.dx[:b*l.h*l.w*l.c]
	clear(dx)
	for n := 0; n < b; n++ {
		base, cs, rs, ws := l.strides(n, b)
		off := [4]int{0, ws, rs, rs + ws}
		o := n * l.outLen()
		for oh := 0; oh < oh2; oh++ {
			for ow := 0; ow < ow2; ow++ {
				p := base + 2*oh*rs + 2*ow*ws
				g, args := dy[o:o+l.c], l.arg[o:o+l.c]
				for ch, at := range args {
					dx[p+ch*cs+off[at&3]] = g[ch]
				}
				o += l.c
			}
		}
	}
	return dx
}
