package train

import "fmt"

// Metrics are a model's results on a labelled data set.
type Metrics struct {
	// Loss is the mean softmax cross-entropy.
	Loss float64
	// Accuracy is the fraction of examples whose highest logit is the label.
	Accuracy float64
	// N is the number of examples evaluated.
	N int
	// Precision, Recall and F1 are per class; a class never predicted
	// (or never present) has precision (recall) 0, and F1 is 0 when both
	// are 0.
	Precision, Recall, F1 []float64
	// Confusion[t][p] counts examples of true class t predicted as p.
	Confusion [][]int
}

// Evaluate runs the model with params over every example of d, in
// minibatches, and returns the loss, accuracy, per-class precision, recall
// and F1, and the confusion matrix. Ties between logits go to the lower
// class.
func (m *Model) Evaluate(params []float32, d *Dataset) (Metrics, error) {
	var mt Metrics
	if err := m.checkParams("Evaluate: parameters", params); err != nil {
		return mt, err
	}
	if err := m.checkData(d); err != nil {
		return mt, err
	}
	c := m.spec.Classes
	mt.N = d.N
	mt.Confusion = make([][]int, c)
	for i := range mt.Confusion {
		mt.Confusion[i] = make([]int, c)
	}
	B := min(m.chunk, d.N)
	m.ensureLayers(B)
	m.bind(params)
	var sum float64
	correct := 0
	for s := 0; s < d.N; s += B {
		b := min(B, d.N-s)
		x := d.X[s*m.inDim : (s+b)*m.inDim]
		y := d.Y[s : s+b]
		logits := m.forward(x, b)
		sum += m.loss.forwardBackward(logits, y, b, 0)
		for i := 0; i < b; i++ {
			p := argmax(logits[i*c : (i+1)*c])
			t := int(y[i])
			mt.Confusion[t][p]++
			if p == t {
				correct++
			}
		}
	}
	mt.Loss = sum / float64(d.N)
	mt.Accuracy = float64(correct) / float64(d.N)
	mt.Precision, mt.Recall, mt.F1 = perClass(mt.Confusion)
	return mt, nil
}

// perClass computes per-class precision, recall and F1 from a confusion
// matrix indexed [true][predicted].
func perClass(conf [][]int) (prec, rec, f1 []float64) {
	c := len(conf)
	prec, rec, f1 = make([]float64, c), make([]float64, c), make([]float64, c)
	for k := 0; k < c; k++ {
		tp := conf[k][k]
		var predicted, actual int
		for j := 0; j < c; j++ {
			predicted += conf[j][k]
			actual += conf[k][j]
		}
		if predicted > 0 {
			prec[k] = float64(tp) / float64(predicted)
		}
		if actual > 0 {
			rec[k] = float64(tp) / float64(actual)
		}
		if prec[k]+rec[k] > 0 {
			f1[k] = 2 * prec[k] * rec[k] / (prec[k] + rec[k])
		}
	}
	return prec, rec, f1
}

// argmax returns the index of the largest value, the first on ties; NaN
// values are never chosen unless all are NaN.
func argmax(v []float32) int {
	best := 0
	for i, x := range v[1:] {
		if x > v[best] || v[best] != v[best] {
			best = i + 1
		}
	}
	return best
}

// String formats the headline numbers.
func (mt Metrics) String() string {
	return fmt.Sprintf("loss %.4f accuracy %.4f (n=%d)", mt.Loss, mt.Accuracy, mt.N)
}
