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
type conv struct {
	name            string
	h, w, cin, cout int
	k, pad          int

	wt, b, dw, db []float32
	col           []float32 // im2col of the last input; reused for its gradient
	y, dx         []float32
}

func newConv(name string, h, w, cin, cout, k int) *conv {
	return &conv{name: name, h: h, w: w, cin: cin, cout: cout, k: k, pad: k / 2}
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

func (l *conv) forward(x []float32, b int) []float32 {
	rows := b * l.h * l.w
	kd := l.kdim()
	l.im2col(x, b)
	y := l.y[:rows*l.cout]
	for i := 0; i < rows; i++ {
		copy(y[i*l.cout:(i+1)*l.cout], l.b)
	}
	sgemm(false, true, rows, l.cout, kd, 1, l.col, kd, l.wt, kd, 1, y, l.cout)
	return y
}

func (l *conv) backward(dy []float32, b int, needDX bool) []float32 {
	rows := b * l.h * l.w
	kd := l.kdim()
	// Y = col W^T + b, so dW = dY^T col, db = column sums of dY,
	// dcol = dY W (into col, no longer needed), then dX = col2im(dcol).
	sgemm(true, false, l.cout, kd, rows, 1, dy, l.cout, l.col, kd, 0, l.dw, kd)
	sumRows(l.db, dy, rows, l.cout)
	if !needDX {
		return nil
	}
	sgemm(false, false, rows, kd, l.cout, 1, dy, l.cout, l.wt, kd, 0, l.col, kd)
	dx := l.dx[:rows*l.cin]
	l.col2im(dx, b)
	return dx
}

func (l *conv) macs() (fwd, bwdW, bwdX float64) {
	n := float64(l.h*l.w) * float64(l.kdim()) * float64(l.cout)
	return n, n, n
}

// maxPool is 2x2 max-pooling with stride 2 over channel-last images
// (h x w x c with h and w even), producing h/2 x w/2 x c.
type maxPool struct {
	h, w, c int
	arg     []int32 // per output value: offset of the maximum within its image
	y, dx   []float32
}

func newMaxPool(h, w, c int) *maxPool { return &maxPool{h: h, w: w, c: c} }

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
		l.arg = make([]int32, b*l.outLen())
	}
}

func (l *maxPool) forward(x []float32, b int) []float32 {
	inLen, outLen := l.h*l.w*l.c, l.outLen()
	c, rowStride := l.c, l.w*l.c
	y := l.y[:b*outLen]
	o := 0
	for n := 0; n < b; n++ {
		img := x[n*inLen : (n+1)*inLen]
		for oh := 0; oh < l.h/2; oh++ {
			for ow := 0; ow < l.w/2; ow++ {
				p00 := (2*oh*l.w + 2*ow) * c
				p01, p10 := p00+c, p00+rowStride
				p11 := p10 + c
				v00, v01 := img[p00:p00+c], img[p01:p01+c]
				v10, v11 := img[p10:p10+c], img[p11:p11+c]
				ys, args := y[o:o+c], l.arg[o:o+c]
				for ch := range ys {
					best, at := v00[ch], p00+ch
					if v := v01[ch]; v > best {
						best, at = v, p01+ch
					}
					if v := v10[ch]; v > best {
						best, at = v, p10+ch
					}
					if v := v11[ch]; v > best {
						best, at = v, p11+ch
					}
					ys[ch], args[ch] = best, int32(at)
				}
				o += c
			}
		}
	}
	return y
}

func (l *maxPool) backward(dy []float32, b int, _ bool) []float32 {
	inLen, outLen := l.h*l.w*l.c, l.outLen()
	dx := l.dx[:b*inLen]
	clear(dx)
	for n := 0; n < b; n++ {
		img := dx[n*inLen : (n+1)*inLen]
		g := dy[n*outLen : (n+1)*outLen]
		for i, at := range l.arg[n*outLen : (n+1)*outLen] {
			img[at] += g[i]
		}
	}
	return dx
}
