package relayui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
	"github.com/relayq/relay/relayui"
)

// A bulk action counts, and changes, only the jobs in the states it applies to; it is
// not offered for a filter that keeps none of them; and its notice says how many of those
// counted had changed state by the time it ran.
func TestBulkActionsCountWhatTheyChange(t *testing.T) {
	t.Parallel()
	db := relaytest.NewDB(t)
	cancelled := []int64{failedJob(t, db), failedJob(t, db)}
	pending, err := relay.Enqueue(context.Background(), db, emailSend, email{To: "bo@example.com"}, relay.Queue("nobody"))
	if err != nil {
		t.Fatal(err)
	}
	base := dashboard(t, db, relayui.Options{}).URL + prefix
	c := browserlessClient(t)

	page, _ := get(t, c, base+"/bulk?action=retry&queue=nobody")
	if !strings.Contains(page, "<strong>2</strong> jobs match") {
		t.Errorf("the bulk retry of queue nobody does not count its 2 cancelled jobs (and not the pending one):\n%s", page)
	}
	page, _ = get(t, c, base+"/bulk?action=cancel&queue=nobody&state=cancelled")
	if !strings.Contains(page, "Cancel applies to none of the chosen states") || strings.Contains(page, `method="post"`) {
		t.Errorf("the bulk cancel of cancelled jobs is offered:\n%s", page)
	}
	jobsPage, _ := get(t, c, base+"/jobs?queue=nobody&state=cancelled")
	if strings.Contains(jobsPage, "bulk-cancel") || !strings.Contains(jobsPage, "bulk-retry") || !strings.Contains(jobsPage, "bulk-delete") {
		t.Errorf("the cancelled jobs' page offers the wrong bulk actions")
	}

	// One of the counted jobs is retried meanwhile: the bulk retry changes the other.
	if err := relay.Retry(context.Background(), db, cancelled[0]); err != nil {
		t.Fatal(err)
	}
	_, token := get(t, c, fmt.Sprintf("%s/jobs/%d", base, pending))
	resp, err := c.PostForm(base+"/bulk", url.Values{"csrf_token": {token}, "action": {"retry"}, "queue": {"nobody"}, "counted": {"2"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("bulk retry: %s, want 303", resp.Status)
	}
	after, _ := get(t, c, base[:len(base)-len(prefix)]+resp.Header.Get("Location"))
	if !strings.Contains(after, "Retried 1 job. The other 1 job counted had changed state meanwhile") {
		t.Errorf("the notice after the bulk retry does not say what it did:\n%s", after)
	}
	for _, id := range append(cancelled, pending) {
		if s := jobState(t, db, id); s != relay.StatePending {
			t.Errorf("job %d is %s after the bulk retry, want pending", id, s)
		}
	}
}
