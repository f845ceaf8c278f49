package relay

import (
	"context"
	"fmt"
	"time"
)

// QueueDepth is how deep a queue is: its unfinished jobs by state, and how long its oldest
// due job has waited ([QueueDepths]).
type QueueDepth struct {
	Pending   int64 // due, waiting for a worker
	Scheduled int64 // pending, due later
	Running   int64
	Held      int64 // reservations not yet committed ([Reserved])
	// OldestDue is how long ago the earliest due pending job became due, on the database's
	// clock; zero when none is due.
	OldestDue time.Duration
}

// QueueDepths returns the depth of every queue that has unfinished jobs, in one statement
// that reads only the indexes of pending, running and held jobs: its cost is what the unfinished
// jobs number, however many finished jobs the table keeps (unlike [CountJobs]), so that
// metrics can read it on every collection. opts: [Schema].
func QueueDepths(ctx context.Context, db DB, opts ...JobOption) (map[string]QueueDepth, error) {
	if err := checkDB(db, "QueueDepths"); err != nil {
		return nil, err
	}
	s, err := jobStore(opts)
	if err != nil {
		return nil, err
	}
	depths, err := s.QueueDepths(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	out := make(map[string]QueueDepth, len(depths))
	for _, d := range depths {
		q := out[d.Queue]
		switch JobState(d.State) {
		case StatePending:
			q.Pending, q.OldestDue = d.N, max(d.OldestAge, 0)
		case StateScheduled:
			q.Scheduled = d.N
		case StateRunning:
			q.Running = d.N
		case StateHeld:
			q.Held = d.N
		}
		out[d.Queue] = q
	}
	return out, nil
}
