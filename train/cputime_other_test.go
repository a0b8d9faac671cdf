//go:build !unix

package train

// processCPUSeconds is unavailable on this system.
func processCPUSeconds() float64 { return 0 }
