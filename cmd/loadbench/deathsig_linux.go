package main

import (
	"os/exec"
	"syscall"
)

// setDeathSignal has the kernel kill the child when loadbench dies, even by
// SIGKILL, when no deferred cleanup can run: no Caddy or wrk is left behind
// holding ports and CPU.
func setDeathSignal(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
