package relayui

import (
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/relayq/relay"
)

// formTime is how a datetime-local input sends a time; the dashboard reads it as UTC.
const formTime = "2006-01-02T15:04"

// filterForm is the jobs page's filter as the form holds it.
type filterForm struct {
	States      []relay.JobState
	Queue, Kind string
	From, To    string // formTime, UTC
	After       string // the cursor of this page
}

// Has reports whether s is one of the states the filter keeps.
func (f filterForm) Has(s relay.JobState) bool { return slices.Contains(f.States, s) }

// Empty reports whether the filter keeps every job.
func (f filterForm) Empty() bool {
	return len(f.States) == 0 && f.Queue == "" && f.Kind == "" && f.From == "" && f.To == ""
}

// parseFilter reads the filter of the jobs page and of the bulk actions from q.
func parseFilter(q url.Values) (filterForm, relay.ListFilter, error) {
	form := filterForm{Queue: q.Get("queue"), Kind: q.Get("kind"), From: q.Get("from"), To: q.Get("to"), After: q.Get("after")}
	f := relay.ListFilter{Queue: form.Queue, Kind: form.Kind, After: relay.Cursor(form.After)}
	for _, s := range q["state"] {
		st := relay.JobState(s)
		if !slices.Contains(states, st) {
			return form, f, errorf(http.StatusBadRequest, "%q is not a job state; use one of %v", s, states)
		}
		if !slices.Contains(form.States, st) {
			form.States = append(form.States, st)
		}
	}
	f.States = form.States
	for _, t := range []struct {
		text string
		into *time.Time
	}{{form.From, &f.From}, {form.To, &f.To}} {
		if t.text == "" {
			continue
		}
		parsed, err := time.Parse(formTime, t.text)
		if err != nil {
			return form, f, errorf(http.StatusBadRequest, "%q is not a time of the form %s", t.text, "2026-01-31T13:45")
		}
		*t.into = parsed
	}
	return form, f, nil
}

// query is the filter as a URL query, with extra parameters added (the page cursor is
// left out unless extra names it).
func (f filterForm) query(extra map[string]string) url.Values {
	q := url.Values{}
	for _, s := range f.States {
		q.Add("state", string(s))
	}
	for k, v := range map[string]string{"queue": f.Queue, "kind": f.Kind, "from": f.From, "to": f.To} {
		if v != "" {
			q.Set(k, v)
		}
	}
	for k, v := range extra {
		q.Set(k, v)
	}
	return q
}
