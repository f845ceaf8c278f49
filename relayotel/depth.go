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

	mu   sync.Mutex
	at   time.Time // of the last read; zero before the first
	last map[string]relay.QueueDepth
	// known holds the queues seen, each with when it last had jobs: one that empties
	// reports zeros, not nothing, for forgetEmptyAfter. Then it is forgotten: a queue per
	// tenant, or per day, would otherwise report zeros for the life of the process.
	known map[string]time.Time
}

// forgetEmptyAfter is how long a queue that emptied still reports zeros.
const forgetEmptyAfter = time.Hour

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
	now := time.Now()
	d.withEmpty(qs, now)
	d.at, d.last = now, qs // never changed once read: callers share it
	return qs, nil
}

// withEmpty adds to qs, read at now, the queues seen before that are empty now, unless
// they have been for longer than forgetEmptyAfter.
func (d *depths) withEmpty(qs map[string]relay.QueueDepth, now time.Time) {
	for q := range qs {
		d.known[q] = now
	}
	for q, at := range d.known {
		switch _, ok := qs[q]; {
		case ok:
		case now.Sub(at) > forgetEmptyAfter:
			delete(d.known, q)
		default:
			qs[q] = relay.QueueDepth{}
		}
	}
}
