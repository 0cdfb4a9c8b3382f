package main

// CPU accounting from /proc. CPU time per request is steadier than req/s on
// the shared 2-core VMs (see docs/benchmarking.md), so every server process
// is charged from the kernel's own counters, and the machine's total is read
// too, to notice when something outside the benchmark used the CPU.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// parsePidStat returns utime and stime, in clock ticks, from the contents of
// /proc/<pid>/stat. They cover every thread of the process.
func parsePidStat(data string) (utime, stime uint64, err error) {
	// Field 2, the command name, is in parentheses and may itself contain
	// spaces and ')'; the fields after the last ')' have fixed positions.
	i := strings.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, errors.New("parsing /proc/<pid>/stat: no ')' after the command name")
	}
	f := strings.Fields(data[i+1:])
	// f[0] is field 3 (state); utime is field 14 and stime field 15.
	const utimeIdx, stimeIdx = 14 - 3, 15 - 3
	if len(f) <= stimeIdx {
		return 0, 0, fmt.Errorf("parsing /proc/<pid>/stat: %d fields after the command name, want at least %d", len(f), stimeIdx+1)
	}
	if utime, err = strconv.ParseUint(f[utimeIdx], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("parsing utime in /proc/<pid>/stat: %w", err)
	}
	if stime, err = strconv.ParseUint(f[stimeIdx], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("parsing stime in /proc/<pid>/stat: %w", err)
	}
	return utime, stime, nil
}

// cpuTotals is the machine-wide line of /proc/stat, in clock ticks summed
// over all CPUs.
type cpuTotals struct {
	busy  uint64 // user+nice+system+irq+softirq: time someone ran
	steal uint64 // time the hypervisor gave our vCPUs to someone else
	total uint64 // busy+idle+iowait+steal
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat.
func parseProcStat(data string) (cpuTotals, error) {
	for line := range strings.Lines(data) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		// user nice system idle iowait irq softirq steal [guest guest_nice];
		// guest time is already included in user, so it is not added.
		if len(f) < 9 {
			return cpuTotals{}, fmt.Errorf("parsing /proc/stat: the cpu line has %d fields, want at least 9", len(f))
		}
		var v [8]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return cpuTotals{}, fmt.Errorf("parsing /proc/stat field %d: %w", i+1, err)
			}
			v[i] = n
		}
		user, nice, system, idle, iowait, irq, softirq, steal := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
		busy := user + nice + system + irq + softirq
		return cpuTotals{busy: busy, steal: steal, total: busy + idle + iowait + steal}, nil
	}
	return cpuTotals{}, errors.New("parsing /proc/stat: no aggregate cpu line")
}

// clockTick is the length of one clock tick (USER_HZ), the unit of both
// /proc files above: 10 ms on every common Linux, but asked for anyway.
func clockTick() time.Duration {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if hz, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && hz > 0 {
			return time.Second / time.Duration(hz)
		}
	}
	return 10 * time.Millisecond // 100 Hz
}

// procCPU returns the user+system CPU time process pid has used so far.
func procCPU(pid int, tick time.Duration) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading CPU time of process %d: %w", pid, err)
	}
	u, s, err := parsePidStat(string(b))
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	return time.Duration(u+s) * tick, nil
}

// machineCPU reads /proc/stat.
func machineCPU() (cpuTotals, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTotals{}, fmt.Errorf("reading machine CPU time: %w", err)
	}
	return parseProcStat(string(b))
}

// loadavg returns the 1, 5 and 15 minute load averages from /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
