package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/relayq/relay/internal/store"
)

// QueueSettings are the settings of a queue that every client follows, stored in the
// database: see [SetQueue]. A queue without settings is plain.
type QueueSettings struct {
	// Ordered makes the queue's jobs start one at a time per [OrderKey], in the order they
	// were enqueued, across all clients; jobs without a key form one queue-wide sequence.
	// The next job of a key starts as soon as the one before it ends, by NOTIFY. While the
	// head of a key waits for a retry, the jobs behind it wait too; other keys run on.
	Ordered bool
	// OnFailure says what a key of an ordered queue does when its head fails for good
	// (attempts used up, or discarded): [BlockOnFailure], the default, or
	// [MoveOnAfterFailure].
	OnFailure FailurePolicy
	// GlobalLimit, if positive, is the most jobs of the queue running at once across all
	// clients, enforced in the database: adding clients never exceeds it. At most
	// 2147483647. A job's slot is
	// freed when it ends or its lease is lost, and the next job starts at once.
	GlobalLimit int
}

// FailurePolicy is what an ordered queue does when the head of a key fails for good.
type FailurePolicy string

const (
	// BlockOnFailure keeps the key blocked behind the failed job until an operator
	// retries it ([Retry]) or gives it up ([Cancel]); nothing behind it runs meanwhile.
	BlockOnFailure FailurePolicy = store.OnFailureBlock
	// MoveOnAfterFailure lets the next job of the key start once the head has failed.
	MoveOnAfterFailure FailurePolicy = store.OnFailureMoveOn
)

// QueueInfo is a queue's settings and state, as [GetQueue] reads them.
type QueueInfo struct {
	QueueSettings
	Paused   bool
	PausedAt time.Time
	Running  int // jobs running now, on every client
	Blocked  int // failed jobs holding their keys of an ordered queue
}

// SetQueue stores the settings of queue for every client, in effect within milliseconds
// (clients are told by NOTIFY) and across restarts. No client needs to serve the queue,
// and it need not have jobs yet: queues come into being with their first job. Jobs already
// in the queue are brought in line: if it becomes ordered, its pending jobs form the
// queue-wide sequence in id order; if it stops being ordered, their keys are dropped; if
// it stops blocking on failure, blocked keys move on. It does not change whether the
// queue is paused.
//
// A queue name that is empty, longer than [MaxNameLen] or not storable text, and invalid
// settings, return an error wrapping [ErrInvalidConfig] before anything is sent.
func SetQueue(ctx context.Context, db DB, queue string, settings QueueSettings, opts ...JobOption) error {
	if err := checkDB(db, "SetQueue"); err != nil {
		return err
	}
	if err := checkQueueName(queue); err != nil {
		return err
	}
	switch settings.OnFailure {
	case "":
		settings.OnFailure = BlockOnFailure
	case BlockOnFailure, MoveOnAfterFailure:
	default:
		return fmt.Errorf("%w: queue %q: OnFailure %q is neither BlockOnFailure nor MoveOnAfterFailure", ErrInvalidConfig, queue, settings.OnFailure)
	}
	if err := checkCount(ErrInvalidConfig, fmt.Sprintf("queue %q: GlobalLimit (0 for none)", queue), settings.GlobalLimit, 0); err != nil {
		return err
	}
	s, err := jobStore(opts)
	if err != nil {
		return err
	}
	if _, err := s.SetQueue(ctx, db, queue, settings.Ordered, string(settings.OnFailure), settings.GlobalLimit); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// PauseQueue pauses queue on every client: jobs running finish, and no job of the queue
// starts until [ResumeQueue]. It takes effect within milliseconds (clients are told by
// NOTIFY; a claim already under way when it commits may still start its jobs) and lasts
// across restarts. Enqueueing into a paused queue works as usual.
func PauseQueue(ctx context.Context, db DB, queue string, opts ...JobOption) error {
	return pauseQueue(ctx, db, queue, true, opts)
}

// ResumeQueue undoes [PauseQueue]; its due jobs start at once.
func ResumeQueue(ctx context.Context, db DB, queue string, opts ...JobOption) error {
	return pauseQueue(ctx, db, queue, false, opts)
}

func pauseQueue(ctx context.Context, db DB, queue string, pause bool, opts []JobOption) error {
	if err := checkDB(db, "PauseQueue and ResumeQueue"); err != nil {
		return err
	}
	if err := checkQueueName(queue); err != nil {
		return err
	}
	s, err := jobStore(opts)
	if err != nil {
		return err
	}
	if err := s.PauseQueue(ctx, db, queue, pause); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// GetQueue returns queue's settings and state. Any valid name is a queue: one never set
// up reads as plain, unpaused and empty.
func GetQueue(ctx context.Context, db DB, queue string, opts ...JobOption) (QueueInfo, error) {
	if err := checkDB(db, "GetQueue"); err != nil {
		return QueueInfo{}, err
	}
	if err := checkQueueName(queue); err != nil {
		return QueueInfo{}, err
	}
	s, err := jobStore(opts)
	if err != nil {
		return QueueInfo{}, err
	}
	r, err := s.GetQueue(ctx, db, queue)
	if err != nil {
		return QueueInfo{}, fmt.Errorf("relay: %w", err)
	}
	return QueueInfo{
		QueueSettings: QueueSettings{Ordered: r.Ordered, OnFailure: FailurePolicy(r.OnFailure), GlobalLimit: r.GlobalLimit},
		Paused:        !r.PausedAt.IsZero(), PausedAt: r.PausedAt, Running: r.Running, Blocked: r.Blocked,
	}, nil
}
