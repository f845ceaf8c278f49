package relayui

import (
	"context"
	"errors"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/store"
)

// What the overview and queue pages read of recent jobs.
const (
	rateWindow     = 5 * time.Minute // jobs per minute are counted over this
	maxRecent      = 100_000         // at most this many of the newest jobs are read for it
	chartWindow    = time.Hour       // the queue page's charts
	chartStep      = time.Minute     // one bar per minute
	maxChartJobs   = 50_000          // per finished state
	maxClients     = 200             // the clients page
	maxBlockedKeys = 100             // the queue page
	jobsPageSize   = 50              // the jobs page
	argsPreviewLen = 90              // runes of args shown in a listing
)

// states are the job states in the order the dashboard shows them (relay's own order):
// held jobs, reservations not yet committed, come with the other unfinished ones.
var states = []relay.JobState{
	relay.StatePending, relay.StateScheduled, relay.StateRunning, relay.StateHeld,
	relay.StateSucceeded, relay.StateFailed, relay.StateCancelled,
}

// queueLine is a queue as the overview lists it.
type queueLine struct {
	store.DashboardQueue
	Counts relay.StateCounts
	PerMin string // jobs finished per minute over rateWindow
}

type overviewData struct {
	Queues      []queueLine
	Totals      relay.StateCounts
	CountedAt   time.Time
	Clients     []store.ClientRow // the live ones
	RateWindow  time.Duration
	FinishedNow int64 // over every queue, within RateWindow
	PerMin      string
}

func (u *ui) overview(r *http.Request, v *view) error {
	v.Title, v.Nav, v.Template, v.Refresh = "Overview", "overview", "overview.html", true
	ctx := r.Context()
	counts, countedAt, err := u.jobCounts(r)
	if err != nil {
		return err
	}
	rows, err := u.store.DashboardQueues(ctx, u.db, "", rateWindow, maxRecent)
	if err != nil {
		return err
	}
	clients, err := u.store.Clients(ctx, u.db, maxClients)
	if err != nil {
		return err
	}
	d := overviewData{Totals: counts.All, CountedAt: countedAt, RateWindow: rateWindow}
	seen := map[string]bool{}
	for _, q := range rows {
		seen[q.Name] = true
		d.Queues = append(d.Queues, queueLine{DashboardQueue: q, Counts: counts.Queues[q.Name], PerMin: rate(q.Finished, rateWindow)})
		d.FinishedNow += q.Finished
	}
	for name, c := range counts.Queues {
		if !seen[name] {
			d.Queues = append(d.Queues, queueLine{DashboardQueue: store.DashboardQueue{Name: name, OnFailure: string(relay.BlockOnFailure)}, Counts: c, PerMin: "0"})
		}
	}
	slices.SortFunc(d.Queues, func(a, b queueLine) int { return compareStrings(a.Name, b.Name) })
	d.PerMin = rate(d.FinishedNow, rateWindow)
	for _, c := range clients {
		if c.Alive {
			d.Clients = append(d.Clients, c)
		}
	}
	v.Data = d
	return nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// jobCounts returns the counts of every queue, counted about CountInterval ago.
func (u *ui) jobCounts(r *http.Request) (*relay.JobCounts, time.Time, error) {
	return u.counts.get(r.Context(), func(ctx context.Context) (*relay.JobCounts, error) {
		return relay.CountJobs(ctx, u.db, u.schema)
	})
}

type queueData struct {
	store.DashboardQueue
	Counts      relay.StateCounts
	CountedAt   time.Time
	PerMin      string
	BlockedKeys []store.BlockedKey
	Throughput  chart
	Latency     chart
}

func (u *ui) queue(r *http.Request, v *view) error {
	name := r.PathValue("name")
	v.Title, v.Nav, v.Template, v.Refresh = "Queue "+name, "overview", "queue.html", true
	ctx := r.Context()
	rows, err := u.store.DashboardQueues(ctx, u.db, name, rateWindow, maxRecent)
	if err != nil {
		return err
	}
	// A queue without settings, unfinished or recent jobs reads as plain and idle.
	d := queueData{DashboardQueue: store.DashboardQueue{Name: name, OnFailure: string(relay.BlockOnFailure)}}
	if len(rows) == 1 {
		d.DashboardQueue = rows[0]
	}
	counts, countedAt, err := u.jobCounts(r)
	if err != nil {
		return err
	}
	d.Counts, d.CountedAt, d.PerMin = counts.Queues[name], countedAt, rate(d.Finished, rateWindow)
	buckets, err := u.store.Throughput(ctx, u.db, name, chartWindow, chartStep, maxChartJobs)
	if err != nil {
		return err
	}
	d.Throughput, d.Latency = throughputChart(buckets), latencyChart(buckets)
	if d.Blocked > 0 {
		if d.BlockedKeys, err = u.store.BlockedKeys(ctx, u.db, name, maxBlockedKeys); err != nil {
			return err
		}
		if u.opts.Redact != nil {
			// The last error of a blocking job is shown: Redact sees it as the job's.
			for i, k := range d.BlockedKeys {
				j := &relay.JobRecord{ID: k.JobID, Kind: k.Kind, Queue: name, State: relay.StateFailed, Blocking: true,
					Attempts: []relay.Attempt{{Error: k.Error}}}
				u.opts.Redact(j)
				d.BlockedKeys[i].Error = ""
				if len(j.Attempts) > 0 {
					d.BlockedKeys[i].Error = j.Attempts[len(j.Attempts)-1].Error
				}
			}
		}
	}
	v.Data = d
	return nil
}

// bulkLink leads to the confirmation page of a bulk action.
type bulkLink struct {
	Action, Verb string
	Link         template.URL
}

type jobsData struct {
	Filter filterForm
	Jobs   []*relay.JobRecord
	// Links built from the filter by url.Values.Encode, so safe as URLs.
	Next   template.URL // the next page; "" on the last
	First  template.URL // the first page, if this is not it
	Bulk   []bulkLink   // the bulk actions that apply to the filter's states
	Queues []string
	States []relay.JobState
}

func (u *ui) jobs(r *http.Request, v *view) error {
	v.Title, v.Nav, v.Template = "Jobs", "jobs", "jobs.html"
	form, f, err := parseFilter(r.URL.Query())
	if err != nil {
		return err
	}
	f.Limit = jobsPageSize
	page, err := relay.ListJobs(r.Context(), u.db, f, u.schema)
	if errors.Is(err, relay.ErrInvalidFilter) {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	if err != nil {
		return err
	}
	for _, j := range page.Jobs {
		u.redact(j)
	}
	link := func(p string, extra map[string]string) template.URL {
		return template.URL(u.path(p) + "?" + form.query(extra).Encode())
	}
	d := jobsData{Filter: form, Jobs: page.Jobs, States: states}
	for _, name := range bulkOrder {
		if _, applies := bulkFilter(bulkActions[name], f); applies {
			d.Bulk = append(d.Bulk, bulkLink{Action: name, Verb: bulkActions[name].Verb, Link: link("/bulk", map[string]string{"action": name})})
		}
	}
	if page.Next != "" {
		d.Next = link("/jobs", map[string]string{"after": string(page.Next)})
	}
	if f.After != "" {
		d.First = link("/jobs", nil)
	}
	if d.Queues, err = u.store.QueueNames(r.Context(), u.db); err != nil {
		return err
	}
	v.Data = d
	return nil
}

func (u *ui) redact(j *relay.JobRecord) {
	if u.opts.Redact != nil {
		u.opts.Redact(j)
	}
}

type jobData struct {
	Job         *relay.JobRecord
	CanRetry    bool
	CanCancel   bool
	CanDelete   bool
	ArgsBinary  bool
	Unfinished  bool
	TimeoutText string
}

func (u *ui) job(r *http.Request, v *view) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return errorf(http.StatusNotFound, "%q is not a job id", r.PathValue("id"))
	}
	v.Title, v.Nav, v.Template = "Job "+strconv.FormatInt(id, 10), "jobs", "job.html"
	j, err := relay.GetJob(r.Context(), u.db, id, u.schema)
	if errors.Is(err, relay.ErrJobNotFound) {
		return errorf(http.StatusNotFound, "There is no job %d (in schema %q).", id, u.opts.Schema)
	}
	if err != nil {
		return err
	}
	u.redact(j)
	d := jobData{
		Job:        j,
		CanRetry:   (j.State == relay.StateFailed || j.State == relay.StateCancelled) && !neverCommitted(j),
		CanCancel:  j.State == relay.StatePending || j.State == relay.StateScheduled || j.State == relay.StateRunning || j.State == relay.StateHeld || j.Blocking,
		CanDelete:  j.State != relay.StateRunning, // relay.DeleteJob refuses a running job
		ArgsBinary: j.Payload != nil,
		Unfinished: j.FinishedAt.IsZero(),
	}
	if j.Timeout != nil {
		d.TimeoutText = "none"
		if *j.Timeout > 0 {
			d.TimeoutText = humanDuration(*j.Timeout)
		}
	}
	v.Data = d
	return nil
}

// neverCommitted reports whether j is a reservation that expired or was cancelled while
// held: [relay.Retry] refuses it, as its producer decided it must not run.
func neverCommitted(j *relay.JobRecord) bool {
	return !j.HeldUntil.IsZero() && j.CommittedAt.IsZero()
}

func (u *ui) clients(r *http.Request, v *view) error {
	v.Title, v.Nav, v.Template, v.Refresh = "Clients", "clients", "clients.html", true
	cs, err := u.store.Clients(r.Context(), u.db, maxClients)
	if err != nil {
		return err
	}
	v.Data = cs
	return nil
}
