package store

import (
	"strconv"
	"strings"
	"time"
)

// Wakeup is a parsed wakeup notification: a job of Queue is due in In (zero or less: now).
type Wakeup struct {
	Queue string
	In    time.Duration
}

// ParseWakeup decodes a payload made by the schema's wakeup_payload function:
// "w:<queue>" for a job due now, "s:<µs>:<queue>" for one due in <µs> microseconds.
func ParseWakeup(payload string) (Wakeup, bool) {
	switch {
	case strings.HasPrefix(payload, "w:"):
		return Wakeup{Queue: payload[2:]}, len(payload) > 2
	case strings.HasPrefix(payload, "s:"):
		micros, queue, ok := strings.Cut(payload[2:], ":")
		if !ok || queue == "" {
			return Wakeup{}, false
		}
		us, err := strconv.ParseInt(micros, 10, 64)
		if err != nil {
			return Wakeup{}, false
		}
		return Wakeup{Queue: queue, In: time.Duration(us) * time.Microsecond}, true
	}
	return Wakeup{}, false
}
