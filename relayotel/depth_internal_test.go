package relayotel

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/relayq/relay"
)

// A queue that empties reports zeros, not nothing, for forgetEmptyAfter; then it is
// forgotten, and reports again only once it has jobs again.
func TestEmptyQueuesReportZerosForAnHour(t *testing.T) {
	d := &depths{known: map[string]time.Time{}}
	start := time.Now()
	read := func(at time.Duration, queues ...string) map[string]relay.QueueDepth {
		qs := map[string]relay.QueueDepth{}
		for _, q := range queues {
			qs[q] = relay.QueueDepth{Pending: 1}
		}
		d.withEmpty(qs, start.Add(at))
		return qs
	}
	names := func(qs map[string]relay.QueueDepth) []string { return slices.Sorted(maps.Keys(qs)) }
	read(0, "tenant-1", "tenant-2")
	if got := read(forgetEmptyAfter, "tenant-2"); !slices.Equal(names(got), []string{"tenant-1", "tenant-2"}) || got["tenant-1"] != (relay.QueueDepth{}) {
		t.Errorf("an hour after tenant-1 emptied: %v; want it with zeros", got)
	}
	if got := read(forgetEmptyAfter+time.Second, "tenant-2"); !slices.Equal(names(got), []string{"tenant-2"}) {
		t.Errorf("over an hour after tenant-1 emptied: %v; want it forgotten", got)
	}
	if len(d.known) != 1 {
		t.Errorf("%d queues remembered; want 1", len(d.known))
	}
	if got := read(2*forgetEmptyAfter, "tenant-1"); !slices.Equal(names(got), []string{"tenant-1", "tenant-2"}) {
		t.Errorf("tenant-1 with jobs again: %v; want it, and tenant-2 (empty for an hour) with zeros", got)
	}
}
