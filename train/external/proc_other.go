//go:build !unix

package external

import "os/exec"

// setProcessGroup: without Unix process groups, cancellation kills the
// command itself (exec's default).
func setProcessGroup(*exec.Cmd) {}

func killGroup(*exec.Cmd) {}
