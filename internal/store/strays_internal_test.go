package store

import (
	"fmt"
	"testing"
	"time"
)

// TestStraysPassesAreOneASecondPerQueue: a queue's first claim looks for strays, the next
// within straysEvery do not, one after it does again; and a client serving ever new queues
// remembers only the passes that still count.
func TestStraysPassesAreOneASecondPerQueue(t *testing.T) {
	var p straysPasses
	t0 := time.Now()
	for _, c := range []struct {
		queue string
		at    time.Duration
		want  bool
	}{
		{"a", 0, true}, {"a", straysEvery / 2, false}, {"b", straysEvery / 2, true},
		{"a", straysEvery, true}, {"b", straysEvery, false}, {"a", straysEvery + 1, false},
	} {
		if got := p.due(c.queue, t0.Add(c.at)); got != c.want {
			t.Errorf("due(%s, +%v) = %v; want %v", c.queue, c.at, got, c.want)
		}
	}
	for i := range 10 * straysForgetAt {
		p.due(fmt.Sprint("dynamic-", i), t0.Add(time.Duration(i)*straysEvery))
	}
	if n := len(p.last); n > straysForgetAt {
		t.Errorf("remembers %d queues' passes; want at most %d", n, straysForgetAt)
	}
}
