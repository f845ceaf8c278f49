package relay_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// A client statement that finds the shared pool with room, but gets no connection from it
// (a handler's Begin took the last one first, or here, the connection is slow to open),
// runs on a reserved connection after a short wait, rather than queueing behind the
// application for as long as it likes.
func TestClientStatementsDoNotQueueForTheSharedPool(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	pool := b.pool(func(cfg *pgxpool.Config) {
		cfg.MaxConns = 2
		cfg.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
			if cc.RuntimeParams["application_name"] == relay.ReservedApplicationName("starved") {
				return nil
			}
			select { // the shared pool's connections open only once the test ends
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	t.Cleanup(func() { close(release) }) // before the pool closes: cleanups run last-in first
	conns := relay.NewClientConns(t, pool, 2, "starved")

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var app string
	if err := conns.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app); err != nil {
		t.Fatalf("the statement did not run: %v", err)
	}
	if want := relay.ReservedApplicationName("starved"); app != want {
		t.Errorf("ran on a connection named %q, want a reserved one (%q)", app, want)
	}
	if _, err := conns.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("a second statement did not run: %v", err)
	}
}
