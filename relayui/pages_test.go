package relayui_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relayui"
)

// Every page, in a real browser, against a database with known jobs: what each shows,
// then the retry and cancel buttons, checked in the database.
func TestPagesInBrowser(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := browser(t)
	problems := watchPage(t, ctx)
	base := dashboard(t, w.db, relayui.Options{}).URL + prefix

	visit(t, ctx, base+"/")
	screenshot(t, ctx, "overview")
	queues := text(t, ctx, "table.queues")
	contains(t, "the overview's queues", queues, "billing", "email", "reports", "uploads", "ordered", "limit 3", "1 blocked")
	contains(t, "the overview's cards", text(t, ctx, ".card-succeeded"), strconv.Itoa(w.emails+1))
	contains(t, "the overview's clients", text(t, ctx, "main"), "worker-eu-1")
	if got := text(t, ctx, ".card-held .card-value"); got != "1" {
		t.Errorf("the overview's held card shows %q, want 1 (the reservation)", got)
	}
	// The overview refreshes itself (htmx, every 5 s): a new queue shows up unasked.
	enqueue(t, w.db, thumbnail, []byte("late"), relay.Queue("late-queue"))
	run(t, ctx, chromedp.Poll[bool](`document.querySelector("table.queues").innerText.includes("late-queue")`,
		chromedp.WithPollingTimeout(15*time.Second)))

	visit(t, ctx, base+"/queues/billing")
	screenshot(t, ctx, "queue-billing")
	if href := run(t, ctx, chromedp.AttributeValue(chromedp.CSS(".card-failed"), "href")); !strings.HasSuffix(href.Value, "/jobs?queue=billing&state=failed") {
		t.Errorf("the billing queue's failed card links to %q", href.Value)
	}
	contains(t, "the billing queue", text(t, ctx, "main"), "ordered", "limit 3", "Blocked keys", "customer-1", "card declined: insufficient funds")

	visit(t, ctx, base+"/queues/email")
	screenshot(t, ctx, "queue-email")
	if got := text(t, ctx, ".card-held .card-value"); got != "1" {
		t.Errorf("the email queue's held card shows %q, want 1", got)
	}
	bars := countRows(t, ctx, "rect.bar-succeeded")
	if bars < 55 {
		t.Errorf("the email queue's throughput chart has %d bars of succeeded jobs, want one for nearly every minute of the hour", bars)
	}

	visit(t, ctx, base+"/jobs")
	screenshot(t, ctx, "jobs")
	contains(t, "the jobs page", text(t, ctx, "table.jobs"), "thumbnail.render", "report.build", "invoice.charge")

	visit(t, ctx, base+"/jobs?state=failed")
	failedList := text(t, ctx, "table.jobs")
	contains(t, "the failed jobs' args sizes", failedList, " bytes") // sizes, not values: see jobs.html
	contains(t, "the failed jobs", failedList, strconv.FormatInt(w.failed, 10), strconv.FormatInt(w.panicky, 10), strconv.FormatInt(w.blocked, 10))
	if got := countRows(t, ctx, "table.jobs tbody tr"); got != 3 {
		t.Errorf("the failed jobs: %d rows, want 3:\n%s", got, failedList)
	}
	// Held jobs: their own filter, with the bulk actions that apply to them (no retry).
	visit(t, ctx, base+"/jobs")
	run(t, ctx, chromedp.Click(chromedp.CSS("label.state-held"), chromedp.NodeVisible))
	if got := run(t, ctx, chromedp.Evaluate[string](`new URLSearchParams(new FormData(document.querySelector("form.filters"))).getAll("state").join()`)); got != "held" {
		t.Errorf("the filter's held toggle sends state=%q, want held", got)
	}
	visit(t, ctx, base+"/jobs?state=held")
	heldList := text(t, ctx, "table.jobs")
	contains(t, "the held jobs", heldList, strconv.FormatInt(w.held, 10), "held", "email.send")
	if got := countRows(t, ctx, "table.jobs tbody tr"); got != 1 {
		t.Errorf("the held jobs: %d rows, want 1:\n%s", got, heldList)
	}
	if got := countRows(t, ctx, ".bulk a.bulk-cancel, .bulk a.bulk-delete"); got != 2 || countRows(t, ctx, ".bulk a.bulk-retry") != 0 {
		t.Errorf("the held jobs offer %d of cancel and delete, and %d retries; want both, no retry", got, countRows(t, ctx, ".bulk a.bulk-retry"))
	}
	visit(t, ctx, base+"/jobs?state=succeeded&queue=email&kind=email.send")
	next := run(t, ctx, chromedp.AttributeValue(chromedp.CSS(".pager a"), "href"))
	visit(t, ctx, base[:len(base)-len(prefix)]+next.Value)
	if got := countRows(t, ctx, "table.jobs tbody tr"); got != 50 {
		t.Errorf("the second page of succeeded emails has %d rows, want 50", got)
	}

	visit(t, ctx, fmt.Sprintf("%s/jobs/%d", base, w.failed))
	screenshot(t, ctx, "job-failed")
	contains(t, "the failed job", text(t, ctx, "main"), "monthly-revenue", "warehouse query failed: connection reset by peer (attempt 1)", "(attempt 2)", "Retry", "Delete")
	contains(t, "the failed job's metadata", text(t, ctx, "table.metadata"), "tenant", "acme-eu", "request_id", "req-7f3a9c21", "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	data := run(t, ctx, chromedp.TextContent(chromedp.CSS("pre.error-data")))
	if want := "{\n  \"query_id\": \"q-81c2e7\",\n  \"warehouse\": \"eu-west-1\",\n  \"upstream_status\": 503\n}"; data != want {
		t.Errorf("the first attempt's error data reads %q, want it pretty-printed: %q", data, want)
	}
	contains(t, "the second attempt's data error", text(t, ctx, ".data-error"), "No error data:", "could not be encoded as JSON")
	contains(t, "the failed job's backoff", text(t, ctx, ".backoff"), "2 ms, ×3 per attempt, at most 5.0 s, ±10 % jitter")
	visit(t, ctx, fmt.Sprintf("%s/jobs/%d", base, w.panicky))
	contains(t, "the job that panicked", text(t, ctx, "main"), "panic", "assignment to entry in nil map")
	stack := run(t, ctx, chromedp.TextContent(chromedp.CSS("pre.stack")))
	contains(t, "the panic's stack", stack, "relayui_test.newWorld")
	visit(t, ctx, fmt.Sprintf("%s/jobs/%d", base, w.binary))
	contains(t, "the binary job", text(t, ctx, "main"), "binary payload, 37 bytes", "89 50 4e 47")

	// A reservation: held until its deadline, which it shows; cancellable, never retried.
	held, err := relay.GetJob(context.Background(), w.db, w.held)
	if err != nil {
		t.Fatal(err)
	}
	visit(t, ctx, fmt.Sprintf("%s/jobs/%d", base, w.held))
	screenshot(t, ctx, "job-held")
	contains(t, "the held job", text(t, ctx, "h1"), "held")
	contains(t, "the held job's reservation", text(t, ctx, ".reservation"), "held until "+held.HeldUntil.UTC().Format("2006-01-02 15:04:05 UTC")+" unless committed")
	if r, c := countRows(t, ctx, `form[action$="/retry"]`), countRows(t, ctx, `form[action$="/cancel"]`); r != 0 || c != 1 {
		t.Errorf("the held job offers %d retries and %d cancels; want none, one", r, c)
	}
	visit(t, ctx, fmt.Sprintf("%s/jobs/%d", base, w.expired))
	contains(t, "the expired reservation", text(t, ctx, "main"), "cancelled", "expired", "never committed", "worker-eu-1")
	if n := countRows(t, ctx, `form[action$="/retry"]`); n != 0 {
		t.Errorf("the expired reservation offers %d retries; relay.Retry refuses it", n)
	}
	if got := text(t, ctx, "table.attempts tbody td.num"); got != "—" {
		t.Errorf("the expiry's entry is numbered %q, want — (it is not an attempt)", got)
	}

	visit(t, ctx, base+"/clients")
	screenshot(t, ctx, "clients")
	contains(t, "the clients page", text(t, ctx, "table.clients"), "worker-eu-1", "alive", "email", "report.build")

	// Bulk actions: the count first, then the change, for the jobs the filter keeps.
	visit(t, ctx, base+"/jobs?state=failed&queue=reports&kind=report.panic")
	follow(t, ctx, ".bulk a:first-of-type", ".confirm")
	screenshot(t, ctx, "bulk-confirm")
	contains(t, "the bulk retry's confirmation", text(t, ctx, ".confirm"), "1 job matches", "report.panic", "reports")
	click(t, ctx, ".confirm button")
	contains(t, "the page after the bulk retry", text(t, ctx, ".notice"), "Retried 1 job.")
	if rec, err := relay.GetJob(context.Background(), w.db, w.panicky); err != nil || rec.MaxAttempts != 2 {
		t.Errorf("after the bulk retry: %+v, %v; want the job given a second attempt", rec, err)
	}
	visit(t, ctx, base+"/jobs?state=pending&queue=billing")
	follow(t, ctx, ".bulk a.bulk-cancel", ".confirm")
	contains(t, "the bulk cancel's confirmation", text(t, ctx, ".confirm"), "1 job matches")
	click(t, ctx, ".confirm button")
	contains(t, "the page after the bulk cancel", text(t, ctx, ".notice"), "Cancelled 1 job.")
	if n := countRows(t, ctx, "table.jobs tbody tr"); n != 0 {
		t.Errorf("pending jobs of billing after they were all cancelled: %d", n)
	}

	// The buttons: retry the failed job, cancel the running one.
	visit(t, ctx, fmt.Sprintf("%s/jobs/%d", base, w.failed))
	click(t, ctx, "form[action$=\"/retry\"] button")
	contains(t, "the page after Retry", text(t, ctx, ".notice"), "will run again")
	rec, err := relay.GetJob(context.Background(), w.db, w.failed)
	if err != nil || rec.MaxAttempts != 3 {
		t.Errorf("after Retry: %+v, %v; want the job given a third attempt", rec, err)
	}
	visit(t, ctx, fmt.Sprintf("%s/jobs/%d", base, w.running))
	contains(t, "the running job", text(t, ctx, "h1"), "running")
	click(t, ctx, "form[action$=\"/cancel\"] button")
	if rec, err := relay.GetJob(context.Background(), w.db, w.running); err != nil || rec.State != relay.StateCancelled {
		t.Errorf("after Cancel: %+v, %v; want cancelled", rec, err)
	}
	contains(t, "the page after Cancel", text(t, ctx, "h1"), "cancelled")

	// Periodic schedules: the client's, live, and the orphan, which its button deletes.
	visit(t, ctx, base+"/periodic")
	screenshot(t, ctx, "periodic")
	schedules := text(t, ctx, "table.schedules")
	contains(t, "the periodic schedules", schedules, w.schedule, "every 1h0m0s", "report.build", "maintenance", "worker-eu-1",
		"nightly-invoices", "cron 0 0 3 * * * Europe/Berlin", "backfill 24h0m0s", w.orphan, "cron 0 30 2 * * * UTC", "export.csv", "orphaned")
	contains(t, "the periodic page's warning", text(t, ctx, ".warning"), "1 schedule is orphaned")
	if n := countRows(t, ctx, "table.schedules form[action$=\"/delete\"]"); n != 1 {
		t.Errorf("the periodic page offers to delete %d schedules, want 1 (the orphan)", n)
	}
	click(t, ctx, "table.schedules form[action$=\"/delete\"] button")
	contains(t, "the page after deleting the orphan", text(t, ctx, ".notice"), "The schedule is deleted")
	left, err := relay.ListSchedules(context.Background(), w.db)
	if err != nil || len(left) != 2 || left[0].Name != w.schedule {
		t.Errorf("after deleting the orphan the schedules are %+v, %v; want only the client's", left, err)
	}

	// Delete: the cancelled job, by its button; then every succeeded email, in bulk.
	visit(t, ctx, fmt.Sprintf("%s/jobs/%d", base, w.gone))
	click(t, ctx, "form[action$=\"/delete\"] button")
	contains(t, "the page after Delete", text(t, ctx, ".notice"), fmt.Sprintf("Job %d is deleted.", w.gone))
	if _, err := relay.GetJob(context.Background(), w.db, w.gone); !errors.Is(err, relay.ErrJobNotFound) {
		t.Errorf("after Delete, GetJob: %v; want ErrJobNotFound", err)
	}
	visit(t, ctx, base+"/jobs?state=succeeded&queue=email")
	follow(t, ctx, ".bulk a.bulk-delete", ".confirm")
	screenshot(t, ctx, "bulk-delete")
	contains(t, "the bulk delete's confirmation", text(t, ctx, ".confirm"), fmt.Sprintf("%d jobs match", w.emails), "succeeded", "email",
		fmt.Sprintf("Delete %d jobs", w.emails))
	click(t, ctx, ".confirm button")
	contains(t, "the page after the bulk delete", text(t, ctx, ".notice"), fmt.Sprintf("Deleted %d jobs.", w.emails))
	left2, err := relay.ListJobs(context.Background(), w.db, relay.ListFilter{Queue: "email", States: []relay.JobState{relay.StateSucceeded}})
	if err != nil || len(left2.Jobs) != 0 {
		t.Errorf("succeeded emails after the bulk delete: %d, %v; want none", len(left2.Jobs), err)
	}
	if _, err := relay.GetJob(context.Background(), w.db, w.later); err != nil {
		t.Errorf("the bulk delete of succeeded emails took the scheduled one too: %v", err)
	}

	if errs := problems(); len(errs) > 0 {
		t.Errorf("the pages logged errors: %q", errs)
	}
}

func countRows(t *testing.T, ctx context.Context, sel string) int {
	t.Helper()
	return run(t, ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
}

// follow clicks the link sel and waits for wait on the page it leads to.
func follow(t *testing.T, ctx context.Context, sel, wait string) {
	t.Helper()
	run(t, ctx, chromedp.Steps(
		chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(wait)),
	))
}

// click clicks the button sel of an action and waits for the page it leads to, which
// says what the action did.
func click(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	run(t, ctx, chromedp.Steps(
		chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(".notice")),
	))
}
