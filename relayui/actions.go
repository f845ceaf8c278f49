package relayui

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"

	"github.com/relayq/relay"
)

// maxBulk is the most jobs one bulk action changes. Until relay has bulk statements
// (issue 14: RetryJobs, CancelJobs, DeleteJobs by ListFilter), a bulk action pages
// through ListJobs and changes the jobs one statement each.
const maxBulk = 1000

// actionFunc changes something and returns where to go next (a path inside the dashboard)
// and what to tell the operator there (a query of notice parameters).
type actionFunc func(r *http.Request) (next string, done url.Values, err error)

// action serves a state-changing request: refused in read-only mode and without a valid
// CSRF token, then redirected (303) to the page that shows its result.
func (u *ui) action(fn actionFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := u.newView(w, r)
		if u.opts.ReadOnly {
			u.fail(w, r, v, errorf(http.StatusForbidden, "The dashboard is read-only: it changes nothing."))
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
	case errors.Is(err, relay.ErrJobNotFound):
		return errorf(http.StatusNotFound, "%v", err)
	case errors.Is(err, relay.ErrJobNotRetryable), errors.Is(err, relay.ErrJobFinished), errors.Is(err, relay.ErrUniqueKeyHeld):
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

// bulkActions are the actions that apply to every job a filter keeps.
// Placeholder (issue 14): "delete", by relay's DeleteJobs.
var bulkActions = map[string]string{"retry": "Retry", "cancel": "Cancel"}

type bulkData struct {
	Action, Verb string
	Filter       filterForm
	Back         template.URL // the jobs page with the filter (built by url.Values.Encode)
	Count        int
	More         bool // more than maxBulk jobs match
	Max          int
}

// bulkConfirm counts the jobs a bulk action would change and asks for confirmation.
func (u *ui) bulkConfirm(r *http.Request, v *view) error {
	q := r.URL.Query()
	action := q.Get("action")
	verb, ok := bulkActions[action]
	if !ok {
		return errorf(http.StatusBadRequest, "%q is not a bulk action; use retry or cancel", action)
	}
	v.Title, v.Nav, v.Template = verb+" jobs", "jobs", "bulk.html"
	form, f, err := parseFilter(q)
	if err != nil {
		return err
	}
	form.After, f.After = "", ""
	n, more, err := u.eachMatching(r, f, func(*relay.JobRecord) error { return nil })
	if err != nil {
		return actionError(err)
	}
	v.Data = bulkData{Action: action, Verb: verb, Filter: form, Back: template.URL(u.path("/jobs") + "?" + form.query(nil).Encode()), Count: n, More: more, Max: maxBulk}
	return nil
}

// bulkRun applies a bulk action to the jobs its filter keeps now (at most maxBulk). Jobs
// the action does not apply to (a finished job to cancel) are counted as skipped.
func (u *ui) bulkRun(r *http.Request) (string, url.Values, error) {
	action := r.PostFormValue("action")
	if _, ok := bulkActions[action]; !ok {
		return "", nil, errorf(http.StatusBadRequest, "%q is not a bulk action; use retry or cancel", action)
	}
	form, f, err := parseFilter(r.PostForm)
	if err != nil {
		return "", nil, err
	}
	f.After = ""
	done, skipped := 0, 0
	_, _, err = u.eachMatching(r, f, func(j *relay.JobRecord) error {
		var err error
		if action == "retry" {
			err = relay.Retry(r.Context(), u.db, j.ID, u.schema)
		} else {
			err = relay.Cancel(r.Context(), u.db, j.ID, u.schema)
		}
		switch {
		case err == nil:
			done++
		case errors.Is(err, relay.ErrJobNotRetryable), errors.Is(err, relay.ErrJobFinished),
			errors.Is(err, relay.ErrJobNotFound), errors.Is(err, relay.ErrUniqueKeyHeld):
			skipped++
		default:
			return err
		}
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("bulk %s after %d jobs: %w", action, done, err)
	}
	q := form.query(map[string]string{"done": "bulk-" + action, "n": strconv.Itoa(done), "skipped": strconv.Itoa(skipped)})
	return "/jobs", q, nil
}

// eachMatching calls fn for each job f keeps, newest first, at most maxBulk, and says how
// many it called fn for and whether more jobs matched.
func (u *ui) eachMatching(r *http.Request, f relay.ListFilter, fn func(*relay.JobRecord) error) (n int, more bool, err error) {
	f.Limit = min(maxBulk, relay.MaxListLimit)
	for {
		page, err := relay.ListJobs(r.Context(), u.db, f, u.schema)
		if err != nil {
			return n, false, err
		}
		for _, j := range page.Jobs {
			if n == maxBulk {
				return n, true, nil
			}
			if err := fn(j); err != nil {
				return n, false, err
			}
			n++
		}
		if page.Next == "" || n == maxBulk {
			return n, page.Next != "", nil
		}
		f.After = page.Next
	}
}

func jobs(n int) string {
	if n == 1 {
		return "1 job"
	}
	return fmt.Sprintf("%d jobs", n)
}

// notices are what the page an action leads to says it did.
var notices = map[string]string{
	"retried":   "The job will run again now.",
	"cancelled": "The job is cancelled.",
	"paused":    "The queue is paused: running jobs finish, no new ones start.",
	"resumed":   "The queue is resumed.",
	"saved":     "The queue's settings are saved; every client follows them now.",
}

// notice is what to tell the operator about the action that led to the page q asks for.
func notice(q url.Values) string {
	done := q.Get("done")
	if s, ok := notices[done]; ok {
		return s
	}
	verb := map[string]string{"bulk-retry": "Retried", "bulk-cancel": "Cancelled"}[done]
	if verb == "" {
		return ""
	}
	n, _ := strconv.Atoi(q.Get("n"))
	skipped, _ := strconv.Atoi(q.Get("skipped"))
	s := fmt.Sprintf("%s %s.", verb, jobs(n))
	if skipped > 0 {
		s += fmt.Sprintf(" Skipped %s that had changed state meanwhile.", jobs(skipped))
	}
	return s
}
