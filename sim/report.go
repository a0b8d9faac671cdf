package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Summary is the last line of the JSONL report.
type Summary struct {
	Summary       bool      `json:"summary"`
	Dataset       string    `json:"dataset"`
	Partition     string    `json:"partition"`
	Model         string    `json:"model"`
	Strategy      string    `json:"strategy"`
	Members       int       `json:"members"`
	Rounds        int       `json:"rounds"`
	Seed          uint64    `json:"seed"`
	FinalAccuracy float64   `json:"final_accuracy"`
	FinalLoss     float64   `json:"final_loss"`
	F1            []float64 `json:"f1_per_class"`
	Target        float64   `json:"target"`
	TargetRound   int       `json:"target_round"`
	Digest        string    `json:"digest"`
	Seconds       float64   `json:"seconds"`
	// Privacy is the privacy budget under a mode that keeps one.
	Privacy *PrivacyResult `json:"privacy,omitempty"`
}

// WriteJSONL writes one JSON object per round, then a summary object.
func (r *Result) WriteJSONL(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, rr := range r.Rounds {
		if err := enc.Encode(rr); err != nil {
			return err
		}
	}
	return enc.Encode(Summary{
		Summary: true, Dataset: r.Config.Dataset, Partition: r.Config.Partition, Model: r.Config.Model,
		Strategy: r.Config.Strategy.Strategy, Members: r.Config.Members, Rounds: len(r.Rounds), Seed: r.Config.Seed,
		FinalAccuracy: r.Metrics.Accuracy, FinalLoss: r.Metrics.Loss, F1: r.Metrics.F1,
		Target: r.Config.Target, TargetRound: r.TargetRound, Digest: r.Final.Digest().String(), Seconds: r.Elapsed.Seconds(),
		Privacy: r.Privacy,
	})
}

// WriteReport writes report.jsonl and accuracy.png into dir and returns their paths.
func (r *Result) WriteReport(dir string) (jsonl, chart string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	jsonl = filepath.Join(dir, "report.jsonl")
	f, err := os.Create(jsonl)
	if err != nil {
		return "", "", err
	}
	if err := r.WriteJSONL(f); err != nil {
		f.Close()
		return "", "", fmt.Errorf("sim: %s: %w", jsonl, err)
	}
	if err := f.Close(); err != nil {
		return "", "", err
	}
	chart = filepath.Join(dir, "accuracy.png")
	if err := r.WriteChart(chart); err != nil {
		return "", "", fmt.Errorf("sim: %s: %w", chart, err)
	}
	return jsonl, chart, nil
}

// WriteChart draws test accuracy (top) and train and test loss (bottom) per
// round as a PNG.
func (r *Result) WriteChart(path string) error {
	acc, trainLoss, testLoss := make(plotter.XYs, len(r.Rounds)), make(plotter.XYs, len(r.Rounds)), make(plotter.XYs, len(r.Rounds))
	for i, rr := range r.Rounds {
		x := float64(rr.Round)
		acc[i] = plotter.XY{X: x, Y: rr.TestAccuracy}
		trainLoss[i] = plotter.XY{X: x, Y: rr.TrainLoss}
		testLoss[i] = plotter.XY{X: x, Y: rr.TestLoss}
	}
	title := fmt.Sprintf("%s, %s, %d members, %s, %s", r.Config.Dataset, r.Config.Partition, r.Config.Members, r.Config.Model, r.Config.Strategy.Strategy)
	top := plot.New()
	top.Title.Text = title
	top.Y.Label.Text = "test accuracy"
	bottom := plot.New()
	bottom.X.Label.Text = "round"
	bottom.Y.Label.Text = "loss"
	for _, s := range []struct {
		p    *plot.Plot
		name string
		xys  plotter.XYs
		dash bool
	}{{top, "test accuracy", acc, false}, {bottom, "train loss", trainLoss, false}, {bottom, "test loss", testLoss, true}} {
		l, err := plotter.NewLine(s.xys)
		if err != nil {
			return err
		}
		if s.dash {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		s.p.Add(l)
		s.p.Legend.Add(s.name, l)
	}
	top.Add(plotter.NewGrid())
	bottom.Add(plotter.NewGrid())
	bottom.Legend.Top = true
	const w, h = 8 * vg.Inch, 7 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter, PadY: vg.Millimeter * 2, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	plots := [][]*plot.Plot{{top}, {bottom}}
	canvases := plot.Align(plots, tiles, dc)
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
