package main

import (
	"testing"
	"time"
)

func TestResumptionCountsFromTheFirstJobOnARestartedServer(t *testing.T) {
	base := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	jobs := func(starts ...int) []*jobRow {
		j := &jobRow{}
		for _, ms := range starts {
			j.attempts = append(j.attempts, attempt{started: at(ms)})
		}
		return []*jobRow{j}
	}
	faultStart, faultEnd := at(0), at(2_000)
	for _, c := range []struct {
		name     string
		serverUp time.Time
		jobs     []*jobRow
		want     time.Time
	}{
		{"a job on the new server before the suite saw it", at(1_500), jobs(-100, 1_600, 1_700, 2_100), at(1_600)},
		{"no job before the suite saw it", at(1_500), jobs(-100, 2_100), faultEnd},
		{"jobs before the server went down do not count", at(1_500), jobs(100, 200), faultEnd},
		{"the server did not restart", at(-60_000), jobs(100, 2_100), faultEnd},
		{"the server's start time is unknown", time.Time{}, jobs(1_600), faultEnd},
	} {
		if got := resumeFrom(faultStart, faultEnd, c.serverUp, c.jobs); !got.Equal(c.want) {
			t.Errorf("%s: resumption counts from %v, want %v", c.name, got.Sub(base), c.want.Sub(base))
		}
	}
}
