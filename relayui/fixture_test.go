package relayui_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/relaytest"
	"github.com/relayq/relay/relayui"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

// prefix is where the tests mount the dashboard, as an application would.
const prefix = "/admin/jobs"

// dashboard serves the dashboard over db under prefix, the way the README shows.
func dashboard(t *testing.T, db *relaytest.DB, opts relayui.Options) *httptest.Server {
	t.Helper()
	opts.Prefix, opts.Schema = prefix, db.Schema
	mux := http.NewServeMux()
	mux.Handle(prefix+"/", relayui.Handler(db, opts))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// world is a database with known jobs in every state, and a live client.
type world struct {
	db      *relaytest.DB
	client  *relay.Client
	failed  int64 // a job that failed for good, with an error in each of its 2 attempts (data in the first, a data error in the second) and its own backoff
	panicky int64 // a job whose one attempt panicked
	running int64 // a job whose handler runs until it is cancelled
	blocked int64 // the failed head of key "customer-1" of the ordered queue billing
	binary  int64 // a job with a binary payload, waiting in queue uploads
	later   int64 // a job scheduled an hour from now
	gone    int64 // a cancelled job
	held    int64 // a reservation of queue email, held for two hours
	expired int64 // a reservation of queue email that expired
	emails  int   // succeeded jobs of queue email, spread over the last hour
	// Periodic schedules: the client's, and one no live client has.
	schedule, orphan string
}

type email struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

// The kinds of the tests' jobs.
var (
	emailSend     = relay.NewKind[email]("email.send")
	reportBuild   = relay.NewKind[map[string]any]("report.build")
	reportPanic   = relay.NewKind[map[string]any]("report.panic")
	invoiceCharge = relay.NewKind[map[string]any]("invoice.charge")
	thumbnail     = relay.NewKind[[]byte]("thumbnail.render")
)

// What the failing report records: the data of its first attempt's error, and its own
// retry policy.
var (
	warehouseFailure = map[string]any{"upstream_status": 503, "warehouse": "eu-west-1", "query_id": "q-81c2e7"}
	failedBackoff    = backoff.Policy{Initial: 2 * time.Millisecond, Multiplier: 3, Max: 5 * time.Second, Jitter: 0.1}
)

// enqueue enqueues one job and returns its id.
func enqueue[T any](t *testing.T, db relay.DB, kind relay.Kind[T], args T, opts ...relay.EnqueueOption) int64 {
	t.Helper()
	id, err := relay.Enqueue(context.Background(), db, kind, args, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// newWorld fills a new database with w's jobs and starts a client that ran them.
func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	db := relaytest.NewDB(t)
	w := &world{db: db, emails: 240}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(relay.SetQueue(ctx, db, "billing", relay.QueueSettings{Ordered: true, GlobalLimit: 3}))
	must(relay.SetQueue(ctx, db, "reports", relay.QueueSettings{GlobalLimit: 2}))
	must(relay.PauseQueue(ctx, db, "uploads"))

	c := relay.New(relay.Config{
		ID: "worker-eu-1", Logger: slog.New(slog.DiscardHandler),
		Queues: map[string]relay.QueueConfig{"email": {Workers: 20}, "billing": {Workers: 5}, "reports": {Workers: 2}},
	})
	started := make(chan struct{})
	fast := relay.Backoff(backoff.Policy{Initial: time.Millisecond, Multiplier: 1, Max: time.Millisecond})
	must(relay.Handle(c, emailSend, func(ctx context.Context, j *relay.Job[email]) error {
		j.SetOutput(map[string]string{"message_id": fmt.Sprintf("<%d@mail.example.com>", j.ID)})
		return nil
	}))
	must(relay.Handle(c, reportBuild, func(ctx context.Context, j *relay.Job[map[string]any]) error {
		if j.Args["slow"] == true {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}
		err := fmt.Errorf("warehouse query failed: connection reset by peer (attempt %d)", j.Attempt)
		if j.Attempt == 1 {
			return relay.ErrorData(err, warehouseFailure)
		}
		return relay.ErrorData(err, func() {}) // a func does not encode as JSON: recorded as a data error
	}, fast))
	must(relay.Handle(c, reportPanic, func(ctx context.Context, j *relay.Job[map[string]any]) error {
		var m map[string]int
		m["boom"]++ // a nil map: panics
		return nil
	}))
	must(relay.Handle(c, invoiceCharge, func(ctx context.Context, j *relay.Job[map[string]any]) error {
		if j.Args["customer"] == "customer-1" {
			return relay.Discard(errors.New("card declined: insufficient funds"))
		}
		return nil
	}))
	w.schedule, w.orphan = "hourly-rollup", "legacy-export"
	must(relay.Schedule(c, w.schedule, relay.Every(time.Hour), reportBuild.Job(map[string]any{"report": "rollup"}, relay.Queue("maintenance"))))
	must(relay.Schedule(c, "nightly-invoices", relay.Cron("0 0 3 * * *", "Europe/Berlin"),
		invoiceCharge.Job(map[string]any{"batch": "nightly"}, relay.Queue("billing")), relay.CatchUp(relay.Backfill(24*time.Hour))))
	events, unsubscribe := c.Subscribe(1000)
	defer unsubscribe()
	must(c.Start(ctx, db.Pool))
	t.Cleanup(func() {
		stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(stop)
	})
	w.client = c

	var specs []relay.JobSpec
	for i := range w.emails {
		specs = append(specs, emailSend.Job(email{To: fmt.Sprintf("user%03d@example.com", i), Subject: "Your weekly digest"}))
	}
	_, err := relay.EnqueueMany(ctx, db, specs, relay.Queue("email"))
	must(err)
	w.failed = enqueue(t, db, reportBuild, map[string]any{"report": "monthly-revenue", "month": "2026-10"}, relay.Queue("reports"), relay.MaxAttempts(2),
		relay.Metadata(map[string]string{"tenant": "acme-eu", "request_id": "req-7f3a9c21", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}),
		relay.Backoff(failedBackoff))
	w.panicky = enqueue(t, db, reportPanic, map[string]any{"report": "churn"}, relay.Queue("reports"), relay.MaxAttempts(1))
	w.blocked = enqueue(t, db, invoiceCharge, map[string]any{"customer": "customer-1", "amount_cents": 4200}, relay.Queue("billing"), relay.OrderKey("customer-1"))
	enqueue(t, db, invoiceCharge, map[string]any{"customer": "customer-1", "amount_cents": 1900}, relay.Queue("billing"), relay.OrderKey("customer-1"))
	enqueue(t, db, invoiceCharge, map[string]any{"customer": "customer-2", "amount_cents": 990}, relay.Queue("billing"), relay.OrderKey("customer-2"))
	w.binary = enqueue(t, db, thumbnail, []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR relay binary payload"), relay.Queue("uploads"))
	w.later = enqueue(t, db, emailSend, email{To: "later@example.com", Subject: "Reminder"}, relay.Queue("email"), relay.RunIn(time.Hour))
	w.gone = enqueue(t, db, emailSend, email{To: "gone@example.com", Subject: "Never sent"}, relay.Queue("email"), relay.RunIn(time.Hour))
	must(relay.Cancel(ctx, db, w.gone))
	w.held = enqueue(t, db, emailSend, email{To: "held@example.com", Subject: "Order confirmation"}, relay.Queue("email"), relay.Reserved(2*time.Hour))
	w.expired = enqueue(t, db, emailSend, email{To: "expired@example.com", Subject: "Abandoned cart"}, relay.Queue("email"), relay.Reserved(time.Millisecond))
	relaytest.WaitFor(t, 30*time.Second, "the reservation to expire", func() bool {
		rec, err := relay.GetJob(ctx, db, w.expired)
		must(err)
		return rec.State == relay.StateCancelled
	})

	// Wait for every job that can end to end: the emails, two reports (the failing one
	// twice), and the two invoices that run (customer-1's second waits behind the first).
	want := w.emails + 2 + 2
	ended := 0
	timeout := time.After(30 * time.Second)
	for ended < want {
		select {
		case e := <-events:
			if e.State == relay.StateSucceeded || e.State == relay.StateFailed {
				ended++
			}
		case <-timeout:
			t.Fatalf("only %d of %d jobs ended", ended, want)
		}
	}
	w.running = enqueue(t, db, reportBuild, map[string]any{"report": "yearly", "slow": true}, relay.Queue("reports"))
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the slow report never started")
	}

	// Spread the emails over the last hour, as if they had run all along, for the
	// queue's charts: the i-th finished i·15 s ago, having waited and run a little.
	_, err = db.Exec(ctx, fmt.Sprintf(`
		WITH e AS (SELECT id, row_number() OVER (ORDER BY id) AS i FROM %q.jobs WHERE queue = 'email' AND state = 'succeeded')
		UPDATE %q.jobs j SET
			finished_at = now() - e.i * interval '14.5 seconds',
			attempted_at = now() - e.i * interval '14.5 seconds' - (20 + e.i %% 7 * 9) * interval '1 millisecond',
			run_at = now() - e.i * interval '14.5 seconds' - (30 + e.i %% 11 * 13 + (e.i / 60) * 25) * interval '1 millisecond',
			created_at = now() - e.i * interval '14.5 seconds' - interval '1 second'
		FROM e WHERE j.id = e.id`, db.Schema, db.Schema))
	must(err)
	// A schedule whose clients are gone, as after a deploy that dropped it: it last ran
	// (job deleted since) the night before.
	_, err = db.Exec(ctx, fmt.Sprintf(`
		INSERT INTO %q.periodic (name, spec, kind, queue, catch_up, next_slot, last_slot, created_at, updated_at)
		VALUES ($1, 'cron 0 30 2 * * * UTC', 'export.csv', 'reports', 'skip',
		        date_trunc('day', now()) + interval '2 hours 30 minutes', date_trunc('day', now()) - interval '21 hours 30 minutes',
		        now() - interval '40 days', now() - interval '3 days')`, db.Schema), w.orphan)
	must(err)
	return w
}
