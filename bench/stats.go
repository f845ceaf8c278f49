package main

import (
	"context"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/relayq/relay"
)

// Histograms hold microseconds, up to 10 minutes, with 3 significant digits.
const histMaxMicros = int64(10 * time.Minute / time.Microsecond)

// histogram is an HDR histogram of microseconds.
type histogram = *hdrhistogram.Histogram

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, histMaxMicros, 3) }

// record adds d, in microseconds, clamping it into the histogram's range.
func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := int64(d / time.Microsecond)
	_ = h.RecordValue(min(max(us, 0), histMaxMicros))
}

func ms(us int64) float64 { return float64(us) / 1000 }

// Units say how a metric is printed.
const (
	unitMs     = "ms"
	unitMicros = "µs"
	unitCount  = "count"
	unitRate   = "jobs/s"
	unitSec    = "s"
	unitFloat  = "float"
	unitRatio  = "ratio"
	unitCores  = "cores"
	unitPct    = "%"
	unitMB     = "MB"
)

// Metric is one number a workload run reports, with the target it is judged against.
type Metric struct {
	Name   string  `json:"name"`
	Unit   string  `json:"unit"`
	Value  float64 `json:"value"`
	Target *Target `json:"target,omitempty"`
}

// Target is a bound a metric must meet. Over several runs it is judged on the median,
// or on the worst run when OnWorst is set (for "never" targets).
type Target struct {
	Op      string  `json:"op"` // "<=" or ">="
	Bound   float64 `json:"bound"`
	OnWorst bool    `json:"on_worst,omitempty"`
}

func atMost(v float64) *Target  { return &Target{Op: "<=", Bound: v} }
func atLeast(v float64) *Target { return &Target{Op: ">=", Bound: v} }
func never() *Target            { return &Target{Op: "<=", Bound: 0, OnWorst: true} }

func (t *Target) met(v float64) bool {
	switch t.Op {
	case "<=":
		return v <= t.Bound
	case ">=":
		return v >= t.Bound
	}
	return false
}

// latencyMetrics summarises h as count, p50, p90, p99, p99.9 and max in milliseconds,
// with optional targets for p50 and p99.
func latencyMetrics(prefix string, h *hdrhistogram.Histogram, p50, p99 *Target) []Metric {
	return []Metric{
		{Name: prefix + "count", Unit: unitCount, Value: float64(h.TotalCount())},
		{Name: prefix + "p50", Unit: unitMs, Value: ms(h.ValueAtQuantile(50)), Target: p50},
		{Name: prefix + "p90", Unit: unitMs, Value: ms(h.ValueAtQuantile(90))},
		{Name: prefix + "p99", Unit: unitMs, Value: ms(h.ValueAtQuantile(99)), Target: p99},
		{Name: prefix + "p99.9", Unit: unitMs, Value: ms(h.ValueAtQuantile(99.9))},
		{Name: prefix + "max", Unit: unitMs, Value: ms(h.Max())},
	}
}

// recorder keeps, per job sequence number, when its enqueueing transaction's Commit
// returned and when its handler started, as nanoseconds since base on the monotonic
// clock. Slots are written once each by one goroutine and read after the run, so atomics
// in preallocated slices suffice: no map, no lock, no allocation per job.
type recorder struct {
	base     time.Time
	commit   []atomic.Int64
	start    []atomic.Int64
	claim    []atomic.Int64 // the job's AttemptedAt (the claim statement's now()), wall clock
	started  atomic.Int64   // first starts
	dups     atomic.Int64   // a job that started again (delivery is at least once)
	outRange atomic.Int64   // a sequence number outside the slices: a bug in the benchmark
}

func newRecorder(base time.Time, n int) *recorder {
	return &recorder{base: base, commit: make([]atomic.Int64, n), start: make([]atomic.Int64, n), claim: make([]atomic.Int64, n)}
}

func (r *recorder) since(t time.Time) int64 { return max(int64(t.Sub(r.base)), 1) }

// committed records that the transaction enqueueing job seq committed at t.
func (r *recorder) committed(seq int64, t time.Time) { r.commit[seq].Store(r.since(t)) }

// began records that job seq's handler started at t.
func (r *recorder) began(seq int64, t time.Time) {
	if seq < 0 || seq >= int64(len(r.start)) {
		r.outRange.Add(1)
		return
	}
	if !r.start[seq].CompareAndSwap(0, r.since(t)) {
		r.dups.Add(1)
		return
	}
	r.started.Add(1)
}

// beganClaimed is began for a job whose claim's database time is known: it also keeps
// attemptedAt, to split pickup latency into before and after the claim statement began.
// handler is the no-op job handler of the workloads: it records when the job began as its
// very first action, and when it was claimed.
func (r *recorder) handler(_ context.Context, job *relay.Job[seqArgs]) error {
	r.beganClaimed(job.Args.Seq, time.Now(), job.AttemptedAt)
	return nil
}

func (r *recorder) beganClaimed(seq int64, t, attemptedAt time.Time) {
	if seq >= 0 && seq < int64(len(r.claim)) {
		// attemptedAt has no monotonic reading, so this is wall clock minus base's wall
		// clock: comparable with the monotonic offsets as long as nobody steps the clock.
		r.claim[seq].Store(int64(attemptedAt.Sub(r.base)))
	}
	r.began(seq, t)
}

// route tells how job seq started, for pickups' group: 0 if it was handed off (leased by
// its producer's statement, so its AttemptedAt is before its Commit returned), 1 if it was
// claimed after its commit.
func (r *recorder) route(seq int64) int {
	if a := r.claim[seq].Load(); a != 0 && a < r.commit[seq].Load() {
		return 0
	}
	return 1
}

// phases splits the pickup latency of the jobs in [lo, hi) at the claim statement's
// now(): commit → claim began (the wakeup: NOTIFY, listener, dispatcher, a connection)
// and claim began → handler (the claim statement, its result, the job's goroutine,
// decoding its args). Negative spans (clock granularity) count as 0.
func (r *recorder) phases(lo, hi int64, keep func(seq int64) bool) phaseHists {
	wake, run := newHist(), newHist()
	for seq := lo; seq < hi; seq++ {
		if keep != nil && !keep(seq) {
			continue
		}
		c, s, a := r.commit[seq].Load(), r.start[seq].Load(), r.claim[seq].Load()
		if c == 0 || s == 0 || a == 0 {
			continue
		}
		record(wake, time.Duration(a-c))
		record(run, time.Duration(s-a))
	}
	return phaseHists{wake, run}
}

type phaseHists struct{ wake, run histogram }

// phaseMetrics reports the p50 and p99 of the two phases of pickup latency.
func phaseMetrics(prefix string, ph phaseHists) []Metric {
	wake, run := ph.wake, ph.run
	return []Metric{
		{Name: prefix + "split: commit → claim began p50", Unit: unitMs, Value: ms(wake.ValueAtQuantile(50))},
		{Name: prefix + "split: commit → claim began p99", Unit: unitMs, Value: ms(wake.ValueAtQuantile(99))},
		{Name: prefix + "split: claim began → handler p50", Unit: unitMs, Value: ms(run.ValueAtQuantile(50))},
		{Name: prefix + "split: claim began → handler p99", Unit: unitMs, Value: ms(run.ValueAtQuantile(99))},
	}
}

// pickup is the outcome of computing pickup latencies over some jobs.
type pickup struct {
	hist        *hdrhistogram.Histogram // start − commit; early starts recorded as 0
	early       int64                   // started before their Commit returned
	maxEarly    time.Duration           // by how much the earliest of them was early
	missing     int64                   // committed but never started
	uncommitted int64                   // never committed (the producer stopped)
	slowest     []slowJob               // the few slowest, slowest first
}

// slowJob is one of the slowest pickups, for the debug log: when it committed, when its
// claim began and when its handler started, in ms since the recorder's base.
type slowJob struct {
	Seq                      int64
	Latency                  time.Duration
	CommitMs, ClaimMs, RunMs float64
}

func (p *pickup) noteSlow(r *recorder, seq int64, d time.Duration) {
	const keep = 5
	if len(p.slowest) == keep && d <= p.slowest[keep-1].Latency {
		return
	}
	j := slowJob{Seq: seq, Latency: d, CommitMs: float64(r.commit[seq].Load()) / 1e6,
		ClaimMs: float64(r.claim[seq].Load()) / 1e6, RunMs: float64(r.start[seq].Load()) / 1e6}
	i, _ := slices.BinarySearchFunc(p.slowest, d, func(s slowJob, d time.Duration) int {
		if s.Latency > d {
			return -1
		}
		if s.Latency < d {
			return 1
		}
		return 0
	})
	p.slowest = slices.Insert(p.slowest, i, j)
	if len(p.slowest) > keep {
		p.slowest = p.slowest[:keep]
	}
}

// pickups computes start − commit for the jobs in [lo, hi) for which keep (if not nil)
// returns true, adding each latency to hists[group(seq)] too when group is not nil.
func (r *recorder) pickups(lo, hi int64, keep func(seq int64, commit int64) bool, group func(seq int64) int, hists []*hdrhistogram.Histogram) pickup {
	p := pickup{hist: newHist()}
	for seq := lo; seq < hi; seq++ {
		c := r.commit[seq].Load()
		if c == 0 {
			p.uncommitted++
			continue
		}
		if keep != nil && !keep(seq, c) {
			continue
		}
		s := r.start[seq].Load()
		if s == 0 {
			p.missing++
			continue
		}
		d := time.Duration(s - c)
		if d < 0 {
			p.early++
			p.maxEarly = max(p.maxEarly, -d)
			d = 0
		}
		record(p.hist, d)
		p.noteSlow(r, seq, d)
		if group != nil {
			record(hists[group(seq)], d)
		}
	}
	return p
}

// aggregate is a metric over several runs.
type aggregate struct {
	Metric
	Values []float64 `json:"values"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Judged float64   `json:"judged,omitempty"` // the value compared with the target
	Pass   *bool     `json:"pass,omitempty"`
}

// aggregateRuns lines up the metrics of several runs by name, in the order of the first
// run that has each, and takes their median and range.
func aggregateRuns(runs []*RunResult) []aggregate {
	var order []string
	byName := map[string]*aggregate{}
	for _, r := range runs {
		for _, m := range r.Metrics {
			a := byName[m.Name]
			if a == nil {
				a = &aggregate{Metric: m}
				byName[m.Name] = a
				order = append(order, m.Name)
			}
			a.Values = append(a.Values, m.Value)
		}
	}
	out := make([]aggregate, 0, len(order))
	for _, name := range order {
		a := byName[name]
		a.Median, a.Min, a.Max = median(a.Values), slices.Min(a.Values), slices.Max(a.Values)
		a.Value = a.Median
		if t := a.Target; t != nil {
			a.Judged = a.Median
			if t.OnWorst {
				a.Judged = a.Max
				if t.Op == ">=" {
					a.Judged = a.Min
				}
			}
			pass := t.met(a.Judged)
			a.Pass = &pass
		}
		out = append(out, *a)
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// meanInterval is the mean of v and the half-width of its 95 % confidence interval
// (Student's t, for the few samples a run takes).
func meanInterval(v []float64) (mean, halfWidth float64) {
	n := len(v)
	if n == 0 {
		return math.NaN(), math.NaN()
	}
	for _, x := range v {
		mean += x
	}
	mean /= float64(n)
	if n == 1 {
		return mean, math.Inf(1)
	}
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	// Two-sided 95 % quantiles of Student's t for 1 to 10 degrees of freedom; beyond, 2.2
	// (that of 11), which errs wide.
	t := 2.2
	if quantiles := []float64{12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23}; n-1 <= len(quantiles) {
		t = quantiles[n-2]
	}
	return mean, t * math.Sqrt(ss/float64(n-1)/float64(n))
}
