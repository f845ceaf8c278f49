// Package exampledb connects the examples to a database: the one DATABASE_URL names, or a
// throwaway PostgreSQL started for the run, so that `go run ./examples/...` works as is.
package exampledb

import (
	"context"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay/internal/pgtest"
)

// Open returns a pool on DATABASE_URL, or on a throwaway server it starts; close closes the
// pool and stops that server.
func Open(ctx context.Context, logger *slog.Logger) (pool *pgxpool.Pool, close func(), err error) {
	url := os.Getenv("DATABASE_URL")
	stop := func() {}
	if url == "" {
		logger.Info("DATABASE_URL is not set; starting a throwaway PostgreSQL")
		server, err := pgtest.Start(ctx, pgtest.Options{})
		if err != nil {
			return nil, nil, err
		}
		stop, url = func() { _ = server.Stop() }, server.URL()
	}
	pool, err = pgxpool.New(ctx, url)
	if err != nil {
		stop()
		return nil, nil, err
	}
	return pool, func() {
		pool.Close()
		stop()
	}, nil
}
