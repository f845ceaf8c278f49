package relayotel

import (
	"context"
	"sync"
	"time"

	"github.com/relayq/relay"
)

// depthTimeout bounds one read of the queue depths: a collection must not hang on a
// database that does not answer.
const depthTimeout = 5 * time.Second

// depths reads the queue depths for the gauges, at most once per interval, however many
// readers collect and however often: concurrent collections wait for the one read under
// way and share its figures.
type depths struct {
	db       relay.DB
	schema   string
	interval time.Duration

	mu    sync.Mutex
	at    time.Time // of the last read; zero before the first
	last  map[string]relay.QueueDepth
	known map[string]bool // every queue seen: one that empties reports zeros, not nothing
}

func (d *depths) read(ctx context.Context) (map[string]relay.QueueDepth, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.at.IsZero() && d.interval > 0 && time.Since(d.at) < d.interval {
		return d.last, nil
	}
	ctx, cancel := context.WithTimeout(ctx, depthTimeout)
	defer cancel()
	qs, err := relay.QueueDepths(ctx, d.db, relay.Schema(d.schema))
	if err != nil {
		return nil, err
	}
	for q := range d.known {
		if _, ok := qs[q]; !ok {
			qs[q] = relay.QueueDepth{}
		}
	}
	for q := range qs {
		d.known[q] = true
	}
	d.at, d.last = time.Now(), qs // never changed once read: callers share it
	return qs, nil
}
