// Prometheus: relay's metrics on /metrics, through OpenTelemetry's Prometheus exporter.
//
//	go run ./examples/prometheus              # starts a throwaway PostgreSQL
//	DATABASE_URL=postgres://... go run ./examples/prometheus -listen 127.0.0.1:9464
//	curl -s localhost:9464/metrics | grep -E '^(relay|messaging)_'
//
// A worker runs report jobs, some of which fail and are retried or discarded, and a
// producer enqueues a few every second, so that every instrument moves. Point a Prometheus
// scrape job at the address; relay's metrics are those of package relayotel (see the
// README's "Observability").
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/lmittmann/tint"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/internal/exampledb"
	"github.com/relayq/relay/relayotel"
)

// ReportArgs are the args of a report job: how it is to end, for the demonstration.
type ReportArgs struct {
	Fail    bool `json:"fail,omitempty"`    // fail its first attempt, succeed on the next
	Discard bool `json:"discard,omitempty"` // fail for good
}

// BuildReport is the kind of job the worker runs.
var BuildReport = relay.NewKind[ReportArgs]("report")

// queue is the queue of the reports.
const queue = "reports"

func main() {
	listen := flag.String("listen", "127.0.0.1:9464", "address of the /metrics endpoint")
	flag.Parse()
	logger := slog.New(tint.NewTextHandler(os.Stderr, &tint.Options{TimeFormat: time.TimeOnly}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, logger, *listen); err != nil {
		logger.Error(err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, listen string) error {
	pool, closeDB, err := exampledb.Open(ctx, logger) // DATABASE_URL, or a throwaway server
	if err != nil {
		return err
	}
	defer closeDB()
	if err := relay.Migrate(ctx, pool); err != nil {
		return err
	}

	mp, metrics, err := newMetrics()
	if err != nil {
		return err
	}
	defer mp.Shutdown(context.WithoutCancel(ctx))
	tel, err := relayotel.New(relayotel.Config{MeterProvider: mp, DB: pool})
	if err != nil {
		return err
	}
	defer tel.Close()
	_, stopWorker, err := startWorker(ctx, pool, tel, logger)
	if err != nil {
		return err
	}
	defer stopWorker()

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	go produce(ctx, pool, tel, logger)
	logger.Info("serving relay's metrics", "url", "http://"+listen+"/metrics")
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newMetrics returns a meter provider whose metrics the returned handler serves in
// Prometheus's format, from a registry of its own (not Prometheus's global one).
func newMetrics() (*sdkmetric.MeterProvider, http.Handler, error) {
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	return mp, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil
}

// startWorker starts a client that runs the reports, with relay's telemetry, and returns
// the function that stops it.
func startWorker(ctx context.Context, pool *pgxpool.Pool, tel *relayotel.Telemetry, logger *slog.Logger) (_ *relay.Client, stop func(), err error) {
	client := relay.New(relay.Config{
		Logger:     logger,
		Queues:     map[string]relay.QueueConfig{queue: {Workers: 10}},
		Middleware: []relay.Middleware{tel.Middleware()},
	})
	err = relay.Handle(client, BuildReport, func(ctx context.Context, job *relay.Job[ReportArgs]) error {
		switch {
		case job.Args.Discard:
			return relay.Discard(errors.New("the report's account is closed"))
		case job.Args.Fail && job.Attempt == 1:
			return errors.New("the warehouse timed out")
		}
		return nil
	}, relay.Backoff(backoff.Policy{Initial: 100 * time.Millisecond, Multiplier: 2, Max: 5 * time.Second}))
	if err != nil {
		return nil, nil, err
	}
	stopInstrument, err := tel.Instrument(client)
	if err != nil {
		return nil, nil, err
	}
	if err := client.Start(ctx, pool); err != nil {
		stopInstrument()
		return nil, nil, err
	}
	return client, func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := client.Stop(stopCtx); err != nil {
			logger.Error("stop", "error", err)
		}
		stopInstrument()
	}, nil
}

// produce enqueues a few reports every second until ctx ends.
func produce(ctx context.Context, pool *pgxpool.Pool, tel *relayotel.Telemetry, logger *slog.Logger) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		specs := make([]relay.JobSpec, 1+rand.IntN(10))
		for i := range specs {
			specs[i] = BuildReport.Job(ReportArgs{Fail: rand.IntN(5) == 0, Discard: rand.IntN(20) == 0})
		}
		if _, err := relay.EnqueueMany(ctx, pool, specs, relay.Queue(queue), tel.EnqueueMiddleware()); err != nil && ctx.Err() == nil {
			logger.Warn("enqueue", "error", err)
		}
	}
}
