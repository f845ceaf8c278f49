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

func TestPickupIsBackOnceTheLastJobThatWaitedTooLongStarted(t *testing.T) {
	base := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	// job: visible (committed) at created, its attempts started at starts (milliseconds)
	job := func(created int, starts ...int) *jobRow {
		j := &jobRow{created: at(created - 50), visible: at(created)}
		for _, ms := range starts {
			j.attempts = append(j.attempts, attempt{started: at(ms)})
		}
		return j
	}
	from, late := at(2_000), 100*time.Millisecond
	for _, c := range []struct {
		name string
		jobs []*jobRow
		want time.Duration
	}{
		{"every job picked up promptly", []*jobRow{job(1_990, 2_010), job(2_100, 2_150), job(2_500, 2_501)}, 0},
		{"jobs enqueued as the database came back waited for a worker",
			[]*jobRow{job(2_000, 2_400), job(2_100, 2_650), job(2_700, 2_720)}, 650 * time.Millisecond},
		{"a job that waited through the fault counts when it starts", []*jobRow{job(500, 2_300), job(2_350, 2_360)}, 300 * time.Millisecond},
		{"a job that waited but started before the fault ended does not", []*jobRow{job(0, 1_500), job(2_100, 2_110)}, 0},
		{"only the first attempt's wait counts, not a retry's", []*jobRow{job(1_000, 1_010, 3_000)}, 0},
		{"a job never started has no pickup", []*jobRow{job(2_100), job(2_200, 2_210)}, 0},
		{"a wait of exactly late is not late", []*jobRow{job(2_100, 2_200)}, 0},
	} {
		if got := backToBaseline(from, late, c.jobs); got != c.want {
			t.Errorf("%s: back after %v, want %v", c.name, got, c.want)
		}
	}
}
