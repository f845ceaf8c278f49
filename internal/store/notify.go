package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/relayq/relay/dispatcher"
)

// Wakeup is a parsed wakeup notification: a job of Queue due at RunAt became pending (or
// a job of an ordered or limited queue ended); it is due In from when the notification
// was sent (zero or less: now).
type Wakeup struct {
	Queue string
	// Backup says another client was woken for the job first: this one is to claim it only
	// if that one does not (see [dispatcher.Dispatcher.Backup]).
	Backup bool
	In     time.Duration
	// At is a safe place to resume a claim scan: the job's priority and run_at, rounded
	// down to the microsecond.
	At dispatcher.Cursor
}

// ParseWakeup decodes a payload made by the schema's wakeup_payload function:
// "w:<in µs>:<run_at µs since the epoch>:<priority>:<queue>", or a backup's wakeup (see
// migration 015's wake), the same with "b:".
func ParseWakeup(payload string) (Wakeup, bool) {
	rest, ok := strings.CutPrefix(payload, "w:")
	backup := false
	if !ok {
		if rest, backup = strings.CutPrefix(payload, "b:"); !backup {
			return Wakeup{}, false
		}
	}
	in, rest, ok1 := strings.Cut(rest, ":")
	at, rest, ok2 := strings.Cut(rest, ":")
	prio, queue, ok3 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || !ok3 || queue == "" {
		return Wakeup{}, false
	}
	inMicros, err1 := strconv.ParseInt(in, 10, 64)
	atMicros, err2 := strconv.ParseInt(at, 10, 64)
	priority, err3 := strconv.ParseInt(prio, 10, 16)
	if err1 != nil || err2 != nil || err3 != nil {
		return Wakeup{}, false
	}
	return Wakeup{
		Queue: queue, Backup: backup, In: time.Duration(inMicros) * time.Microsecond,
		At: dispatcher.Cursor{Priority: int(priority), RunAt: time.UnixMicro(atMicros)},
	}, true
}

// ParseQueueControl decodes a queue control notification, "q:<queue>", sent when a
// queue's settings change or it is paused or resumed.
func ParseQueueControl(payload string) (string, bool) {
	queue, ok := strings.CutPrefix(payload, "q:")
	return queue, ok && queue != ""
}

// ParseReservation decodes the notification of a reservation's deadline,
// "r:<µs since the epoch>", sent when a job is inserted held, or its deadline moved earlier,
// so that every client's expirer wakes for it.
func ParseReservation(payload string) (deadline time.Time, ok bool) {
	rest, ok := strings.CutPrefix(payload, "r:")
	if !ok {
		return time.Time{}, false
	}
	micros, err := strconv.ParseInt(rest, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMicro(micros), true
}

// ParseCancel decodes a cancel notification, "c:<job id>:<attempt>", sent when a running
// job is cancelled so that the client running that attempt cancels its handler.
func ParseCancel(payload string) (id int64, attempt int, ok bool) {
	rest, ok := strings.CutPrefix(payload, "c:")
	if !ok {
		return 0, 0, false
	}
	idText, attemptText, ok := strings.Cut(rest, ":")
	if !ok {
		return 0, 0, false
	}
	id, err1 := strconv.ParseInt(idText, 10, 64)
	n, err2 := strconv.Atoi(attemptText)
	return id, n, err1 == nil && err2 == nil
}

// ProbePrefix starts the payload of a listener's probe (see [Store.Probe]).
const ProbePrefix = "p:"

type probeParams struct {
	Payload string `db:"payload"`
}

// Probe sends payload, a listener's probe, on the schema's channel: the listener checks
// that it arrives, which it does not through a pooler in transaction mode.
func (s *Store) Probe(ctx context.Context, db DB, payload string) error {
	if _, err := s.q.probe.exec(ctx, db, probeParams{Payload: payload}); err != nil {
		return fmt.Errorf("send the listener's probe: %w", err)
	}
	return nil
}
