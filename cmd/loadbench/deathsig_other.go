//go:build !linux

package main

import "os/exec"

// setDeathSignal is Linux-only (Pdeathsig); loadbench reads /proc and so
// only measures on Linux, but it still compiles elsewhere for `go vet ./...`.
func setDeathSignal(cmd *exec.Cmd) {}
