package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/relayq/relay/internal/fleet"
)

// drainedBelow is the backlog of due jobs under which a backlog counts as drained: what
// the steady load keeps waiting between two claims.
const drainedBelow = 20

// lateFloor is the least pickup counted as late when judging whether pickup is back to
// its baseline: on this kind of shared machine a job now and then waits tens of
// milliseconds for a CPU, with or without a fault.
const lateFloor = 100 * time.Millisecond

// lostLease is the reason of a rescued attempt.
const lostLease = "lost lease"

// notCommitted is how relay records the failure of an attempt whose CompleteTx
// transaction did not commit.
const notCommitted = "the transaction that called CompleteTx did not commit"

// attempt is one attempt of a job, as the database recorded it.
type attempt struct {
	job            int64
	started, ended time.Time // ended is zero for a job still running
	client         string
	reason, error  string
}

// jobRow is one job, as the database holds it at the end.
type jobRow struct {
	id      int64
	state   string
	effect  string
	created time.Time // its transaction's start
	// visible is when the producer's Commit returned, on the database's clock: created plus
	// the time from the transaction's start to that return (created for a job enqueued in
	// a batch). A worker can see the job only from then on.
	visible  time.Time
	finished time.Time
	attempts []attempt // in the order they started
}

// verify reads what became of every job and fills in the result.
func (r *run) verify(ctx context.Context) error {
	res := r.res
	jobs, err := r.readJobs(ctx)
	if err != nil {
		return fmt.Errorf("read the jobs: %w", err)
	}
	effects, err := r.readEffects(ctx)
	if err != nil {
		return fmt.Errorf("read the effects: %w", err)
	}
	p := r.prod
	p.mu.Lock()
	committed, uncertain := slices.Clone(p.committed), len(p.uncertain)
	for _, j := range jobs {
		j.visible = j.created.Add(p.commitLag[j.id])
	}
	p.mu.Unlock()
	res.Jobs, res.Uncertain = len(committed), uncertain
	res.FaultStart, res.FaultEnd = r.since(r.faultStart), r.since(r.faultEnd)

	byID := make(map[int64]*jobRow, len(jobs))
	for _, j := range jobs {
		byID[j.id] = j
	}
	for _, id := range committed {
		j, ok := byID[id]
		switch {
		case !ok:
			res.Lost++
			r.note("job %d was committed but is not in the table", id)
		case j.state != "succeeded":
			res.Lost++
			if j.state == "failed" {
				res.Failed++
			}
		}
	}
	res.Attempts = map[string]int{}
	var firstPickups, baseline, baselineVisible []time.Duration
	for _, j := range jobs {
		for _, a := range j.attempts {
			if a.reason != "" {
				res.Attempts[a.reason]++
			}
		}
		if n := effects[j.id]; n[fleet.EffectPlain] > 1 {
			res.DupPlain += n[fleet.EffectPlain] - 1
		}
		if n := effects[j.id]; n[fleet.EffectTx] > 1 {
			res.DupTx += n[fleet.EffectTx] - 1
		}
		if j.state == "succeeded" && j.effect != "" && effects[j.id][j.effect] == 0 {
			res.MissingEffects++
		}
		if len(j.attempts) == 0 {
			continue
		}
		pickup := j.attempts[0].started.Sub(j.created)
		firstPickups = append(firstPickups, pickup)
		if j.created.After(r.began.Add(r.s.t.warmup/4)) && j.created.Before(r.faultStart) {
			baseline = append(baseline, pickup)
			baselineVisible = append(baselineVisible, j.attempts[0].started.Sub(j.visible))
		}
		if j.state == "succeeded" {
			res.WorstEndToEndS = max(res.WorstEndToEndS, j.finished.Sub(j.created).Seconds())
		}
	}
	if len(firstPickups) > 0 {
		res.WorstPickupMs = ms(slices.Max(firstPickups))
	}
	if len(baseline) > 0 {
		slices.Sort(baseline)
		res.PickupP50Ms, res.PickupP99Ms = ms(quantile(baseline, 0.5)), ms(quantile(baseline, 0.99))
	}
	from := resumeFrom(r.faultStart, r.faultEnd, r.serverUp, jobs)
	r.resumed(jobs, from)
	r.pickupBack(jobs, from, baselineVisible)
	r.drained(jobs)
	r.completeTxRetries(jobs)
	return nil
}

// resumed: after the fault ended (from: see resumeFrom), how long until every worker (or
// the scenario's victim) had started a job again.
func (r *run) resumed(jobs []*jobRow, from time.Time) {
	if !r.sc.resumes {
		return
	}
	if from.Before(r.faultEnd) {
		r.note("resumption counted from the first job started on the restarted server, %.2f s before the suite saw it answer", r.faultEnd.Sub(from).Seconds())
	}
	first := map[string]time.Time{}
	for _, j := range jobs {
		for _, a := range j.attempts {
			if a.started.Before(from) {
				continue
			}
			if t, ok := first[a.client]; !ok || a.started.Before(t) {
				first[a.client] = a.started
			}
		}
	}
	var worst time.Duration
	for _, sl := range r.slots {
		if r.sc.victim && sl.i != 0 {
			continue
		}
		id := sl.ids[len(sl.ids)-1]
		t, ok := first[id]
		if !ok {
			r.note("worker %s started no job after the fault", id)
			continue
		}
		worst = max(worst, t.Sub(from))
	}
	s := worst.Seconds()
	r.res.ResumedS = &s
}

// pickupBack: after the fault ended, how long until jobs were picked up as promptly as
// before it (the measure of recovery), where resumed asks that every worker had
// started a job: a worker that reconnects last, while the others pick up every job, holds
// back resumed but not pickup. A job's wait counts from its commit (visible), as the
// bench's latency does: after a restart the producer's own commits are slow for a while
// (new connections, WAL flushes), which no worker can make up for. baseline holds those
// waits before the fault.
func (r *run) pickupBack(jobs []*jobRow, from time.Time, baseline []time.Duration) {
	if !r.sc.resumes || len(baseline) == 0 {
		return
	}
	slices.Sort(baseline)
	late := max(lateFloor, 2*quantile(baseline, 0.99))
	s := backToBaseline(from, late, jobs).Seconds()
	r.res.PickupBackS, r.res.LateMs = &s, ms(late)
}

// backToBaseline is how long after from pickup was back to its baseline: until the last
// start of a job that had waited more than late for it since it became visible. Every
// job waiting after that moment started within late. A job's wait counts only in its
// first attempt (a retry waits for its run_at, not for a worker).
func backToBaseline(from time.Time, late time.Duration, jobs []*jobRow) time.Duration {
	var back time.Duration
	for _, j := range jobs {
		if len(j.attempts) == 0 {
			continue
		}
		start := j.attempts[0].started
		if start.Sub(j.visible) > late { // one that started before from adds nothing
			back = max(back, start.Sub(from))
		}
	}
	return back
}

// resumeFrom is the moment the workers' resumption counts from: the fault's end, or, when
// the fault restarted the server (it came up, serverUp, after faultStart), the first job
// started on the new server if that came first. The suite sees the server back only when
// pg_ctl's poll and its own connection say so, up to a few hundred milliseconds after the
// server took its first claim; a worker that got in first and filled its slots meanwhile
// would count as resumed only when it next claimed, once a handler had ended.
func resumeFrom(faultStart, faultEnd, serverUp time.Time, jobs []*jobRow) time.Time {
	from := faultEnd
	if !serverUp.After(faultStart) {
		return from
	}
	for _, j := range jobs {
		for _, a := range j.attempts {
			if !a.started.Before(serverUp) && a.started.Before(from) {
				from = a.started
			}
		}
	}
	return from
}

// drained: after the fault ended, how long until fewer than drainedBelow due jobs waited,
// and at what rate the workers started jobs meanwhile.
func (r *run) drained(jobs []*jobRow) {
	samples := r.mon.all()
	for _, s := range samples {
		if !s.at.Before(r.faultStart) {
			r.res.PeakBacklog = max(r.res.PeakBacklog, s.due)
		}
		r.res.ReservedConns = max(r.res.ReservedConns, s.reserved)
	}
	if r.res.PeakBacklog < drainedBelow {
		return // no backlog built up
	}
	var at time.Time
	for _, s := range samples {
		if !s.at.Before(r.faultEnd) && s.due < drainedBelow {
			at = s.at
			break
		}
	}
	if at.IsZero() {
		r.note("the backlog never drained below %d due jobs", drainedBelow)
		return
	}
	d := at.Sub(r.faultEnd).Seconds()
	r.res.DrainedS = &d
	// The rate from the first start after the fault to the drained sample.
	from := at
	started := 0
	for _, j := range jobs {
		for _, a := range j.attempts {
			if !a.started.Before(r.faultEnd) && !a.started.After(at) {
				started++
				if a.started.Before(from) {
					from = a.started
				}
			}
		}
	}
	secs := at.Sub(from).Seconds()
	if secs < 1 {
		return // too short to tell a rate
	}
	r.res.DrainRate, r.res.DrainSeconds = float64(started)/secs, secs
	if !r.sc.workerBound {
		return
	}
	var busy time.Duration
	for _, j := range jobs {
		for _, a := range j.attempts {
			if a.reason == lostLease {
				continue // it "ended" when rescued: when its handler did is not known
			}
			end := a.ended
			if end.IsZero() || end.After(at) {
				end = at
			}
			if start := later(a.started, from); end.After(start) {
				busy += end.Sub(start)
			}
		}
	}
	r.res.Busy = busy.Seconds() / secs / float64(len(r.slots)*r.workersPerProcess())
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// completeTxRetries: for attempts whose CompleteTx transaction did not commit during the
// fault, the worst time from the fault's end to the start of the next attempt.
func (r *run) completeTxRetries(jobs []*jobRow) {
	var worst time.Duration
	seen := false
	for _, j := range jobs {
		for i, a := range j.attempts {
			if !strings.Contains(a.error, notCommitted) || a.ended.Before(r.faultStart) {
				continue
			}
			seen = true
			if i+1 == len(j.attempts) {
				r.note("job %d: its attempt %d did not commit its CompleteTx and was never retried", j.id, i+1)
				continue
			}
			worst = max(worst, j.attempts[i+1].started.Sub(r.faultEnd))
		}
	}
	if seen {
		s := worst.Seconds()
		r.res.CompleteTxRetryS = &s
	}
}

func (r *run) workersPerProcess() int {
	spec := r.s.spec(r, "", "")
	if r.sc.configure != nil {
		r.sc.configure(r.s, &spec)
	}
	return spec.Workers
}

func (r *run) readJobs(ctx context.Context) ([]*jobRow, error) {
	rows, err := r.s.pool.Query(ctx, `
		SELECT j.id, j.state, coalesce(j.args->>'e', ''), j.created_at, j.finished_at,
		       a.started, a.ended, coalesce(a.client, ''), coalesce(a.reason, ''), coalesce(a.error, '')
		FROM `+r.jobs()+` j
		LEFT JOIN LATERAL (
		    SELECT (e->>'started_at')::timestamptz, (e->>'ended_at')::timestamptz, e->>'client', e->>'reason', e->>'error'
		    FROM jsonb_array_elements(j.attempts) e
		    UNION ALL
		    SELECT j.attempted_at, j.finished_at, j.attempted_by, NULL, NULL WHERE j.state IN ('succeeded', 'running')
		) a(started, ended, client, reason, error) ON true
		ORDER BY j.id, a.started`)
	if err != nil {
		return nil, err
	}
	var (
		jobs              []*jobRow
		id                int64
		state, effect     string
		created           time.Time
		finished          pgtype.Timestamptz
		started, ended    pgtype.Timestamptz
		client, reason, e string
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &state, &effect, &created, &finished, &started, &ended, &client, &reason, &e}, func() error {
		if len(jobs) == 0 || jobs[len(jobs)-1].id != id {
			jobs = append(jobs, &jobRow{id: id, state: state, effect: effect, created: created, finished: finished.Time})
		}
		if started.Valid {
			j := jobs[len(jobs)-1]
			j.attempts = append(j.attempts, attempt{job: id, started: started.Time, ended: ended.Time, client: client, reason: reason, error: e})
		}
		return nil
	})
	return jobs, err
}

// readEffects counts the effect rows of every job, by mode.
func (r *run) readEffects(ctx context.Context) (map[int64]map[string]int, error) {
	rows, err := r.s.pool.Query(ctx, `SELECT job_id, mode, count(*) FROM `+r.effects()+` GROUP BY job_id, mode`)
	if err != nil {
		return nil, err
	}
	out := map[int64]map[string]int{}
	var (
		id   int64
		mode string
		n    int
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &mode, &n}, func() error {
		if out[id] == nil {
			out[id] = map[string]int{}
		}
		out[id][mode] = n
		return nil
	})
	return out, err
}

func (r *run) since(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return t.Sub(r.began).Seconds()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile of sorted values.
func quantile(sorted []time.Duration, q float64) time.Duration {
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}
