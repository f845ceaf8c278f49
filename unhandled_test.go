package relay_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/relayq/relay"
)

// unhandledWarning is one "jobs no live client can run" warning.
type unhandledWarning struct {
	queue, kind string
	jobs        int64
}

// A client warns of pending jobs that no live client can run — a misspelled kind, a queue
// nobody serves — naming queue, kind and count, once per pair and again when the count
// has doubled; jobs it can run are never reported.
func TestClientWarnsOfJobsNoClientCanRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	warnings := make(chan unhandledWarning, 100)
	logger := slog.New(logHook(func(r slog.Record) {
		if !strings.HasPrefix(r.Message, "relay: jobs are waiting that no live client can run") {
			return
		}
		var w unhandledWarning
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "queue":
				w.queue = a.Value.String()
			case "kind":
				w.kind = a.Value.String()
			case "jobs":
				w.jobs = a.Value.Int64()
			}
			return true
		})
		warnings <- w
	}))
	known := relay.NewKind[numArgs]("email")
	misspelled := relay.NewKind[numArgs]("emial")
	c := b.client(relay.Config{Logger: logger, Queues: queues(10, "default", "paused")})
	handle(t, c, known, func(ctx context.Context, job *relay.Job[numArgs]) error { return nil })
	relay.CheckUnhandledEvery(c, 50*time.Millisecond)
	b.start(c)

	b.enqueueN(misspelled, 3)
	enqueue(b, known, numArgs{}, relay.Queue("nobody-serves"))
	handled := enqueue(b, known, numArgs{})
	b.waitState(relay.StateSucceeded, handled)
	// Waiting in a paused queue that a client serves, with a handler: not unhandled.
	b.pauseQueue("paused")
	enqueue(b, known, numArgs{}, relay.Queue("paused"))

	got := map[[2]string]int64{}
	for len(got) < 2 {
		w := recv(t, warnings, "warnings of the two unhandled pairs")
		got[[2]string{w.queue, w.kind}] = w.jobs
	}
	want := map[[2]string]int64{{"default", "emial"}: 3, {"nobody-serves", "email"}: 1}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("warned of %v: %d jobs, want %d (all warnings: %v)", k, got[k], n, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("warned of %v, want only %v", got, want)
	}

	// One more misspelled job does not double the count: no new warning for that pair. A
	// new unhandled pair, found by a later check, shows that checks went on meanwhile.
	b.enqueueN(misspelled, 1)
	enqueue(b, misspelled, numArgs{}, relay.Queue("marker"))
	for w := recv(t, warnings, "the marker's warning"); w.queue != "marker"; w = recv(t, warnings, "the marker's warning") {
		t.Errorf("warned again of %+v before its count doubled", w)
	}
	// Doubled (4 → 8): warned again, with the new count.
	b.enqueueN(misspelled, 4)
	if w := recv(t, warnings, "a second warning once the count doubled"); w != (unhandledWarning{"default", "emial", 8}) {
		t.Errorf("second warning = %+v, want default/emial with 8 jobs", w)
	}
}
