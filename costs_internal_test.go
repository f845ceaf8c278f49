package relay

import (
	"testing"
	"time"

	"github.com/relayq/relay/internal/store"
)

// The costs every job pays, however fast its handler: none of these allocates per job.

// TestDecidingASuccessAllocatesNothing: the verdict on a handler that returned nil, made
// for every job (and again by JobInfo.Outcome in middleware).
func TestDecidingASuccessAllocatesNothing(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = decide(nil, nil, 1, 25, false) }); n != 0 {
		t.Errorf("decide allocates %.0f times for a success; want 0", n)
	}
}

// testBatch is a committed batch of n succeeded outcomes, every one written.
func testBatch(n int) ([]store.Outcome, store.Skipped) {
	batch := make([]store.Outcome, n)
	for i := range batch {
		batch[i] = store.Outcome{ID: int64(i), Kind: "k", Queue: "q", Attempt: 1, State: store.StateSucceeded, EndedAt: time.Now()}
	}
	return batch, nil
}

// TestEventsOfABatchAllocateNothing: the events of a committed batch reach an observer
// (relayotel's counters) and a subscriber without an allocation per event.
func TestEventsOfABatchAllocateNothing(t *testing.T) {
	var h eventHub
	seen := 0
	h.add(&subscriber{fn: func(Event) { seen++ }})
	h.add(&subscriber{ch: make(chan Event, 1)}) // full after the first: drops the rest
	batch, changed := testBatch(100)
	if n := testing.AllocsPerRun(10, func() { h.outcomeEvents(batch, changed) }); n != 0 {
		t.Errorf("a batch of 100 events allocates %.0f times; want 0", n)
	}
	if seen != 11*100 { // AllocsPerRun runs it once more to warm up
		t.Errorf("the observer saw %d events; want %d", seen, 11*100)
	}
}

// TestObserversSeeEachEventFirst: whatever the order they came in, observers are called
// before an event is sent to subscribers, so that a subscriber that has received it may
// read what the observers counted.
func TestObserversSeeEachEventFirst(t *testing.T) {
	var h eventHub
	ch := make(chan Event, 10)
	h.add(&subscriber{ch: ch})
	observed := 0
	h.add(&subscriber{fn: func(Event) {
		if len(ch) != observed {
			t.Errorf("the subscriber received an event before the observer was called")
		}
		observed++
	}})
	batch, changed := testBatch(3)
	h.outcomeEvents(batch, changed)
	if observed != 3 || len(ch) != 3 {
		t.Errorf("observed %d, received %d; want 3 and 3", observed, len(ch))
	}
}
