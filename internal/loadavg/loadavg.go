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
	"sync/atomic"
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

// Stalls measures how late the Go scheduler wakes a goroutine, for as long as it runs:
// on a machine whose cores other processes hold, a timer of relay fires late by as much,
// and a bound on relay's own delay should allow for it. The load average cannot tell: it
// is a minute's mean, and one stall of 100 ms does not move it.
type Stalls struct {
	worst atomic.Int64 // the longest oversleep seen, in ns
	stop  chan struct{}
	done  chan struct{}
}

// stallTick is how often Stalls sleeps to see how late it wakes.
const stallTick = 2 * time.Millisecond

// MeasureStalls starts measuring; call Stop when the timed part ends.
func MeasureStalls() *Stalls {
	s := &Stalls{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			start := time.Now()
			t := time.NewTimer(stallTick)
			select {
			case <-s.stop:
				t.Stop()
				return
			case <-t.C:
			}
			if late := time.Since(start) - stallTick; late > time.Duration(s.worst.Load()) {
				s.worst.Store(int64(late))
			}
		}
	}()
	return s
}

// Stop ends the measurement and returns the longest stall seen.
func (s *Stalls) Stop() time.Duration {
	close(s.stop)
	<-s.done
	return time.Duration(s.worst.Load())
}
