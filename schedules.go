package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/relayq/relay/internal/store"
)

// Errors of [DeleteSchedule].
var (
	// ErrScheduleNotFound: no schedule has the name (in that schema).
	ErrScheduleNotFound = errors.New("relay: schedule not found")
	// ErrScheduleInUse: a live client has the schedule; remove it from their
	// configuration (and restart them) first.
	ErrScheduleInUse = errors.New("relay: a live client has the schedule")
)

// ScheduleInfo is a periodic schedule as stored in the periodic table.
type ScheduleInfo struct {
	Name string
	// Spec is its timing ("cron 0 0 3 * * * Europe/Berlin", "every 30s"), Kind and Queue
	// those of its jobs, and CatchUp its policy ("skip", "run once", "backfill 24h0m0s"),
	// as the client that registered it last has them.
	Spec, Kind, Queue, CatchUp string
	// NextSlot is the next slot to enqueue: its job does not exist yet. Zero until the
	// schedule first enqueued.
	NextSlot time.Time
	// LastSlot is the latest slot enqueued, and LastJob its job (which retention or an
	// operator may have deleted since); zero if none.
	LastSlot time.Time
	LastJob  int64
	// Clients are the live clients that have the schedule, by ID.
	Clients []string
	// Orphaned is true when no live client has the schedule: it is not being enqueued.
	// It was removed from every client's configuration, or every client that has it is
	// stopped; [DeleteSchedule] removes it.
	Orphaned bool
	// CreatedAt is when it was first registered; UpdatedAt when a client last registered it.
	CreatedAt, UpdatedAt time.Time
}

// ListSchedules returns every periodic schedule of the schema, by name, with its next
// and last slot and the live clients that have it, in one statement. opts: [Schema].
func ListSchedules(ctx context.Context, db DB, opts ...JobOption) ([]ScheduleInfo, error) {
	if err := checkDB(db, "ListSchedules"); err != nil {
		return nil, err
	}
	s, err := jobStore(opts)
	if err != nil {
		return nil, err
	}
	rows, err := s.ListSchedules(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	out := make([]ScheduleInfo, len(rows))
	for i, r := range rows {
		out[i] = ScheduleInfo{
			Name: r.Name, Spec: r.Spec, Kind: r.Kind, Queue: r.Queue, CatchUp: r.CatchUp,
			NextSlot: r.NextSlot, LastSlot: r.LastSlot, LastJob: r.LastJob, Clients: r.Clients,
			Orphaned: len(r.Clients) == 0, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		}
	}
	return out, nil
}

// DeleteSchedule removes an orphaned schedule from the periodic table (its jobs stay). A
// schedule that a live client has returns an error wrapping [ErrScheduleInUse] naming
// them, and is kept; an unknown name, [ErrScheduleNotFound]; an invalid one,
// [ErrInvalidConfig]. A client started later with the schedule registers it anew, as a
// new schedule: the slots it had enqueued keep their jobs' unique keys, but those already
// deleted are no longer known. opts: [Schema].
func DeleteSchedule(ctx context.Context, db DB, name string, opts ...JobOption) error {
	if err := checkDB(db, "DeleteSchedule"); err != nil {
		return err
	}
	if err := checkName(ErrInvalidConfig, "schedule name", name); err != nil {
		return err
	}
	s, err := jobStore(opts)
	if err != nil {
		return err
	}
	live, err := s.DeleteSchedule(ctx, db, name)
	switch {
	case errors.Is(err, store.ErrNoSchedule):
		return fmt.Errorf("%w: %q", ErrScheduleNotFound, name)
	case err != nil:
		return fmt.Errorf("relay: %w", err)
	case len(live) > 0:
		return fmt.Errorf("%w: schedule %q is in use by %s", ErrScheduleInUse, name, strings.Join(live, ", "))
	}
	return nil
}
