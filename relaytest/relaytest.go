// Package relaytest helps test code that uses relay against a real PostgreSQL: the same
// helpers relay's own tests use.
//
// Tests get a server from DATABASE_URL when it is set; otherwise the first test that needs
// one starts a throwaway PostgreSQL from the installed server binaries (initdb into a
// temporary directory, a free port on 127.0.0.1, run as the postgres user when the test
// runs as root), which [Main] stops when the tests end:
//
//	func TestMain(m *testing.M) { relaytest.Main(m) }
//
//	func TestSignup(t *testing.T) {
//		t.Parallel()
//		db := relaytest.NewDB(t) // a pool on a new, migrated schema of its own
//		// ... run code that enqueues with relay.Schema(db.Schema) ...
//		jobs := relaytest.Enqueued(t, db, SendEmail) // SendEmail is a relay.Kind
//		err := relaytest.Work(ctx, t, SendEmail, sendEmail, EmailArgs{To: "ada@example.com"})
//	}
package relaytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/pgtest"
)

// Main runs the tests of a package and then stops the throwaway server, if one was
// started. Call it from TestMain.
func Main(m *testing.M) { pgtest.RunMain(m) }

// URL returns the database URL tests use: DATABASE_URL if set, else the throwaway
// server's, starting it on first use. It fails the test if neither is possible, saying
// how to install PostgreSQL or set DATABASE_URL.
func URL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url, err := pgtest.SharedURL(ctx)
	if err != nil {
		t.Fatalf("relaytest: no PostgreSQL for tests: %v", err)
	}
	return url
}

// DB is a pool whose relay tables live in a schema of the test's own.
type DB struct {
	*pgxpool.Pool
	// Schema is the test's schema: pass relay.Schema(db.Schema) to enqueue and
	// relay.Config{Schema: db.Schema} to clients.
	Schema string
}

// NewDB creates a new schema with a unique name, migrates it and returns a new pool for it.
// Both are removed when the test ends. Tests that each use their own DB may run in parallel.
func NewDB(t testing.TB) *DB {
	t.Helper()
	pool := NewPool(t)
	schema := "relaytest_" + randomSuffix()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := relay.Migrate(ctx, pool, relay.Schema(schema)); err != nil {
		t.Fatalf("relaytest: migrate schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Logf("relaytest: drop schema %s: %v", schema, err)
		}
	})
	return &DB{Pool: pool, Schema: schema}
}

// NewPool returns a new pool on the test database, closed when the test ends. Its
// connections are its own, so a test may terminate them without disturbing other tests.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(URL(t))
	if err != nil {
		t.Fatalf("relaytest: parse database URL: %v", err)
	}
	cfg.MaxConns = 8
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("relaytest: connect: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
