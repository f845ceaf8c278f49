package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/relayq/relay/internal/tool"
)

// report is everything a benchmark run found; it is printed and written as JSON.
type report struct {
	Started         time.Time        `json:"started"`
	TotalSeconds    float64          `json:"total_seconds"`
	Server          serverInfo       `json:"server"`
	Schema          string           `json:"schema"`
	GoVersion       string           `json:"go_version"`
	GOMAXPROCS      int              `json:"gomaxprocs"`
	CPUs            int              `json:"cpus"`
	ClientPoolConns int              `json:"client_pool_max_conns"`
	Runs            int              `json:"runs"`
	Duration        string           `json:"duration"`
	Settings        map[string]any   `json:"settings"`
	Workloads       []workloadReport `json:"workloads"`
}

type workloadReport struct {
	Name    string       `json:"name"`
	Group   string       `json:"group"`
	Summary []aggregate  `json:"summary"`
	Runs    []*RunResult `json:"runs"`
	Errors  []string     `json:"errors,omitempty"`
}

func (r *report) print(w io.Writer) {
	kind := "DATABASE_URL"
	if r.Server.Throwaway {
		kind = "throwaway server"
	}
	fmt.Fprintf(w, "\nrelay benchmark — PostgreSQL %s (%s; fsync=%s synchronous_commit=%s full_page_writes=%s shared_buffers=%s max_connections=%s), schema %s\n",
		r.Server.Version, kind, r.Server.Fsync, r.Server.SynchronousCommit, r.Server.FullPageWrites, r.Server.SharedBuffers, r.Server.MaxConnections, r.Schema)
	fmt.Fprintf(w, "%s, GOMAXPROCS=%d on %d CPUs; client pgxpool MaxConns=%d (producers use a pool of their own); relay defaults except workers per queue\n",
		r.GoVersion, r.GOMAXPROCS, r.CPUs, r.ClientPoolConns)
	if r.Runs > 1 {
		fmt.Fprintf(w, "%d runs per workload: VALUE is the median, RANGE min–max; PASS/MISS is judged on the median (\"never\" targets on the worst run)\n", r.Runs)
	}
	fmt.Fprintln(w, "Latencies from HDR histograms in µs (3 significant digits); jobs that started before their Commit returned are recorded as 0 ms and counted.")
	fmt.Fprintln(w, "\"split\" rows cut each pickup at job.AttemptedAt (the claim statement's now()): before it NOTIFY → listener → dispatcher → pooled connection;")
	fmt.Fprintln(w, "after it the claim statement, its result, the job's goroutine and args decoding. \"cpu\" rows: average cores busy during the run, by whom.")
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tMETRIC\tVALUE\tUNIT\tRANGE\tTARGET\tRESULT\t")
	fmt.Fprintln(tw, "--------\t------\t-----\t----\t-----\t------\t------\t")
	for i, wr := range r.Workloads {
		if i > 0 {
			fmt.Fprintln(tw, "\t\t\t\t\t\t\t")
		}
		name := wr.Name
		for _, e := range wr.Errors {
			fmt.Fprintf(tw, "%s\tERROR: %s\t\t\t\t\t\t\n", name, oneLine(e))
			name = ""
		}
		for _, a := range wr.Summary {
			rng := ""
			if len(a.Values) > 1 {
				rng = format(a.Min, a.Unit) + "–" + format(a.Max, a.Unit)
			}
			target, result := "", ""
			if t := a.Target; t != nil {
				op := map[string]string{"<=": "≤", ">=": "≥"}[t.Op]
				target = op + " " + format(t.Bound, a.Unit)
				if t.OnWorst && t.Bound == 0 {
					target = "never (0)"
				}
				result = "MISS"
				if *a.Pass {
					result = "PASS"
				}
			}
			unit := a.Unit
			if unit == unitFloat || unit == unitCount || unit == unitRatio {
				unit = ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, a.Name, format(a.Value, a.Unit), unit, rng, target, result)
			name = ""
		}
	}
	tw.Flush()

	fmt.Fprintln(w)
	for _, wr := range r.Workloads {
		seen := map[string]bool{}
		for i, run := range wr.Runs {
			for _, n := range run.Notes {
				prefix := ""
				if len(wr.Runs) > 1 {
					prefix = fmt.Sprintf("run %d: ", i+1)
				}
				// Notes that are the same in every run are printed once.
				if seen[n] {
					continue
				}
				seen[n] = true
				if !strings.HasPrefix(n, "per-queue") && allHave(wr.Runs, n) {
					prefix = ""
				}
				fmt.Fprintf(w, "  %s: %s%s\n", wr.Name, prefix, n)
			}
		}
		if wr.Group == "queues" && len(wr.Runs) > 0 {
			printQueueP99s(w, wr.Runs)
		}
		for i, run := range wr.Runs {
			if len(run.Statements) == 0 {
				continue
			}
			fmt.Fprintf(w, "  %s: run %d: costliest statements (pg_stat_statements; the run's wall time was %.1f s):\n", wr.Name, i+1, run.Elapsed)
			fmt.Fprintf(w, "    %9s %9s %10s %10s  %s\n", "calls", "total s", "exec ms", "plan ms", "query")
			for _, s := range run.Statements {
				q := s.Query
				if len(q) > 110 {
					q = q[:110] + "…"
				}
				fmt.Fprintf(w, "    %9d %9.2f %10.3f %10.3f  %s\n", s.Calls, s.TotalMs/1000, s.MeanExecMs, s.MeanPlanMs, q)
			}
		}
	}
	passed, missed := 0, 0
	for _, wr := range r.Workloads {
		for _, a := range wr.Summary {
			if a.Pass != nil {
				if *a.Pass {
					passed++
				} else {
					missed++
				}
			}
		}
	}
	fmt.Fprintf(w, "\ntargets: %d PASS, %d MISS; total time %.1f s\n", passed, missed, r.TotalSeconds)
}

// printQueueP99s prints every queue's p99 (the median over runs), ten to a line.
func printQueueP99s(w io.Writer, runs []*RunResult) {
	vals := map[string][]float64{}
	for _, run := range runs {
		m, _ := run.Details["queue_p99_ms"].(map[string]float64)
		for q, v := range m {
			vals[q] = append(vals[q], v)
		}
	}
	names := make([]string, 0, len(vals))
	for q := range vals {
		names = append(names, q)
	}
	slices.Sort(names)
	fmt.Fprintf(w, "  queues: p99 pickup latency per queue (ms)%s:\n", map[bool]string{true: ", median over runs", false: ""}[len(runs) > 1])
	for i, q := range names {
		if i%10 == 0 {
			fmt.Fprint(w, "   ")
		}
		fmt.Fprintf(w, " %s %6.2f", q, median(vals[q]))
		if i%10 == 9 || i == len(names)-1 {
			fmt.Fprintln(w)
		}
	}
}

func allHave(runs []*RunResult, note string) bool {
	for _, r := range runs {
		if !slices.Contains(r.Notes, note) {
			return false
		}
	}
	return true
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// format prints v for its unit.
func format(v float64, unit string) string {
	switch unit {
	case unitMs:
		return fmt.Sprintf("%.3f", v)
	case unitMicros:
		return fmt.Sprintf("%.1f", v)
	case unitRate:
		return thousands(v)
	case unitCount:
		return thousands(v)
	case unitSec:
		return fmt.Sprintf("%.3f", v)
	case unitRatio:
		return fmt.Sprintf("%.2f×", v) // two places: a target of 0.9× missed at 0.88 must not print 0.9×
	case unitPct, unitMB:
		return fmt.Sprintf("%.1f", v)
	case unitCores:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.4f", v)
	}
}

// thousands rounds v and groups its digits: 12345.6 → "12,346".
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func (r *report) writeJSON(path string) error { return tool.WriteJSON(path, r) }
