package train

// Progress is where a training call is, for a caller that reports long
// work (Model.OnStep). Counts are so far, of the whole call.
type Progress struct {
	Epoch    int     // the epoch in progress, from 1
	Epochs   int     // epochs in all
	Step     int     // SGD steps taken
	Steps    int     // steps in all
	Examples int     // examples processed
	Loss     float64 // mean loss of the current epoch's examples so far
}
