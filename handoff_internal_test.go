package relay

import (
	"testing"
	"time"

	"github.com/relayq/relay/dispatcher"
)

// A hand-off is taken once while it is remembered, for handOffMemory, and then forgotten:
// what the client remembers is a minute's hand-offs, however many there were before.
func TestHandOffsAreRememberedForAMinute(t *testing.T) {
	var h handOffs
	start := time.Now()
	job := func(id int64) *dispatcher.Job { return &dispatcher.Job{ID: id, Attempt: 1} }
	// Two minutes of hand-offs, 100 a second, each seen twice: at once, and by a look for
	// hand-offs not heard a second later.
	const perSecond, seconds = 100, 120
	for i := range int64(perSecond * seconds) {
		now := start.Add(time.Duration(i) * time.Second / perSecond)
		if !h.first(job(i), now) {
			t.Fatalf("hand-off %d taken as seen before, the first time", i)
		}
		if i >= perSecond && h.first(job(i-perSecond), now) {
			t.Fatalf("hand-off %d taken again a second later", i-perSecond)
		}
	}
	if n, most := len(h.seen), perSecond*int(handOffMemory/time.Second)+1; n > most || len(h.order) > most {
		t.Errorf("%d hand-offs remembered (%d in order); want at most a minute's, %d", n, len(h.order), most)
	}
	// A forgotten hand-off is taken again, and remembered from then on.
	now := start.Add(seconds * time.Second)
	h.forget(job(perSecond*seconds - 1))
	if !h.first(job(perSecond*seconds-1), now) {
		t.Error("a forgotten hand-off was not taken again")
	}
	if h.first(job(perSecond*seconds-1), now) {
		t.Error("a hand-off taken again after it was forgotten was taken a third time")
	}
	// One forgotten and seen again is remembered for a minute from then, not from when it
	// was first seen.
	again := job(perSecond*seconds - 2)
	h.forget(again)
	h.first(again, now.Add(30*time.Second))
	if h.first(again, now.Add(61*time.Second)) {
		t.Error("a hand-off seen again 31 s ago was forgotten with its first sighting's entry")
	}
	// The first ones, long forgotten, are new again.
	if !h.first(job(0), now) {
		t.Error("a hand-off seen two minutes ago was not forgotten")
	}
	// Forgotten once its minute has passed, even with no other hand-off seen since.
	var quiet handOffs
	quiet.first(job(1), start)
	if !quiet.first(job(1), start.Add(handOffMemory+time.Second)) {
		t.Error("a hand-off seen more than a minute ago, the last one seen, was not forgotten")
	}
}

// BenchmarkHandOffFirst: a hand-off's check costs the same however many were seen in the
// last minute (here 30,000: 500 a second).
func BenchmarkHandOffFirst(b *testing.B) {
	var h handOffs
	start := time.Now()
	for i := range int64(30_000) {
		h.first(&dispatcher.Job{ID: i, Attempt: 1}, start.Add(time.Duration(i)*2*time.Millisecond))
	}
	now := start.Add(60 * time.Second)
	id := int64(30_000)
	for b.Loop() {
		now = now.Add(2 * time.Millisecond)
		h.first(&dispatcher.Job{ID: id, Attempt: 1}, now)
		id++
	}
}
