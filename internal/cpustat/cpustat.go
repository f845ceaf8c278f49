// Package cpustat tells where a machine's CPU time went between two readings: to this
// process (and the children it has waited for), to a PostgreSQL server whose postmaster
// it knows, and to everything else. The benchmark and the chaos suite report it with their
// results: the machine is small and may be shared, and a busy neighbour explains a miss
// that relay did not cause. It reads /proc, so it reports nothing off Linux.
package cpustat

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Sample is a reading of cumulative CPU time, in clock ticks.
type Sample struct {
	at       time.Time
	busy     int64 // machine-wide, all CPUs, not idle or iowait
	self     int64 // this process and its waited-for children
	postgres int64 // the server: postmaster, its live children and reaped ones
	havePG   bool
}

// Use is the average number of cores busy between two samples, by whom.
type Use struct {
	Seconds  float64 // between the samples
	Busy     float64 // the whole machine
	Self     float64 // this process and the children it waited for meanwhile
	Postgres float64 // the server, if its postmaster was known (HavePG)
	HavePG   bool
	Other    float64 // everything else
}

// clkTck is USER_HZ, the unit of /proc times; 100 on every Linux platform Go supports.
const clkTck = 100

// Take reads the CPU time of the machine, of this process and of the server whose
// postmaster has PID postmasterPID (none if 0).
func Take(postmasterPID int) Sample {
	s := Sample{at: time.Now()}
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
		s.self = st.utime + st.stime + st.cutime + st.cstime
	}
	if postmasterPID > 0 {
		// Children first, then the postmaster: a child reaped in between is counted twice
		// rather than not at all (callers wait for their connections to close before
		// sampling, which makes that rare).
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

// Between reports the CPU use from a to b; ok is false if it cannot be known.
func Between(a, b Sample) (u Use, ok bool) {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 || b.busy == 0 {
		return Use{}, false
	}
	cores := func(ticks int64) float64 { return float64(ticks) / clkTck / secs }
	u = Use{Seconds: secs, Busy: cores(b.busy - a.busy), Self: cores(b.self - a.self)}
	u.Other = u.Busy - u.Self
	if a.havePG && b.havePG {
		u.HavePG, u.Postgres = true, cores(b.postgres-a.postgres)
		u.Other -= u.Postgres
	}
	u.Other = max(u.Other, 0)
	return u, true
}

// Plus is the use over both u's time and v's, as if they were one period.
func (u Use) Plus(v Use) Use {
	secs := u.Seconds + v.Seconds
	if secs <= 0 {
		return u
	}
	avg := func(a, b float64) float64 { return (a*u.Seconds + b*v.Seconds) / secs }
	return Use{Seconds: secs, Busy: avg(u.Busy, v.Busy), Self: avg(u.Self, v.Self), Postgres: avg(u.Postgres, v.Postgres),
		HavePG: u.HavePG && v.HavePG, Other: avg(u.Other, v.Other)}
}

// PostmasterPID reads the PID of the postmaster of the server in dataDir, or 0.
func PostmasterPID(dataDir string) int {
	data, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
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

// Process is the CPU time process pid has used so far (user and system), and false if it
// cannot be read: another machine's server, or not Linux.
func Process(pid int) (time.Duration, bool) {
	t, ok := procStat(strconv.Itoa(pid))
	if !ok {
		return 0, false
	}
	return time.Duration(t.utime+t.stime) * time.Second / clkTck, true
}
