package main

import (
	"testing"
	"time"

	"github.com/relayq/relay/internal/fleet"
)

func TestJobMsTakesARangeOrOneValue(t *testing.T) {
	for _, c := range []struct {
		in       string
		min, max int
		ok       bool
	}{
		{"50-200", 50, 200, true},
		{" 10 - 10 ", 10, 10, true},
		{"100", 100, 100, true},
		{"0", 0, 0, true},
		{"200-50", 0, 0, false},
		{"-5", 0, 0, false},
		{"a-b", 0, 0, false},
		{"1-60001", 0, 0, false},
	} {
		var w workRange
		err := w.Set(c.in)
		if (err == nil) != c.ok || (c.ok && (w.min != c.min || w.max != c.max)) {
			t.Errorf("-job-ms %q: got %d-%d, %v; want %d-%d, ok %v", c.in, w.min, w.max, err, c.min, c.max, c.ok)
		}
	}
}

func TestJobMsDrawsTheSameBacklogEveryTime(t *testing.T) {
	w := workRange{min: 50, max: 200}
	a, b := w.jobs(), w.jobs()
	var sum time.Duration
	const n = 10_000
	for i := range n {
		x, y := a(), b()
		if x != y {
			t.Fatalf("job %d: %+v, then %+v", i, x, y)
		}
		if x.Ms < 50 || x.Ms > 200 {
			t.Fatalf("job %d works %d ms, outside 50-200", i, x.Ms)
		}
		if want := []string{"plain", "tx"}[i%2]; x.Effect != want {
			t.Fatalf("job %d leaves its effect %q; want %q", i, x.Effect, want)
		}
		sum += time.Duration(x.Ms) * time.Millisecond
	}
	if mean := sum / n; mean < w.mean()-5*time.Millisecond || mean > w.mean()+5*time.Millisecond {
		t.Errorf("mean work %v; want about %v", mean, w.mean())
	}
	if (&workRange{}).jobs()() != (fleet.Work{}) {
		t.Error("without a range, jobs are not no-ops")
	}
}
