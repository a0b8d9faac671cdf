package train

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// TestEvaluateHandComputed uses logistic regression with identity weights,
// so that each example is predicted as the position of its 1.
func TestEvaluateHandComputed(t *testing.T) {
	s := Spec{Arch: ArchLogReg, Height: 1, Width: 3, Channels: 1, Classes: 3}
	m, err := NewModel(s)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]float32, m.NumParams()) // weight 3x3 then bias 3
	p[0], p[4], p[8] = 1, 1, 1
	// (true, predicted): (0,0) (0,1) (1,1) (1,1) (2,0) (2,2)
	truth := []uint8{0, 0, 1, 1, 2, 2}
	pred := []int{0, 1, 1, 1, 0, 2}
	d := &Dataset{Name: "hand", N: 6, Dim: 3, Height: 1, Width: 3, Channels: 1, Classes: 3, Y: truth, X: make([]float32, 18)}
	for i, c := range pred {
		d.X[i*3+c] = 1
	}
	mt, err := m.Evaluate(p, d)
	if err != nil {
		t.Fatal(err)
	}
	wantConf := [][]int{{1, 1, 0}, {0, 2, 0}, {1, 0, 1}}
	for i := range wantConf {
		if !slices.Equal(mt.Confusion[i], wantConf[i]) {
			t.Fatalf("confusion %v, want %v", mt.Confusion, wantConf)
		}
	}
	// Precision: class 0 1/2, class 1 2/3, class 2 1/1.
	// Recall:    class 0 1/2, class 1 2/2, class 2 1/2.
	// F1:        0.5, 2*(2/3)/(5/3) = 0.8, 2*(1/2)/(3/2) = 2/3.
	wantP := []float64{0.5, 2.0 / 3, 1}
	wantR := []float64{0.5, 1, 0.5}
	wantF := []float64{0.5, 0.8, 2.0 / 3}
	for k := 0; k < 3; k++ {
		if !near(mt.Precision[k], wantP[k]) || !near(mt.Recall[k], wantR[k]) || !near(mt.F1[k], wantF[k]) {
			t.Errorf("class %d: P %.4f R %.4f F1 %.4f, want %.4f %.4f %.4f", k, mt.Precision[k], mt.Recall[k], mt.F1[k], wantP[k], wantR[k], wantF[k])
		}
	}
	if mt.N != 6 || !near(mt.Accuracy, 4.0/6) {
		t.Errorf("N %d accuracy %.4f, want 6 and 4/6", mt.N, mt.Accuracy)
	}
	// Logits are one-hot: loss log(e+2) - 1 when right, log(e+2) when wrong.
	wantLoss := math.Log(math.E+2) - 4.0/6
	if math.Abs(mt.Loss-wantLoss) > 1e-6 {
		t.Errorf("loss %.7f, want %.7f", mt.Loss, wantLoss)
	}
	if !strings.Contains(mt.String(), "accuracy 0.6667") {
		t.Errorf("String() = %q", mt.String())
	}
}

func TestPerClassNeverPredicted(t *testing.T) {
	// Class 2 is never predicted and class 1 never occurs.
	p, r, f := perClass([][]int{{3, 1, 0}, {0, 0, 0}, {2, 0, 0}})
	// Class 0: P 3/5, R 3/4, F1 2*0.6*0.75/1.35 = 2/3; the others 0.
	want := [][]float64{{3.0 / 5, 0, 0}, {3.0 / 4, 0, 0}, {2.0 / 3, 0, 0}}
	for k := 0; k < 3; k++ {
		if !near(p[k], want[0][k]) || !near(r[k], want[1][k]) || !near(f[k], want[2][k]) {
			t.Errorf("class %d: P %v R %v F1 %v, want %v %v %v", k, p[k], r[k], f[k], want[0][k], want[1][k], want[2][k])
		}
	}
}

// TestEvaluateBatching checks that batched evaluation agrees with
// evaluating one example at a time.
func TestEvaluateBatching(t *testing.T) {
	for _, s := range []Spec{
		{Arch: Arch2NN, Height: 3, Width: 3, Channels: 1, Classes: 4},
		{Arch: ArchCNN, Height: 4, Width: 4, Channels: 2, Classes: 3},
	} {
		m, _ := NewModel(s)
		p := make([]float32, m.NumParams())
		m.Init(p, 5)
		d := randomDataset(s, 1237, 1)
		if s.Arch == ArchCNN {
			d = randomDataset(s, 123, 1)
		}
		all, err := m.Evaluate(p, d)
		if err != nil {
			t.Fatal(err)
		}
		var loss float64
		correct := 0
		for i := 0; i < d.N; i++ {
			one := *d
			one.N, one.X, one.Y = 1, d.Row(i), d.Y[i:i+1]
			mt, err := m.Evaluate(p, &one)
			if err != nil {
				t.Fatal(err)
			}
			loss += mt.Loss
			correct += mt.Confusion[d.Y[i]][d.Y[i]]
		}
		if math.Abs(loss/float64(d.N)-all.Loss) > 1e-5 || correct != int(math.Round(all.Accuracy*float64(d.N))) {
			t.Errorf("%s: batched loss %.6f acc %.4f; one by one %.6f %.4f", s.Arch, all.Loss, all.Accuracy, loss/float64(d.N), float64(correct)/float64(d.N))
		}
	}
}

func TestEvaluateErrors(t *testing.T) {
	s := Spec{Arch: ArchLogReg, Height: 2, Width: 2, Channels: 1, Classes: 2}
	m, _ := NewModel(s)
	p := make([]float32, m.NumParams())
	good := randomDataset(s, 5, 1)
	bad := randomDataset(s, 5, 1)
	bad.Y[2] = 7
	wrong := randomDataset(Spec{Height: 2, Width: 2, Channels: 1, Classes: 3}, 5, 1)
	for _, tc := range []struct {
		p    []float32
		d    *Dataset
		want string
	}{
		{p[:3], good, "parameters"},
		{p, nil, "nil"},
		{p, bad, "label"},
		{p, wrong, "classes"},
		{p, &Dataset{Name: "empty", Dim: 4, Height: 2, Width: 2, Channels: 1, Classes: 2}, "no examples"},
	} {
		if _, err := m.Evaluate(tc.p, tc.d); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one mentioning %q", err, tc.want)
		}
	}
}
