package relayui_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
	"github.com/relayq/relay/relayui"
)

// failedJob enqueues a job into a queue no client serves and cancels it: a job that
// Retry changes.
func failedJob(t *testing.T, db *relaytest.DB) int64 {
	t.Helper()
	ctx := context.Background()
	id, err := relay.Enqueue(ctx, db, emailSend, email{To: "ada@example.com"}, relay.Queue("nobody"))
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Cancel(ctx, db, id); err != nil {
		t.Fatal(err)
	}
	return id
}

func jobState(t *testing.T, db *relaytest.DB, id int64) relay.JobState {
	t.Helper()
	rec, err := relay.GetJob(context.Background(), db, id)
	if err != nil {
		t.Fatal(err)
	}
	return rec.State
}

// browserlessClient is an HTTP client that keeps cookies and does not follow redirects.
func browserlessClient(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var tokenField = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// get fetches url and returns its body and the CSRF token of its forms ("" if none).
func get(t *testing.T, c *http.Client, url string) (body, token string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("GET %s: no %s header", url, h)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); strings.Contains(csp, "unsafe") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("GET %s: Content-Security-Policy %q is not strict", url, csp)
	}
	if m := tokenField.FindStringSubmatch(string(b)); m != nil {
		token = m[1]
	}
	return string(b), token
}

func post(t *testing.T, c *http.Client, url string, form url.Values) int {
	t.Helper()
	resp, err := c.PostForm(url, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Without a browser: every state-changing request needs the token of its browser's
// cookie, and a read-only dashboard refuses them all and shows no form that would send one.
func TestActionsNeedTheirToken(t *testing.T) {
	t.Parallel()
	db := relaytest.NewDB(t)
	id := failedJob(t, db)
	key := []byte(strings.Repeat("k", 32))
	base := dashboard(t, db, relayui.Options{CSRFKey: key}).URL + prefix
	retry := fmt.Sprintf("%s/jobs/%d/retry", base, id)

	c := browserlessClient(t)
	_, token := get(t, c, fmt.Sprintf("%s/jobs/%d", base, id))
	if token == "" {
		t.Fatal("the job page has no form with a CSRF token")
	}
	if got := post(t, c, retry, nil); got != http.StatusForbidden {
		t.Errorf("POST without a token: %d, want 403", got)
	}
	if got := post(t, c, retry, url.Values{"csrf_token": {token + "x"}}); got != http.StatusForbidden {
		t.Errorf("POST with a wrong token: %d, want 403", got)
	}
	other := browserlessClient(t) // a token is worth nothing without its cookie
	get(t, other, base+"/")
	if got := post(t, other, retry, url.Values{"csrf_token": {token}}); got != http.StatusForbidden {
		t.Errorf("POST with another browser's token: %d, want 403", got)
	}
	if s := jobState(t, db, id); s != relay.StateCancelled {
		t.Fatalf("refused requests changed the job: it is %s", s)
	}
	// The other actions refuse a request without the token alike, and change nothing.
	if _, err := db.Exec(context.Background(), fmt.Sprintf(`INSERT INTO %q.periodic (name, spec, kind, queue, catch_up) VALUES ('gone', 'every 1h0m0s', 'k', 'q', 'skip')`, db.Schema)); err != nil {
		t.Fatal(err)
	}
	for _, action := range []struct {
		path string
		form url.Values
	}{
		{fmt.Sprintf("/jobs/%d/delete", id), nil},
		{"/bulk", url.Values{"action": {"delete"}, "queue": {"nobody"}}},
		{"/bulk", url.Values{"action": {"retry"}, "queue": {"nobody"}}},
		{"/periodic/gone/delete", nil},
		{"/queues/nobody/pause", nil},
	} {
		if got := post(t, c, base+action.path, action.form); got != http.StatusForbidden {
			t.Errorf("POST %s %v without a token: %d, want 403", action.path, action.form, got)
		}
	}
	if s := jobState(t, db, id); s != relay.StateCancelled {
		t.Fatalf("refused requests changed the job: it is %s", s)
	}
	if list, err := relay.ListSchedules(context.Background(), db); err != nil || len(list) != 1 {
		t.Fatalf("a refused request deleted the schedule: %+v, %v", list, err)
	}
	if got := post(t, c, retry, url.Values{"csrf_token": {token}}); got != http.StatusSeeOther {
		t.Errorf("POST with its token: %d, want 303", got)
	}
	if s := jobState(t, db, id); s != relay.StatePending {
		t.Errorf("after a valid retry the job is %s, want pending", s)
	}

	// The read-only dashboard signs with the same key, and the cookie jar ignores ports:
	// its requests carry a valid token, so that only read-only mode can refuse them.
	ro := dashboard(t, db, relayui.Options{ReadOnly: true, CSRFKey: key}).URL + prefix
	id = failedJob(t, db)
	for _, page := range []string{"/", "/jobs", fmt.Sprintf("/jobs/%d", id), "/queues/nobody", "/clients", "/periodic"} {
		body, _ := get(t, c, ro+page)
		if strings.Contains(body, `method="post"`) {
			t.Errorf("read-only %s shows a form that POSTs", page)
		}
	}
	resp, err := c.Get(ro + "/bulk?action=delete&queue=nobody")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("read-only GET of a bulk action's confirmation: %s, want 403", resp.Status)
	}
	_, token = get(t, c, fmt.Sprintf("%s/jobs/%d", base, id))
	for _, action := range []struct {
		path, bulk string
	}{
		{fmt.Sprintf("/jobs/%d/retry", id), ""}, {fmt.Sprintf("/jobs/%d/delete", id), ""}, {"/queues/nobody/pause", ""},
		{"/bulk", "retry"}, {"/bulk", "delete"}, {"/periodic/gone/delete", ""},
	} {
		form := url.Values{"csrf_token": {token}, "action": {action.bulk}, "queue": {"nobody"}}
		if got := post(t, c, ro+action.path, form); got != http.StatusForbidden {
			t.Errorf("read-only POST %s %s: %d, want 403", action.path, action.bulk, got)
		}
	}
	if s := jobState(t, db, id); s != relay.StateCancelled {
		t.Errorf("a read-only dashboard changed the job: it is %s", s)
	}
	if list, err := relay.ListSchedules(context.Background(), db); err != nil || len(list) != 1 {
		t.Errorf("a read-only dashboard deleted the schedule: %+v, %v", list, err)
	}
	// The same token does it on the writable dashboard: the refusals above were read-only's.
	if got := post(t, c, base+"/periodic/gone/delete", url.Values{"csrf_token": {token}}); got != http.StatusSeeOther {
		t.Errorf("POST /periodic/gone/delete with its token: %d, want 303", got)
	}
	if list, err := relay.ListSchedules(context.Background(), db); err != nil || len(list) != 0 {
		t.Errorf("after deleting the orphan: %+v, %v; want no schedule", list, err)
	}
	if q, err := relay.GetQueue(context.Background(), db, "nobody"); err != nil || q.Paused {
		t.Errorf("a read-only dashboard paused the queue: %+v, %v", q, err)
	}
}

// Options.Redact sees every job before any page shows it: its args, errors, error data and
// payload appear nowhere, in a listing, on its page, or as the last error of a blocked key.
func TestRedactHidesWhatItBlanks(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	redact := func(j *relay.JobRecord) {
		j.Args, j.Payload, j.Output, j.Metadata = []byte(`{"redacted":true}`), nil, nil, nil
		for i := range j.Attempts {
			j.Attempts[i].Error, j.Attempts[i].Stack, j.Attempts[i].Data, j.Attempts[i].DataError = "[redacted]", "", nil, ""
		}
	}
	base := dashboard(t, w.db, relayui.Options{Redact: redact}).URL + prefix
	c := browserlessClient(t)
	for _, page := range []string{
		"/jobs", "/jobs?state=failed", fmt.Sprintf("/jobs/%d", w.failed), fmt.Sprintf("/jobs/%d", w.blocked),
		fmt.Sprintf("/jobs/%d", w.panicky), fmt.Sprintf("/jobs/%d", w.binary), "/queues/billing",
	} {
		body, _ := get(t, c, base+page)
		for _, secret := range []string{"monthly-revenue", "card declined", "user001@example.com", "warehouse query failed", "nil map", "89 50 4e 47", "message_id", "acme-eu", "q-81c2e7", "could not be encoded"} {
			if strings.Contains(body, secret) {
				t.Errorf("%s shows %q, which Redact blanked", page, secret)
			}
		}
		// The jobs list shows no values at all (sizes only), so nothing Redact wrote either.
		if !strings.HasPrefix(page, "/jobs?") && page != "/jobs" && !strings.Contains(body, "redacted") {
			t.Errorf("%s shows nothing Redact wrote", page)
		}
	}
}

// A queue's name may hold any character, "/" and "?" too: its links escape it, and its
// page and actions find it.
func TestQueueNamesAreEscapedInLinks(t *testing.T) {
	t.Parallel()
	db := relaytest.NewDB(t)
	const name = "tenant/eu?x=1 #a"
	if _, err := relay.Enqueue(context.Background(), db, emailSend, email{To: "ada@example.com"}, relay.Queue(name)); err != nil {
		t.Fatal(err)
	}
	srv := dashboard(t, db, relayui.Options{})
	c := browserlessClient(t)
	overview, _ := get(t, c, srv.URL+prefix+"/")
	link := regexp.MustCompile(`href="(` + prefix + `/queues/[^"]+)"`).FindStringSubmatch(overview)
	if link == nil {
		t.Fatalf("the overview links to no queue:\n%s", overview)
	}
	page, token := get(t, c, srv.URL+link[1])
	if !strings.Contains(page, "<h1>tenant/eu?x=1 #a") {
		t.Errorf("the queue's page (%s) is not the page of %q", link[1], name)
	}
	if got := post(t, c, srv.URL+link[1]+"/pause", url.Values{"csrf_token": {token}}); got != http.StatusSeeOther {
		t.Errorf("pause: %d, want 303", got)
	}
	if q, err := relay.GetQueue(context.Background(), db, name); err != nil || !q.Paused {
		t.Errorf("after pause: %+v, %v; want paused", q, err)
	}
}
