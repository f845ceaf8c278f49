package relay

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/relayq/relay/internal/store"
)

// ErrInvalidFilter is returned by [ListJobs] (and the bulk actions [DeleteJobs],
// [RetryJobs], [CancelJobs]) for a [ListFilter] it cannot serve: an
// unknown state, a queue or kind that is over-long or not storable text, a time range that
// ends before it begins or a time outside PostgreSQL's range, a limit out of range, or a
// malformed [Cursor]. Nothing is sent to the database.
var ErrInvalidFilter = errors.New("relay: invalid job filter")

// Page sizes of [ListJobs].
const (
	DefaultListLimit = 100  // jobs per page when ListFilter.Limit is 0
	MaxListLimit     = 1000 // the largest ListFilter.Limit
)

// ListFilter selects the jobs [ListJobs] returns. The zero value selects every job. Each
// field that is set narrows the selection; a job must match all of them.
type ListFilter struct {
	Queue string // only jobs of this queue; "" for any
	Kind  string // only jobs of this kind; "" for any
	// States keeps the jobs in any of these states; empty for every state.
	// [StatePending] means due pending jobs and [StateScheduled] pending jobs whose run_at
	// is later than now (on the database's clock), as [JobRecord.State] says them.
	States []JobState
	// From and To keep the jobs created (JobRecord.CreatedAt, the time the enqueueing
	// transaction began) at or after From and before To. A zero time leaves that side open.
	From, To time.Time
	// Limit is the most jobs one page holds: 0 for [DefaultListLimit], at most
	// [MaxListLimit].
	Limit int
	// After continues a listing: pass the Next of the previous [JobPage]. Empty for the
	// first page.
	After Cursor
	// WithArgs makes each record carry the job's values: Args, Checkpoint, Output, Payload
	// and Metadata. Without it they are nil — left out of the statement itself, so a page costs
	// the same whatever the jobs carry — and [JobRecord].Sizes says how large they are.
	WithArgs bool
}

// Cursor marks where a listing stopped: [JobPage.Next], passed back as [ListFilter.After].
// It is opaque; it stays valid however the table changes.
type Cursor string

// JobPage is one page of [ListJobs].
type JobPage struct {
	// Jobs are newest (highest id) first. Each is as [GetJob] returns it.
	Jobs []*JobRecord
	// Next continues the listing after the last of Jobs; it is empty when no job that
	// matches the filter is left.
	Next Cursor
}

// ListJobs returns the newest jobs that f selects, newest (highest id) first, one page at
// a time: f.After continues where the previous page's [JobPage.Next] left off. Pages are
// keyed by job id, so paging never repeats a job, nor skips one that matched all along:
// jobs enqueued after a page was read have higher ids than its jobs and appear only in a
// new listing, and a job that changes state between two pages is listed where the filter
// finds it when its page is read. Each page is read by one statement, from one snapshot, and its records are those
// [GetJob] returns, but for the job's values (args, checkpoint, output, payload), which
// are left out unless f.WithArgs asks for them.
//
// What a page reads, however many finished jobs the table keeps:
//   - with neither f.Queue nor f.States: the primary key, newest first;
//   - finished jobs (succeeded, failed, cancelled) of f.Queue: one newest-first range of
//     the index jobs_finished_idx per state;
//   - finished jobs of every queue: two index probes per queue that holds jobs in the
//     state, then such ranges of at most f.Limit queues;
//   - pending, scheduled, running and held jobs: the claim, lease and held indexes, which
//     hold only them; they are sorted by id, so a page costs what the unfinished jobs (of
//     f.Queue, if set) number.
//
// f.Kind, f.From and f.To are checked entry by entry (on the index entry itself, for
// finished jobs): a page reads as many entries as it takes to find f.Limit matches or to
// run out of them, so a kind or time range that matches few of many jobs in the selected
// states and queue costs a read of them all.
//
// An invalid filter returns an error wrapping [ErrInvalidFilter]. opts: [Schema].
func ListJobs(ctx context.Context, db DB, f ListFilter, opts ...JobOption) (*JobPage, error) {
	if err := checkDB(db, "ListJobs"); err != nil {
		return nil, err
	}
	sf, err := f.validate()
	if err != nil {
		return nil, err
	}
	s, err := jobStore(opts)
	if err != nil {
		return nil, err
	}
	recs, err := s.ListJobs(ctx, db, sf)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	page := &JobPage{Jobs: make([]*JobRecord, 0, min(len(recs), sf.Limit))}
	for i, r := range recs {
		if i == sf.Limit {
			// ListJobs reads one job more than the page holds: there is a next page.
			page.Next = newCursor(page.Jobs[i-1].ID)
			break
		}
		page.Jobs = append(page.Jobs, newJobRecord(r))
	}
	return page, nil
}

var allStates = []JobState{StatePending, StateScheduled, StateRunning, StateHeld, StateSucceeded, StateFailed, StateCancelled}

// validate checks f as a page of ListJobs and returns it as the store takes it.
func (f ListFilter) validate() (store.ListFilter, error) {
	sf, err := f.selection()
	if err != nil {
		return sf, err
	}
	sf.Limit = f.Limit
	switch {
	case f.Limit == 0:
		sf.Limit = DefaultListLimit
	case f.Limit < 0 || f.Limit > MaxListLimit:
		return sf, fmt.Errorf("%w: Limit must be between 1 and %d (0 for %d), got %d", ErrInvalidFilter, MaxListLimit, DefaultListLimit, f.Limit)
	}
	return sf, nil
}

// selection checks which jobs f selects — all of it but its page size, f.Limit — and
// returns it as the store takes it.
func (f ListFilter) selection() (store.ListFilter, error) {
	sf := store.ListFilter{Queue: f.Queue, Kind: f.Kind, From: f.From, To: f.To, WithValues: f.WithArgs}
	for _, n := range []struct{ what, name string }{{"Queue", f.Queue}, {"Kind", f.Kind}} {
		if n.name != "" {
			if err := checkName(ErrInvalidFilter, n.what, n.name); err != nil {
				return sf, err
			}
		}
	}
	for _, t := range []struct {
		what string
		t    time.Time
	}{{"From", f.From}, {"To", f.To}} {
		if !t.t.IsZero() {
			if err := checkTime(ErrInvalidFilter, t.what, t.t); err != nil {
				return sf, err
			}
		}
	}
	for _, st := range f.States {
		if !slices.Contains(allStates, st) {
			return sf, fmt.Errorf("%w: unknown state %q", ErrInvalidFilter, st)
		}
		if !slices.Contains(sf.States, string(st)) {
			sf.States = append(sf.States, string(st))
		}
	}
	if len(sf.States) == len(allStates) {
		sf.States = nil // every state: read the primary key rather than each state's index
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return sf, fmt.Errorf("%w: the time range from %v to %v is empty", ErrInvalidFilter, f.From, f.To)
	}
	if f.After != "" {
		id, err := f.After.id()
		if err != nil {
			return sf, err
		}
		sf.After = id
	}
	return sf, nil
}

// A Cursor is the id of the last job of a page, big-endian, in unpadded URL-safe base64,
// so that it can travel in a URL as it is.
func newCursor(id int64) Cursor {
	return Cursor(base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, uint64(id))))
}

func (c Cursor) id() (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(string(c))
	if err != nil || len(b) != 8 {
		return 0, fmt.Errorf("%w: %q is not a cursor of ListJobs", ErrInvalidFilter, string(c))
	}
	id := int64(binary.BigEndian.Uint64(b))
	if id <= 0 {
		return 0, fmt.Errorf("%w: %q is not a cursor of ListJobs", ErrInvalidFilter, string(c))
	}
	return id, nil
}

// StateCounts counts jobs by state. Pending counts due jobs only; Scheduled counts the
// pending jobs whose run_at is later than now, on the database's clock; Held counts the
// reservations not yet committed ([Reserved]).
type StateCounts struct {
	Pending, Scheduled, Running, Succeeded, Failed, Cancelled, Held int64
}

// Get returns the count of state s (0 for a state that is not one of the [JobState]
// constants).
func (c StateCounts) Get(s JobState) int64 {
	switch s {
	case StatePending:
		return c.Pending
	case StateScheduled:
		return c.Scheduled
	case StateRunning:
		return c.Running
	case StateSucceeded:
		return c.Succeeded
	case StateFailed:
		return c.Failed
	case StateCancelled:
		return c.Cancelled
	case StateHeld:
		return c.Held
	}
	return 0
}

// Total is the sum of all states.
func (c StateCounts) Total() int64 {
	return c.Pending + c.Scheduled + c.Running + c.Succeeded + c.Failed + c.Cancelled + c.Held
}

func (c *StateCounts) add(s JobState, n int64) {
	switch s {
	case StatePending:
		c.Pending += n
	case StateScheduled:
		c.Scheduled += n
	case StateRunning:
		c.Running += n
	case StateSucceeded:
		c.Succeeded += n
	case StateFailed:
		c.Failed += n
	case StateCancelled:
		c.Cancelled += n
	case StateHeld:
		c.Held += n
	}
}

// JobCounts is what [CountJobs] returns.
type JobCounts struct {
	// Queues holds the counts of every queue that holds any job.
	Queues map[string]StateCounts
	// All sums the counts of every queue.
	All StateCounts
}

// CountJobs counts the jobs of every queue by state, exactly, in one statement (so from
// one snapshot).
//
// Pending, scheduled, running and held jobs are counted from their small partial indexes: that
// part costs what the unfinished jobs number. Finished jobs are counted by an index-only
// scan of jobs_finished_idx, one (state, queue) range at a time: its cost grows with the
// number of finished jobs the table keeps (about 150 ms per 2 million on a 2-core
// machine), plus a visit to the table for each one on a page that VACUUM has not yet
// marked all-visible. A dashboard should count less often than it lists.
//
// opts: [Schema].
func CountJobs(ctx context.Context, db DB, opts ...JobOption) (*JobCounts, error) {
	if err := checkDB(db, "CountJobs"); err != nil {
		return nil, err
	}
	s, err := jobStore(opts)
	if err != nil {
		return nil, err
	}
	counts, err := s.CountJobs(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	jc := &JobCounts{Queues: map[string]StateCounts{}}
	for _, c := range counts {
		q := jc.Queues[c.Queue]
		q.add(JobState(c.State), c.N)
		jc.Queues[c.Queue] = q
		jc.All.add(JobState(c.State), c.N)
	}
	return jc, nil
}
