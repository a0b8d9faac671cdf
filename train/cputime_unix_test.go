//go:build unix

package train

import "syscall"

// processCPUSeconds returns the user+system CPU time the process has used,
// or 0 if it is unavailable.
func processCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
