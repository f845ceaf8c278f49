package relayui

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/relayq/relay"
)

// maxBulk is the most jobs one bulk action changes, newest first: relay changes them a
// page of 1,000 at a time, each page committed on its own, and the request waits for
// all of them.
const maxBulk = 10_000

// actionFunc changes something and returns where to go next (a path inside the dashboard)
// and what to tell the operator there (a query of notice parameters).
type actionFunc func(r *http.Request) (next string, done url.Values, err error)

// errReadOnly refuses an action of a read-only dashboard.
var errReadOnly = errorf(http.StatusForbidden, "The dashboard is read-only: it changes nothing.")

// action serves a state-changing request: refused in read-only mode and without a valid
// CSRF token, then redirected (303) to the page that shows its result.
func (u *ui) action(fn actionFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := u.newView(w, r)
		if u.opts.ReadOnly {
			u.fail(w, r, v, errReadOnly)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if !u.csrf.valid(r) {
			u.fail(w, r, v, errorf(http.StatusForbidden, "The form's security token is missing or stale: reload the page and try again."))
			return
		}
		next, done, err := fn(r)
		if err != nil {
			u.fail(w, r, v, actionError(err))
			return
		}
		u.counts.forget()
		if len(done) > 0 {
			next += "?" + done.Encode()
		}
		http.Redirect(w, r, u.path(next), http.StatusSeeOther)
	}
}

// actionError gives the errors an operator can cause their status and message.
func actionError(err error) error {
	switch {
	case errors.Is(err, relay.ErrJobNotFound), errors.Is(err, relay.ErrScheduleNotFound):
		return errorf(http.StatusNotFound, "%v", err)
	case errors.Is(err, relay.ErrJobNotRetryable), errors.Is(err, relay.ErrJobFinished), errors.Is(err, relay.ErrUniqueKeyHeld),
		errors.Is(err, relay.ErrJobRunning), errors.Is(err, relay.ErrScheduleInUse):
		return errorf(http.StatusConflict, "%v", err)
	case errors.Is(err, relay.ErrInvalidConfig), errors.Is(err, relay.ErrInvalidJob), errors.Is(err, relay.ErrInvalidFilter):
		return errorf(http.StatusBadRequest, "%v", err)
	}
	return err
}

func jobID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, errorf(http.StatusNotFound, "%q is not a job id", r.PathValue("id"))
	}
	return id, nil
}

// jobAction is the action do on the job of the request's path, then its page.
func (u *ui) jobAction(do func(r *http.Request, id int64) error, done string) actionFunc {
	return func(r *http.Request) (string, url.Values, error) {
		id, err := jobID(r)
		if err != nil {
			return "", nil, err
		}
		if err := do(r, id); err != nil {
			return "", nil, err
		}
		return "/jobs/" + strconv.FormatInt(id, 10), url.Values{"done": {done}}, nil
	}
}

// queueAction is the action do on the queue of the request's path, then its page.
func (u *ui) queueAction(do func(r *http.Request, queue string) error, done string) actionFunc {
	return func(r *http.Request) (string, url.Values, error) {
		name := r.PathValue("name")
		if err := do(r, name); err != nil {
			return "", nil, err
		}
		return queueRel(name), url.Values{"done": {done}}, nil
	}
}

func (u *ui) retryJob(r *http.Request, id int64) error {
	return relay.Retry(r.Context(), u.db, id, u.schema)
}
func (u *ui) cancelJob(r *http.Request, id int64) error {
	return relay.Cancel(r.Context(), u.db, id, u.schema)
}

// deleteJob deletes the job of the request's path, then shows the jobs page: the job's
// own is gone.
func (u *ui) deleteJob(r *http.Request) (string, url.Values, error) {
	id, err := jobID(r)
	if err != nil {
		return "", nil, err
	}
	if err := relay.DeleteJob(r.Context(), u.db, id, u.schema); err != nil {
		return "", nil, err
	}
	return "/jobs", url.Values{"done": {"deleted"}, "id": {strconv.FormatInt(id, 10)}}, nil
}

// deleteSchedule deletes the orphaned schedule of the request's path; relay refuses one
// that a live client has.
func (u *ui) deleteSchedule(r *http.Request) (string, url.Values, error) {
	if err := relay.DeleteSchedule(r.Context(), u.db, r.PathValue("name"), u.schema); err != nil {
		return "", nil, err
	}
	return "/periodic", url.Values{"done": {"unscheduled"}}, nil
}

func (u *ui) pauseQueue(r *http.Request, q string) error {
	return relay.PauseQueue(r.Context(), u.db, q, u.schema)
}
func (u *ui) resumeQueue(r *http.Request, q string) error {
	return relay.ResumeQueue(r.Context(), u.db, q, u.schema)
}

func (u *ui) setQueue(r *http.Request, q string) error {
	limit := 0
	if s := r.PostFormValue("global_limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errorf(http.StatusBadRequest, "The global limit %q is not a whole number of 0 or more (0: none).", s)
		}
		limit = n
	}
	return relay.SetQueue(r.Context(), u.db, q, relay.QueueSettings{
		Ordered:     r.PostFormValue("ordered") == "on",
		OnFailure:   relay.FailurePolicy(r.PostFormValue("on_failure")),
		GlobalLimit: limit,
	}, u.schema)
}

// bulkAction is an action on every job a filter selects, by one of relay's bulk
// functions, which count the jobs first with [relay.DryRun].
type bulkAction struct {
	Verb    string // "Retry"
	Did     string // "Retried", for the notice
	Applies []relay.JobState
	run     func(context.Context, relay.DB, relay.ListFilter, ...relay.BulkOption) (int64, error)
	Hint    string // what the confirmation page says it does
}

// bulkActions are the bulk actions by the name their form sends.
var bulkActions = map[string]bulkAction{
	"retry": {Verb: "Retry", Did: "Retried", run: relay.RetryJobs,
		Applies: []relay.JobState{relay.StateFailed, relay.StateCancelled},
		Hint:    "Failed and cancelled jobs run again now; jobs in other states, and reservations that were never committed, are left alone."},
	"cancel": {Verb: "Cancel", Did: "Cancelled", run: relay.CancelJobs,
		Applies: []relay.JobState{relay.StatePending, relay.StateScheduled, relay.StateRunning, relay.StateHeld},
		Hint:    "Pending, scheduled, running and held jobs are cancelled (running handlers are told at once, reservations are given up); finished jobs are left alone."},
	"delete": {Verb: "Delete", Did: "Deleted", run: relay.DeleteJobs,
		Applies: []relay.JobState{relay.StatePending, relay.StateScheduled, relay.StateHeld, relay.StateSucceeded, relay.StateFailed, relay.StateCancelled},
		Hint:    "Jobs are deleted for good, with their args, attempts and output; running jobs are left alone (cancel them first)."},
}

// bulkOrder is the order the jobs page shows the bulk actions in.
var bulkOrder = []string{"retry", "cancel", "delete"}

// bulkFilter is f narrowed to the states action applies to; ok is false if the filter
// keeps only states it does not apply to. Without states, relay's bulk functions take
// every state they apply to.
func bulkFilter(action bulkAction, f relay.ListFilter) (narrowed relay.ListFilter, ok bool) {
	f.After = ""
	if len(f.States) == 0 {
		return f, true
	}
	var keep []relay.JobState
	for _, s := range f.States {
		if slices.Contains(action.Applies, s) {
			keep = append(keep, s)
		}
	}
	f.States = keep
	return f, len(keep) > 0
}

// bulkRequest is a bulk action and the filter it applies to, as a request asks for it.
type bulkRequest struct {
	name    string
	action  bulkAction
	form    filterForm
	filter  relay.ListFilter // narrowed by bulkFilter
	applies bool             // the filter keeps a state the action applies to
}

// readBulk reads a bulk action's name and filter from q.
func readBulk(q url.Values) (bulkRequest, error) {
	b := bulkRequest{name: q.Get("action")}
	var ok bool
	if b.action, ok = bulkActions[b.name]; !ok {
		return b, errorf(http.StatusBadRequest, "%q is not a bulk action; use retry, cancel or delete", b.name)
	}
	form, f, err := parseFilter(q)
	if err != nil {
		return b, err
	}
	form.After = ""
	b.form = form
	b.filter, b.applies = bulkFilter(b.action, f)
	return b, nil
}

type bulkData struct {
	Action string
	bulkAction
	Filter  filterForm
	Back    template.URL // the jobs page with the filter (built by url.Values.Encode)
	Count   int64
	More    bool // more than maxBulk jobs match
	Max     int
	Applies bool // the filter keeps a state the action applies to
}

// bulkConfirm counts the jobs a bulk action would change and asks for confirmation.
func (u *ui) bulkConfirm(r *http.Request, v *view) error {
	if u.opts.ReadOnly {
		return errReadOnly
	}
	b, err := readBulk(r.URL.Query())
	if err != nil {
		return err
	}
	v.Title, v.Nav, v.Template = b.action.Verb+" jobs", "jobs", "bulk.html"
	var n int64
	if b.applies {
		// One more than the action changes, to learn whether more match: the count stops
		// there, so it costs a bounded range of an index however many jobs match.
		b.filter.Limit = maxBulk + 1
		if n, err = b.action.run(r.Context(), u.db, b.filter, relay.DryRun(), u.schema); err != nil {
			return actionError(err)
		}
	}
	v.Data = bulkData{
		Action: b.name, bulkAction: b.action, Filter: b.form, Count: min(n, maxBulk), More: n > maxBulk, Max: maxBulk,
		Applies: b.applies, Back: template.URL(u.path("/jobs") + "?" + b.form.query(nil).Encode()),
	}
	return nil
}

// bulkRun applies a bulk action to the jobs its filter selects now, the newest maxBulk
// at most. Jobs that changed state since they were counted are left alone, and the
// notice says how many.
func (u *ui) bulkRun(r *http.Request) (string, url.Values, error) {
	if err := r.ParseForm(); err != nil {
		return "", nil, errorf(http.StatusBadRequest, "The form could not be read: %v", err)
	}
	b, err := readBulk(r.PostForm)
	if err != nil {
		return "", nil, err
	}
	var n int64
	if b.applies {
		b.filter.Limit = maxBulk
		if n, err = b.action.run(r.Context(), u.db, b.filter, u.schema); err != nil {
			return "", nil, fmt.Errorf("bulk %s: %w", b.name, actionError(err))
		}
	}
	q := b.form.query(map[string]string{"done": "bulk-" + b.name, "n": strconv.FormatInt(n, 10)})
	if counted := r.PostFormValue("counted"); counted != "" {
		q.Set("counted", counted)
	}
	return "/jobs", q, nil
}

func jobs(n int) string {
	if n == 1 {
		return "1 job"
	}
	return fmt.Sprintf("%d jobs", n)
}

// notices are what the page an action leads to says it did.
var notices = map[string]string{
	"retried":     "The job will run again now.",
	"cancelled":   "The job is cancelled.",
	"paused":      "The queue is paused: running jobs finish, no new ones start.",
	"resumed":     "The queue is resumed.",
	"saved":       "The queue's settings are saved; every client follows them now.",
	"unscheduled": "The schedule is deleted. Its jobs stay; a client started with it registers it anew.",
}

// notice is what to tell the operator about the action that led to the page q asks for.
func notice(q url.Values) string {
	done := q.Get("done")
	if id, err := strconv.ParseInt(q.Get("id"), 10, 64); done == "deleted" && err == nil {
		return fmt.Sprintf("Job %d is deleted.", id)
	}
	if s, ok := notices[done]; ok {
		return s
	}
	name, ok := strings.CutPrefix(done, "bulk-")
	action, known := bulkActions[name]
	if !ok || !known {
		return ""
	}
	n, _ := strconv.Atoi(q.Get("n"))
	counted, _ := strconv.Atoi(q.Get("counted"))
	s := fmt.Sprintf("%s %s.", action.Did, jobs(n))
	if counted > n {
		s += fmt.Sprintf(" The other %s counted had changed state meanwhile, and were left alone.", jobs(counted-n))
	}
	return s
}
