package main

import (
	"context"
	"log/slog"
	"testing"

	"github.com/relayq/relay/relaytest"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

// TestQuickstartRuns runs the example as `go run` would, against the test server.
func TestQuickstartRuns(t *testing.T) {
	t.Setenv("DATABASE_URL", relaytest.URL(t))
	// The example works in the default "relay" schema: clear it so reruns start clean.
	pool := relaytest.NewPool(t)
	if _, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS relay CASCADE"); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
}
