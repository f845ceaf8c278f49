package main

import (
	"github.com/relayq/relay/internal/cpustat"
)

// Every run reports where the CPU time went while it ran (package cpustat): this process,
// the throwaway PostgreSQL (when the benchmark owns it) and everything else.

// cpuMetrics reports the average number of cores busy between a and b.
func cpuMetrics(a, b cpustat.Sample) []Metric {
	u, ok := cpustat.Between(a, b)
	if !ok {
		return nil
	}
	ms := []Metric{
		{Name: "cpu: machine busy (cores)", Unit: unitCores, Value: u.Busy},
		{Name: "cpu:   this benchmark process", Unit: unitCores, Value: u.Self},
	}
	if u.HavePG {
		ms = append(ms, Metric{Name: "cpu:   its PostgreSQL server", Unit: unitCores, Value: u.Postgres})
	}
	return append(ms, Metric{Name: "cpu:   other processes", Unit: unitCores, Value: u.Other})
}

// postmasterPID reads the throwaway server's postmaster PID, or 0.
func (d *database) postmasterPID() int {
	if d.srv == nil {
		return 0
	}
	return cpustat.PostmasterPID(d.srv.DataDir())
}
