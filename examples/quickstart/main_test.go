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
	// The example migrates the default "relay" schema itself: give it a database without.
	t.Setenv("DATABASE_URL", relaytest.NewDB(t, relaytest.Unmigrated()).URL)
	if err := run(context.Background(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
}
