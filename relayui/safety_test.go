package relayui_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
	"github.com/relayq/relay/relayui"
)

// fetchStatus POSTs form from the current page with fetch(), as a script on it would (so
// with its cookies), and returns the final status.
func fetchStatus(t *testing.T, ctx context.Context, url, form string) int {
	t.Helper()
	js := fmt.Sprintf(`fetch(%q, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: %s}).then(r => r.status)`, url, form)
	return run(t, ctx, chromedp.Evaluate[int](js, chromedp.EvalAwaitPromise))
}

// In the browser: a read-only dashboard refuses a forged POST, and a writable one refuses
// a POST without its token and one from a page of another origin, and takes one with it.
func TestForgedRequestsInBrowser(t *testing.T) {
	t.Parallel()
	db := relaytest.NewDB(t)
	ctx := browser(t)

	ro := dashboard(t, db, relayui.Options{ReadOnly: true}).URL + prefix
	id := failedJob(t, db)
	visit(t, ctx, fmt.Sprintf("%s/jobs/%d", ro, id))
	if n := countRows(t, ctx, "form[method=post]"); n != 0 {
		t.Errorf("the read-only job page shows %d forms that POST", n)
	}
	contains(t, "the read-only header", text(t, ctx, "header"), "read-only")
	for _, action := range []string{fmt.Sprintf("/jobs/%d/retry", id), fmt.Sprintf("/jobs/%d/delete", id), "/periodic/x/delete"} {
		if got := fetchStatus(t, ctx, ro+action, `"csrf_token=forged"`); got != http.StatusForbidden {
			t.Errorf("a forged POST %s to the read-only dashboard: %d, want 403", action, got)
		}
	}
	if got := fetchStatus(t, ctx, ro+"/bulk", `"csrf_token=forged&action=delete&queue=nobody"`); got != http.StatusForbidden {
		t.Errorf("a forged bulk delete to the read-only dashboard: %d, want 403", got)
	}
	if s := jobState(t, db, id); s != relay.StateCancelled {
		t.Fatalf("the read-only dashboard changed the job: it is %s", s)
	}

	base := dashboard(t, db, relayui.Options{}).URL + prefix
	visit(t, ctx, fmt.Sprintf("%s/jobs/%d", base, id))
	retry := fmt.Sprintf("%s/jobs/%d/retry", base, id)
	if got := fetchStatus(t, ctx, retry, `""`); got != http.StatusForbidden {
		t.Errorf("a POST without its token: %d, want 403", got)
	}
	if got := fetchStatus(t, ctx, retry, `"csrf_token=" + "A".repeat(43)`); got != http.StatusForbidden {
		t.Errorf("a POST with a made-up token: %d, want 403", got)
	}
	if got := fetchStatus(t, ctx, fmt.Sprintf("%s/jobs/%d/delete", base, id), `""`); got != http.StatusForbidden {
		t.Errorf("a delete without its token: %d, want 403", got)
	}
	if got := fetchStatus(t, ctx, base+"/bulk", `"action=delete&queue=nobody"`); got != http.StatusForbidden {
		t.Errorf("a bulk delete without its token: %d, want 403", got)
	}

	// A page of another origin whose form posts to the dashboard, as an attacker's would.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<form id="f" method="post" action="%s"><input name="csrf_token" value="stolen"></form>
			<script>document.getElementById("f").submit()</script>`, retry)
	}))
	defer evil.Close()
	run(t, ctx, chromedp.Navigate(evil.URL))
	run(t, ctx, chromedp.Poll[bool](`location.href.includes("/retry") && document.readyState === "complete"`))
	contains(t, "the answer to another origin's form", text(t, ctx, "body"), "cross-origin request refused")
	if s := jobState(t, db, id); s != relay.StateCancelled {
		t.Fatalf("refused requests changed the job: it is %s", s)
	}

	visit(t, ctx, fmt.Sprintf("%s/jobs/%d", base, id))
	if got := fetchStatus(t, ctx, retry, `"csrf_token=" + encodeURIComponent(document.querySelector("input[name=csrf_token]").value)`); got != http.StatusOK {
		t.Errorf("a POST with its token: %d, want 200 (after the redirect)", got)
	}
	if s := jobState(t, db, id); s != relay.StatePending {
		t.Errorf("after a POST with its token the job is %s, want pending", s)
	}
}

// Markup in every field an enqueuer or a handler controls: kinds, queues, args, errors,
// error data and why it is missing, stacks, order keys, client ids. The browser must show it as text and run none of it.
var payloads = []string{
	`<script>window.__xss=1</script>`,
	`"><img src=x onerror="window.__xss=2">`,
	`'><svg onload=window.__xss=3>`,
	`</pre><script>window.__xss=4</script>`,
	`javascript:window.__xss=5`,
}

// evilJSON is error data whose encoding fails with markup in its message.
type evilJSON struct{}

func (evilJSON) MarshalJSON() ([]byte, error) { return nil, errors.New(strings.Join(payloads, " ")) }

func TestMarkupInJobDataIsShownAsTextInBrowser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := relaytest.NewDB(t)
	evilQueue := payloads[1]
	if err := relay.SetQueue(ctx, db, evilQueue, relay.QueueSettings{Ordered: true}); err != nil {
		t.Fatal(err)
	}
	c := relay.New(relay.Config{
		ID: payloads[2], Logger: slog.New(slog.DiscardHandler),
		Queues: map[string]relay.QueueConfig{evilQueue: {Workers: 2}},
	})
	kinds := []relay.Kind[map[string]string]{
		relay.NewKind[map[string]string](payloads[0]), relay.NewKind[map[string]string](payloads[3]), relay.NewKind[map[string]string](payloads[2]),
	}
	evilData := map[string]string{}
	for i, p := range payloads {
		evilData[fmt.Sprintf("data%d %s", i, p)] = p
	}
	for i, kind := range kinds {
		err := relay.Handle(c, kind, func(ctx context.Context, j *relay.Job[map[string]string]) error {
			switch i {
			case 0:
				return relay.ErrorData(relay.Discard(errors.New(strings.Join(payloads, " "))), evilData)
			case 1:
				panic(payloads[3])
			}
			return relay.ErrorData(errors.New("no data"), evilJSON{}) // its encoding fails, with markup in the error
		}, relay.MaxAttempts(1))
		if err != nil {
			t.Fatal(err)
		}
	}
	events, unsubscribe := c.Subscribe(10)
	defer unsubscribe()
	if err := c.Start(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	defer c.Stop(ctx)
	var ids []int64
	for _, kind := range kinds {
		args := map[string]string{}
		for i, p := range payloads {
			args[fmt.Sprintf("field%d %s", i, p)] = p
		}
		meta := map[string]string{}
		for i, p := range payloads {
			meta[fmt.Sprintf("meta%d %s", i, p)] = p
		}
		id, err := relay.Enqueue(ctx, db, kind, args, relay.Queue(evilQueue), relay.OrderKey(payloads[4]+kind.Name()), relay.Metadata(meta))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for range kinds {
		select {
		case e := <-events:
			if e.State != relay.StateFailed {
				t.Fatalf("job %d ended %s, want failed", e.JobID, e.State)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the jobs did not run")
		}
	}

	// A schedule with markup in its name, spec, kind and queue, that no live client has
	// (so the periodic page offers to delete it).
	_, err := db.Exec(ctx, fmt.Sprintf(`INSERT INTO %q.periodic (name, spec, kind, queue, catch_up) VALUES ($1, $2, $3, $4, $5)`, db.Schema),
		payloads[1], payloads[3], payloads[0], evilQueue, payloads[2])
	if err != nil {
		t.Fatal(err)
	}

	bctx := browser(t)
	problems := watchPage(t, bctx)
	base := dashboard(t, db, relayui.Options{}).URL + prefix
	q := url.Values{"queue": {evilQueue}, "kind": {payloads[0]}, "state": {"failed"}}
	pages := []string{
		"/", "/queues/" + url.PathEscape(evilQueue), "/jobs", "/jobs?" + q.Encode(),
		fmt.Sprintf("/jobs/%d", ids[0]), fmt.Sprintf("/jobs/%d", ids[1]), fmt.Sprintf("/jobs/%d", ids[2]), "/clients",
		"/bulk?action=retry&" + q.Encode(), "/bulk?action=delete&" + q.Encode(), "/periodic",
	}
	for _, p := range pages {
		visit(t, bctx, base+p)
		if p == fmt.Sprintf("/jobs/%d", ids[0]) {
			screenshot(t, bctx, "xss-job")
		}
		injected := run(t, bctx, chromedp.Evaluate[string](`JSON.stringify({
			xss: window.__xss === undefined ? null : window.__xss,
			scripts: [...document.scripts].filter(s => !s.src).length + [...document.scripts].filter(s => s.src && !s.src.includes("/static/")).length,
			imgs: document.querySelectorAll("img").length,
			svgs: document.querySelectorAll("svg[onload]").length,
			handlers: [...document.querySelectorAll("*")].filter(e => [...e.attributes].some(a => a.name.startsWith("on"))).length,
			jsLinks: [...document.querySelectorAll("a")].filter(a => a.href.startsWith("javascript:")).length,
		})`))
		if injected != `{"xss":null,"scripts":0,"imgs":0,"svgs":0,"handlers":0,"jsLinks":0}` {
			t.Errorf("%s: markup from job data became live: %s", p, injected)
		}
		shown := text(t, bctx, "main")
		if !strings.Contains(shown, payloads[1]) && !strings.Contains(shown, payloads[0]) {
			t.Errorf("%s shows neither the evil queue nor the evil kind as text:\n%s", p, shown)
		}
	}
	visit(t, bctx, fmt.Sprintf("%s/jobs/%d", base, ids[0]))
	contains(t, "the job with markup", text(t, bctx, "main"), payloads...)
	contains(t, "the metadata with markup", text(t, bctx, "table.metadata"), payloads...)
	// In JSON, the quotes of payloads 1 and 2 are escaped: the others read as they are.
	contains(t, "the error data with markup", run(t, bctx, chromedp.TextContent(chromedp.CSS("pre.error-data"))), payloads[0], payloads[3], payloads[4])
	visit(t, bctx, fmt.Sprintf("%s/jobs/%d", base, ids[2]))
	contains(t, "the data error with markup", text(t, bctx, ".data-error"), payloads...)
	visit(t, bctx, base+"/periodic")
	contains(t, "the schedule with markup", text(t, bctx, "table.schedules"), payloads[0], payloads[1], payloads[2], payloads[3])
	if errs := problems(); len(errs) > 0 {
		t.Errorf("the pages ran or logged something: %q", errs)
	}
}
