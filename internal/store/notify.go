package store

import (
	"strconv"
	"strings"
	"time"
)

// Wakeup is a parsed wakeup notification: a job of Queue due at RunAt became pending; it
// is due In from when the notification was sent (zero or less: now).
type Wakeup struct {
	Queue string
	In    time.Duration
	RunAt time.Time // rounded down to the microsecond: a safe place to resume a claim scan
}

// ParseWakeup decodes a payload made by the schema's wakeup_payload function:
// "w:<in µs>:<run_at µs since the epoch>:<queue>".
func ParseWakeup(payload string) (Wakeup, bool) {
	rest, ok := strings.CutPrefix(payload, "w:")
	if !ok {
		return Wakeup{}, false
	}
	in, rest, ok1 := strings.Cut(rest, ":")
	at, queue, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || queue == "" {
		return Wakeup{}, false
	}
	inMicros, err1 := strconv.ParseInt(in, 10, 64)
	atMicros, err2 := strconv.ParseInt(at, 10, 64)
	if err1 != nil || err2 != nil {
		return Wakeup{}, false
	}
	return Wakeup{Queue: queue, In: time.Duration(inMicros) * time.Microsecond, RunAt: time.UnixMicro(atMicros)}, true
}

// ParseCancel decodes a cancel notification, "c:<job id>", sent when a running job is
// cancelled so that the client running it cancels its handler.
func ParseCancel(payload string) (int64, bool) {
	rest, ok := strings.CutPrefix(payload, "c:")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	return id, err == nil
}
