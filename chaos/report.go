package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/relayq/relay/internal/cpustat"
	"github.com/relayq/relay/internal/tool"
)

// Targets of issue 12, judged per scenario where they apply.
const (
	resumeTarget = 1.0 // s after the fault ended until the workers start jobs again
	drainTarget  = 0.8 // of the workers running handlers, on average, while a backlog drains
)

// report is what a run of the suite found; it is printed and written as JSON.
type report struct {
	Started      time.Time `json:"started"`
	TotalSeconds float64   `json:"total_seconds"`
	Quick        bool      `json:"quick"`
	Server       string    `json:"server"`
	Throwaway    bool      `json:"throwaway_server"`
	GoVersion    string    `json:"go_version"`
	CPUs         int       `json:"cpus"`
	Processes    int       `json:"worker_processes"`
	Workers      int       `json:"workers_per_process"`
	PoolConns    int       `json:"pool_conns"`
	Rate         int       `json:"rate"`
	LeaseTTL     string    `json:"lease_ttl"`
	Scenarios    []*Result `json:"scenarios"`
	// Broken counts scenarios that lost a job, duplicated a CompleteTx effect, failed a
	// check or could not run: the suite then exits with status 1.
	Broken int `json:"broken"`
	Missed int `json:"missed_targets"`
}

// Result is what one scenario found.
type Result struct {
	Name    string  `json:"name"`
	Proves  string  `json:"proves"`
	Skipped string  `json:"skipped,omitempty"`
	Seconds float64 `json:"seconds"`

	Jobs      int `json:"jobs"`      // enqueued, Commit returned
	Uncertain int `json:"uncertain"` // Commit failed: the job may exist
	// Lost: enqueued jobs that had not succeeded at the end (Failed of them failed).
	Lost   int `json:"lost"`
	Failed int `json:"failed"`
	// Duplicate effects: effect rows beyond the first of a job, of at-least-once handlers
	// (plain INSERT) and of CompleteTx handlers (must be none).
	DupPlain       int `json:"duplicate_effects_plain"`
	DupTx          int `json:"duplicate_effects_tx"`
	MissingEffects int `json:"missing_effects"` // succeeded jobs without their effect
	// Attempts that ended otherwise than in success, by reason.
	Attempts map[string]int `json:"attempts_by_reason"`

	FaultStart float64 `json:"fault_start_s"` // since the producer started
	FaultEnd   float64 `json:"fault_end_s"`
	// ResumedS: after the fault ended, until every worker (or the cut-off one) had started
	// a job again.
	ResumedS *float64 `json:"resumed_s,omitempty"`
	// PickupBackS: after the fault ended, until the last start of a job that had waited
	// more than LateMs for it since its Commit returned (the greater of 100 ms and twice
	// that wait's p99 before the fault): from then on jobs were picked up as before the
	// fault. Only where ResumedS is judged.
	PickupBackS *float64 `json:"pickup_back_s,omitempty"`
	LateMs      float64  `json:"late_ms,omitempty"`
	// DrainedS: after the fault ended, until fewer than 20 due jobs waited; PeakBacklog is
	// the most that waited.
	DrainedS    *float64 `json:"drained_s,omitempty"`
	PeakBacklog int      `json:"peak_backlog"`
	// DrainRate: jobs started per second from the first start after the fault until the
	// backlog drained (over DrainSeconds); Busy: the share of the workers that were running
	// a handler meanwhile, on average (1: every worker, all the time; the rest went to
	// claiming and writing outcomes, or to workers that had nothing claimed).
	DrainRate    float64 `json:"drain_rate,omitempty"`
	DrainSeconds float64 `json:"drain_seconds,omitempty"`
	Busy         float64 `json:"busy,omitempty"`
	// Pickup: first attempt's start minus the job's creation; baseline before the fault.
	PickupP50Ms    float64 `json:"baseline_pickup_p50_ms"`
	PickupP99Ms    float64 `json:"baseline_pickup_p99_ms"`
	WorstPickupMs  float64 `json:"worst_pickup_ms"`
	WorstEndToEndS float64 `json:"worst_end_to_end_s"` // success minus creation
	// ReservedConns: the most connections the workers' clients had reserved for themselves
	// at once (relay.Config.ReservedConns), over all workers.
	ReservedConns int `json:"reserved_conns_peak"`
	// CompleteTxRetryS: attempts whose CompleteTx transaction did not commit during the
	// fault: the worst time from the fault's end to the next attempt's start.
	CompleteTxRetryS *float64     `json:"completetx_retry_s,omitempty"`
	Checks           []check      `json:"checks,omitempty"`
	CPU              *cpustat.Use `json:"cpu,omitempty"`
	Notes            []string     `json:"notes,omitempty"`
	Errors           []string     `json:"errors,omitempty"`
}

// broken reports why the scenario failed what must always hold, if it did.
func (r *Result) broken() []string {
	var why []string
	if r.Skipped != "" {
		return nil
	}
	if r.Lost > 0 {
		why = append(why, fmt.Sprintf("%d jobs lost", r.Lost))
	}
	if r.DupTx > 0 {
		why = append(why, fmt.Sprintf("%d CompleteTx effects duplicated", r.DupTx))
	}
	if r.MissingEffects > 0 {
		why = append(why, fmt.Sprintf("%d succeeded jobs without their effect", r.MissingEffects))
	}
	for _, c := range r.Checks {
		if !c.OK {
			why = append(why, "check failed: "+c.Name+": "+c.Detail)
		}
	}
	return append(why, r.Errors...)
}

// missed lists the targets the scenario missed.
func (r *Result) missed() []string {
	var why []string
	if r.ResumedS != nil && *r.ResumedS > resumeTarget {
		why = append(why, fmt.Sprintf("resumed %.2f s after the fault ended (target ≤ %.0f s)", *r.ResumedS, resumeTarget))
	}
	if r.Busy > 0 && r.Busy < drainTarget {
		why = append(why, fmt.Sprintf("while the backlog drained, %.0f%% of the workers ran handlers (target ≥ %.0f%%)", r.Busy*100, drainTarget*100))
	}
	return why
}

func (rep *report) finish() {
	rep.TotalSeconds = time.Since(rep.Started).Seconds()
	rep.GoVersion, rep.CPUs = runtime.Version(), runtime.NumCPU()
	for _, r := range rep.Scenarios {
		if len(r.broken()) > 0 {
			rep.Broken++
		}
		if len(r.missed()) > 0 {
			rep.Missed++
		}
	}
}

func (rep *report) print(w io.Writer) {
	kind := "-database-url"
	if rep.Throwaway {
		kind = "throwaway server"
	}
	mode := "full"
	if rep.Quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "\nrelay chaos suite (%s) — PostgreSQL %s (%s); %d worker processes × %d workers, pools of %d, %d jobs/s, LeaseTTL %s; %s, %d CPUs\n",
		mode, rep.Server, kind, rep.Processes, rep.Workers, rep.PoolConns, rep.Rate, rep.LeaseTTL, rep.GoVersion, rep.CPUs)
	fmt.Fprintln(w, "LOST: enqueued jobs not succeeded at the end. DUP: effect rows beyond a job's first (plain INSERT / CompleteTx). FAULT: its window, s after the load began.")
	fmt.Fprintln(w, "RESUMED: s after the fault until every worker started jobs again. BACK: s after the fault until the last job that waited longer than normal (late) since its commit started.")
	fmt.Fprintln(w, "DRAINED: s after the fault until < 20 due jobs waited (peak backlog). RATE: jobs/s while draining (workers busy).")
	fmt.Fprintln(w, "PICKUP: first start minus creation, p50 before the fault / worst. CTX RETRY: s after the fault until CompleteTx attempts that did not commit ran again. OTHER CPU: cores used by other processes.")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tJOBS\tLOST\tDUP\tFAULT\tRESUMED\tBACK\tDRAINED\tRATE\tPICKUP ms\tE2E s\tCTX RETRY\tOTHER CPU\tRESULT\t")
	for _, r := range rep.Scenarios {
		if r.Skipped != "" {
			fmt.Fprintf(tw, "%s\tskipped\t\t\t\t\t\t\t\t\t\t\t\t\t\n", r.Name)
			continue
		}
		result := "ok"
		if len(r.missed()) > 0 {
			result = "MISS"
		}
		if len(r.broken()) > 0 {
			result = "BROKEN"
		}
		drained := "—"
		if r.DrainedS != nil {
			drained = fmt.Sprintf("%.1f (%d)", *r.DrainedS, r.PeakBacklog)
		}
		rate := "—"
		if r.DrainRate > 0 {
			rate = fmt.Sprintf("%.0f", r.DrainRate)
			if r.Busy > 0 {
				rate += fmt.Sprintf(" (%.0f%%)", r.Busy*100)
			}
		}
		other := "—"
		if r.CPU != nil {
			other = fmt.Sprintf("%.2f", r.CPU.Other)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d / %d\t%.1f–%.1f\t%s\t%s\t%s\t%s\t%.1f / %.0f\t%.1f\t%s\t%s\t%s\t\n",
			r.Name, r.Jobs, r.Lost, r.DupPlain, r.DupTx, r.FaultStart, r.FaultEnd, opt(r.ResumedS, "%.2f"), back(r), drained, rate,
			r.PickupP50Ms, r.WorstPickupMs, r.WorstEndToEndS, opt(r.CompleteTxRetryS, "%.2f"), other, result)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, r := range rep.Scenarios {
		var lines []string
		for _, why := range r.broken() {
			lines = append(lines, "BROKEN: "+why)
		}
		for _, why := range r.missed() {
			lines = append(lines, "missed: "+why)
		}
		if len(r.Attempts) > 0 {
			lines = append(lines, "attempts that did not succeed, by reason: "+formatCounts(r.Attempts))
		}
		if r.ReservedConns > 0 {
			lines = append(lines, fmt.Sprintf("the clients opened up to %d reserved connections at once", r.ReservedConns))
		}
		lines = append(lines, r.Notes...)
		if r.Skipped != "" {
			lines = append(lines, "skipped: "+r.Skipped)
		}
		for _, l := range lines {
			fmt.Fprintf(w, "  %s: %s\n", r.Name, l)
		}
	}
	fmt.Fprintf(w, "\n%d scenarios: %d broken, %d missed a target; total time %.0f s\n",
		len(rep.Scenarios), rep.Broken, rep.Missed, rep.TotalSeconds)
}

// back is the BACK column: how long until pickup was back to baseline, and the wait that
// counted as late.
func back(r *Result) string {
	if r.PickupBackS == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f (late > %.0f ms)", *r.PickupBackS, r.LateMs)
}

func opt(v *float64, format string) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf(format, *v)
}

func formatCounts(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func (rep *report) writeJSON(path string) error { return tool.WriteJSON(path, rep) }
