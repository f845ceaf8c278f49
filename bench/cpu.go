package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The machine is small and may be shared, so every run reports where the CPU time went
// while it ran: this process, the throwaway PostgreSQL (when the benchmark owns it) and
// everything else. A busy neighbour explains a latency miss that relay did not cause.

// cpuSample is a reading of cumulative CPU time, in clock ticks.
type cpuSample struct {
	at       time.Time
	busy     int64 // machine-wide, all CPUs, not idle or iowait
	self     int64 // this process
	postgres int64 // the throwaway server: postmaster, its live children and reaped ones
	havePG   bool
}

// clkTck is USER_HZ, the unit of /proc times; 100 on every Linux platform Go supports.
const clkTck = 100

func sampleCPU(postmasterPID int) cpuSample {
	s := cpuSample{at: time.Now()}
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := bytes.Cut(data, []byte("\n"))
		f := strings.Fields(string(line))
		for i, v := range f[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			switch i {
			case 3, 4: // idle, iowait
			case 8, 9: // guest, guest_nice: already counted in user and nice
			default:
				s.busy += n
			}
		}
	}
	if st, ok := procStat("self"); ok {
		s.self = st.utime + st.stime
	}
	if postmasterPID > 0 {
		// Children first, then the postmaster: a child reaped in between is counted twice
		// rather than not at all (the caller waits for the benchmark's connections to
		// close before sampling, which makes that rare).
		var children int64
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			if c, ok := procStat(e.Name()); ok && c.ppid == postmasterPID {
				children += c.utime + c.stime
			}
		}
		if st, ok := procStat(strconv.Itoa(postmasterPID)); ok {
			s.havePG = true
			s.postgres = children + st.utime + st.stime + st.cutime + st.cstime
		}
	}
	return s
}

type procTimes struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

func procStat(pid string) (procTimes, bool) {
	data, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return procTimes{}, false
	}
	// The command name is in parentheses and may hold spaces: fields start after ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procTimes{}, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 15 {
		return procTimes{}, false
	}
	num := func(k int) int64 { n, _ := strconv.ParseInt(f[k], 10, 64); return n }
	// f[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
	return procTimes{ppid: int(num(1)), utime: num(11), stime: num(12), cutime: num(13), cstime: num(14)}, true
}

// cpuMetrics reports the average number of cores busy between a and b.
func cpuMetrics(a, b cpuSample) []Metric {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 || b.busy == 0 {
		return nil
	}
	cores := func(ticks int64) float64 { return float64(ticks) / clkTck / secs }
	busy, self := cores(b.busy-a.busy), cores(b.self-a.self)
	ms := []Metric{
		{Name: "cpu: machine busy (cores)", Unit: unitCores, Value: busy},
		{Name: "cpu:   this benchmark process", Unit: unitCores, Value: self},
	}
	other := busy - self
	if a.havePG && b.havePG {
		pg := cores(b.postgres - a.postgres)
		ms = append(ms, Metric{Name: "cpu:   its PostgreSQL server", Unit: unitCores, Value: pg})
		other -= pg
	}
	return append(ms, Metric{Name: "cpu:   other processes", Unit: unitCores, Value: max(other, 0)})
}

// postmasterPID reads the throwaway server's postmaster PID, or 0.
func (d *database) postmasterPID() int {
	if d.srv == nil {
		return 0
	}
	data, err := os.ReadFile(filepath.Join(d.srv.DataDir(), "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}
