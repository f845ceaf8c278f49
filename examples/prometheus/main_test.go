package main

import (
	"context"
	"log/slog"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relayotel"
	"github.com/relayq/relay/relaytest"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

// TestScrape runs known jobs through the example's worker — three that succeed, one that
// fails once and then succeeds, one discarded, one scheduled for later — scrapes /metrics,
// and finds every instrument of relayotel with its Prometheus name, type, labels and value.
func TestScrape(t *testing.T) {
	db := relaytest.NewDB(t)
	ctx := context.Background()
	mp, metrics, err := newMetrics()
	if err != nil {
		t.Fatal(err)
	}
	tel, err := relayotel.New(relayotel.Config{MeterProvider: mp, DB: db.Pool, DepthInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	client, stop, err := startWorker(ctx, db.Pool, tel, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	events, unsubscribe := client.Subscribe(100)
	defer unsubscribe()
	_, err = relay.EnqueueMany(ctx, db, []relay.JobSpec{
		BuildReport.Job(ReportArgs{}), BuildReport.Job(ReportArgs{}), BuildReport.Job(ReportArgs{}),
		BuildReport.Job(ReportArgs{Fail: true}), BuildReport.Job(ReportArgs{Discard: true}),
		BuildReport.Job(ReportArgs{}, relay.RunIn(time.Hour)),
	}, relay.Queue(queue), tel.EnqueueMiddleware())
	if err != nil {
		t.Fatal(err)
	}
	for range 6 { // 3 + 2 + 1 attempts end; the scheduled job waits
		relaytest.Receive(t, events, 15*time.Second, "an event")
	}

	rec := httptest.NewRecorder()
	metrics.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	for name := range families {
		if !strings.HasPrefix(name, "relay_") && !strings.HasPrefix(name, "messaging_") {
			delete(families, name)
		}
	}
	types := map[string]dto.MetricType{
		"messaging_client_sent_messages_total":     dto.MetricType_COUNTER,
		"messaging_client_consumed_messages_total": dto.MetricType_COUNTER,
		"relay_jobs_finished_total":                dto.MetricType_COUNTER,
		"messaging_process_duration_seconds":       dto.MetricType_HISTOGRAM,
		"relay_job_pickup_latency_seconds":         dto.MetricType_HISTOGRAM,
		"relay_queue_depth":                        dto.MetricType_GAUGE,
		"relay_queue_oldest_job_age_seconds":       dto.MetricType_GAUGE,
		"relay_client_jobs_running":                dto.MetricType_GAUGE,
		"relay_client_slots_free":                  dto.MetricType_GAUGE,
		"relay_client_outcome_backlog":             dto.MetricType_GAUGE,
		"relay_client_listener_reconnects_total":   dto.MetricType_COUNTER,
	}
	if got := slices.Sorted(maps.Keys(families)); !slices.Equal(got, slices.Sorted(maps.Keys(types))) {
		t.Fatalf("families %q; want %q", got, slices.Sorted(maps.Keys(types)))
	}
	for name, typ := range types {
		if families[name].GetType() != typ {
			t.Errorf("%s is a %v; want a %v", name, families[name].GetType(), typ)
		}
	}

	job := `messaging_system="relay",messaging_destination_name="reports",relay_job_kind="report"`
	client0 := `messaging_system="relay",messaging_client_id="` + client.ID() + `"`
	for _, c := range []struct {
		family, labels string
		want           float64
	}{
		{"messaging_client_sent_messages_total", job + `,messaging_operation_name="enqueue"`, 6},
		{"messaging_client_consumed_messages_total", job + `,messaging_operation_name="process"`, 6},
		{"relay_jobs_finished_total", job + `,relay_job_outcome="succeeded",relay_job_state="succeeded"`, 4},
		{"relay_jobs_finished_total", job + `,relay_job_outcome="retried",relay_job_state="pending",error_type="error"`, 1},
		{"relay_jobs_finished_total", job + `,relay_job_outcome="discarded",relay_job_state="failed",error_type="discarded"`, 1},
		{"messaging_process_duration_seconds", job + `,relay_job_outcome="succeeded",relay_job_state="succeeded"`, 4},
		{"messaging_process_duration_seconds", job + `,relay_job_outcome="retried",relay_job_state="pending",error_type="error"`, 1},
		{"messaging_process_duration_seconds", job + `,relay_job_outcome="discarded",relay_job_state="failed",error_type="discarded"`, 1},
		{"relay_job_pickup_latency_seconds", job + `,messaging_operation_name="process"`, 6},
		{"relay_queue_depth", `messaging_destination_name="reports",relay_job_state="pending"`, 0},
		{"relay_queue_depth", `messaging_destination_name="reports",relay_job_state="scheduled"`, 1},
		{"relay_queue_depth", `messaging_destination_name="reports",relay_job_state="running"`, 0},
		{"relay_queue_oldest_job_age_seconds", `messaging_destination_name="reports"`, 0},
		{"relay_client_jobs_running", client0 + `,messaging_destination_name="reports"`, 0},
		{"relay_client_slots_free", client0, 10},
		{"relay_client_outcome_backlog", client0, 0},
		{"relay_client_listener_reconnects_total", client0, 0},
	} {
		got, n := valueOf(families[c.family], c.labels)
		if n != 1 || got != c.want {
			t.Errorf("%s{%s}: %d series, value %v; want one, %v", c.family, c.labels, n, got, c.want)
		}
	}
	for _, family := range []string{"relay_jobs_finished_total", "messaging_process_duration_seconds"} {
		if n := len(families[family].GetMetric()); n != 3 {
			t.Errorf("%s has %d series; want the 3 above", family, n)
		}
	}
}

// valueOf returns the value of the series of f whose labels include every one of labels
// (`a="x",b="y"`), a histogram's count, and how many series match.
func valueOf(f *dto.MetricFamily, labels string) (float64, int) {
	var (
		v float64
		n int
	)
	for _, m := range f.GetMetric() {
		have := map[string]bool{}
		for _, l := range m.GetLabel() {
			have[l.GetName()+`="`+l.GetValue()+`"`] = true
		}
		matches := true
		for l := range strings.SplitSeq(labels, ",") {
			matches = matches && have[l]
		}
		if !matches {
			continue
		}
		n++
		switch {
		case m.Counter != nil:
			v = m.Counter.GetValue()
		case m.Gauge != nil:
			v = m.Gauge.GetValue()
		case m.Histogram != nil:
			v = float64(m.Histogram.GetSampleCount())
		}
	}
	return v, n
}
