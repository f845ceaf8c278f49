// Package loadavg scales tests' timing bounds to the machine's load. A bound such as "a
// scheduled job starts within 50 ms of its time" holds on a machine with cores to spare;
// on one whose run queue is several times its cores (a shared CI machine, other test
// packages running), every process waits its turn for a core, and the same code misses it.
package loadavg

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Overload is the last minute's load average per core, at least 1: how many times longer
// than on an idle machine a process may wait for a core. It is 1 where /proc/loadavg is
// missing.
func Overload() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 1
	}
	field, _, _ := strings.Cut(string(data), " ")
	load, err := strconv.ParseFloat(field, 64)
	if err != nil {
		return 1
	}
	return max(1, load/float64(runtime.NumCPU()))
}

// Scaled is bound on an idle machine, stretched by [Overload].
func Scaled(bound time.Duration) time.Duration {
	return time.Duration(float64(bound) * Overload())
}
