package relay_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// TestMigrationsYieldSchemaSQL applies schema.sql to one schema and every migration to
// another and compares what the catalogs say about each.
func TestMigrationsYieldSchemaSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := relaytest.NewDB(t, relaytest.Unmigrated()).Pool
	fromFile, fromMigrations := "relaytest_file_"+randomHex(), "relaytest_mig_"+randomHex()
	t.Cleanup(func() {
		pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+fromFile+" CASCADE; DROP SCHEMA IF EXISTS "+fromMigrations+" CASCADE")
	})

	file, err := os.ReadFile("schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	script := string(file)
	for _, header := range []string{"CREATE SCHEMA IF NOT EXISTS relay;", "SET search_path TO relay;"} {
		if !strings.Contains(script, header) {
			t.Fatalf("schema.sql no longer contains %q; update this test", header)
		}
	}
	script = strings.Replace(script, "CREATE SCHEMA IF NOT EXISTS relay;", "CREATE SCHEMA "+fromFile+";", 1)
	script = strings.Replace(script, "SET search_path TO relay;", "SET LOCAL search_path TO "+fromFile+";", 1)
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, script); return err }); err != nil {
		t.Fatalf("apply schema.sql: %v", err)
	}
	if err := relay.Migrate(ctx, pool, relay.Schema(fromMigrations)); err != nil {
		t.Fatalf("migrate: %v", err)
	}

	want, got := describeSchema(t, pool, fromFile), describeSchema(t, pool, fromMigrations)
	if len(want) < 10 {
		t.Fatalf("schema.sql describes only %d objects; the comparison is not looking at it", len(want))
	}
	if !slices.Equal(want, got) {
		t.Errorf("migrations and schema.sql differ\nonly in schema.sql:\n  %s\nonly from migrations:\n  %s",
			strings.Join(minus(want, got), "\n  "), strings.Join(minus(got, want), "\n  "))
	}
}

// describeSchema lists, as sorted lines with the schema name taken out, the columns,
// indexes, constraints, triggers and functions of a schema.
func describeSchema(t *testing.T, pool relay.DB, schema string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
		       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
		       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
		       || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'v') AND a.attnum > 0 AND NOT a.attisdropped
		UNION ALL
		SELECT 'table ' || c.relname || ' options ' || coalesce(array_to_string(c.reloptions, ','), '')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind = 'r'
		UNION ALL
		SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = $1
		UNION ALL
		SELECT 'constraint ' || conrelid::regclass::text || ' ' || pg_get_constraintdef(co.oid)
		FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
		WHERE n.nspname = $1
		UNION ALL
		SELECT 'view ' || viewname || ' ' || definition FROM pg_views WHERE schemaname = $1
		UNION ALL
		SELECT 'trigger ' || pg_get_triggerdef(tg.oid)
		FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND NOT tg.tgisinternal
		UNION ALL
		SELECT 'function ' || pg_get_functiondef(p.oid)
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = $1`, schema)
	if err != nil {
		t.Fatalf("describe schema %s: %v", schema, err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("describe schema %s: %v", schema, err)
	}
	for i, l := range lines {
		lines[i] = strings.ReplaceAll(l, schema, "<schema>")
	}
	slices.Sort(lines)
	return lines
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// The jobs table has no CHECK constraints (migration 022): PostgreSQL parses and plans a
// table's constraints again at every statement that writes it, which cost every enqueue,
// claim and outcome batch; relay checks every value before it writes one instead. A
// migration that adds one back fails here, not only in the bench.
func TestJobsTableHasNoCheckConstraints(t *testing.T) {
	t.Parallel()
	db := relaytest.NewDB(t)
	var checks []string
	err := db.QueryRow(context.Background(), `SELECT coalesce(array_agg(conname ORDER BY conname), '{}') FROM pg_constraint
		WHERE conrelid = ($1 || '.jobs')::regclass AND contype = 'c'`, pgx.Identifier{db.Schema}.Sanitize()).Scan(&checks)
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) > 0 {
		t.Errorf("the jobs table has CHECK constraints %v; every INSERT and UPDATE of it would parse and plan them again", checks)
	}
}

// TestMigrateConcurrently runs Migrate from many goroutines at once on a new schema: the
// advisory lock makes exactly one apply each migration and none fail.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := relaytest.NewDB(t, relaytest.Unmigrated()).Pool
	schema := "relaytest_conc_" + randomHex()
	t.Cleanup(func() { pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- relay.Migrate(ctx, pool, relay.Schema(schema)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	var applied, distinct int
	if err := pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT version) FROM "+schema+".schema_migrations").Scan(&applied, &distinct); err != nil {
		t.Fatal(err)
	}
	if applied == 0 || applied != distinct {
		t.Fatalf("schema_migrations has %d rows for %d versions; want one row per version", applied, distinct)
	}
	// Up to date: the printed script applies nothing.
	script, err := relay.MigrationSQL(ctx, pool, relay.Schema(schema))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(script, "INSERT INTO") {
		t.Fatalf("MigrationSQL of an up-to-date schema still applies migrations:\n%s", script)
	}
}

// A migration that alters the jobs table needs its exclusive lock, which waits for every
// open transaction that used the table, and holds up every statement that comes after it.
// Migrate waits for a lock at most MigrationLockTimeout at a time: an enqueue behind it
// goes through while a long transaction is open, the migration is applied once that
// transaction ends, and a migration that cannot have its lock before ctx ends says so.
func TestMigrationWaitingForALockHoldsUpNoOne(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := relaytest.NewDB(t)
	kind := relay.NewKind[struct{}]("noop")
	// Migration 022 pending again: it takes the jobs table's exclusive lock whatever it
	// finds to drop.
	if _, err := db.Exec(ctx, "DELETE FROM "+pgx.Identifier{db.Schema, "schema_migrations"}.Sanitize()+" WHERE version = 22"); err != nil {
		t.Fatal(err)
	}
	// A producer's transaction, left open: it holds a lock on jobs until it ends.
	long, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Rollback(ctx)
	if _, err := relay.Enqueue(ctx, long, kind, struct{}{}); err != nil {
		t.Fatal(err)
	}

	// Given up when ctx ends while the lock is held.
	short, cancel := context.WithTimeout(ctx, 3*relay.MigrationLockTimeout/2)
	err = relay.Migrate(short, db.Pool)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "holds a lock the migration needs") {
		t.Fatalf("Migrate while a transaction holds the lock it needs, until its context ended: %v; want an error that says so, wrapping the context's", err)
	}

	migrated := make(chan error, 1)
	go func() { migrated <- relay.Migrate(ctx, db.Pool) }()
	relaytest.WaitFor(t, 15*time.Second, "the migration to wait for the jobs table's lock", func() bool {
		var waiting bool
		err := db.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE relation = ($1 || '.jobs')::regclass
			AND mode = 'AccessExclusiveLock' AND NOT granted)`, pgx.Identifier{db.Schema}.Sanitize()).Scan(&waiting)
		return err == nil && waiting
	})
	// Behind it in the lock's queue, another enqueue waits at most until the migration's
	// wait times out, not until the long transaction ends.
	enqueueCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := relay.Enqueue(enqueueCtx, db.Pool, kind, struct{}{}); err != nil {
		t.Fatalf("an enqueue behind a migration waiting for a lock, while a long transaction holds it: %v", err)
	}
	select {
	case err := <-migrated:
		t.Fatalf("Migrate returned %v while a transaction still held the lock it needs", err)
	default:
	}
	if err := long.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, migrated, "Migrate once the long transaction ended"); err != nil {
		t.Fatalf("Migrate once the long transaction ended: %v", err)
	}
	if err := relay.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	script, err := relay.MigrationSQL(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(script, "022_") {
		t.Errorf("migration 022 is still pending after Migrate returned:\n%s", script)
	}
}

// TestMigrationSQLAppliesCleanly prints the script for a new schema, runs it as a user's
// migration tool would, and checks that a client accepts the result.
func TestMigrationSQLAppliesCleanly(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[struct{}]("noop")
	ctx := context.Background()
	pool := relaytest.NewDB(t, relaytest.Unmigrated()).Pool
	schema := `relaytest "odd" name ` + randomHex() // quoting is exercised, not assumed
	t.Cleanup(func() {
		pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})

	script, err := relay.MigrationSQL(ctx, pool, relay.Schema(schema))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, script); err != nil {
		t.Fatalf("run printed script: %v\n%s", err, script)
	}
	c := relay.New(relay.Config{Schema: schema})
	relay.Handle(c, kind, func(context.Context, *relay.Job[struct{}]) error { return nil })
	if err := c.Start(ctx, pool); err != nil {
		t.Fatalf("Start on a schema migrated by the printed script: %v", err)
	}
	c.Stop(ctx)

	unmigrated := relay.New(relay.Config{Schema: "relaytest_missing_" + randomHex()})
	relay.Handle(unmigrated, kind, func(context.Context, *relay.Job[struct{}]) error { return nil })
	if err := unmigrated.Start(ctx, pool); !errors.Is(err, relay.ErrNotMigrated) {
		t.Fatalf("Start on a missing schema = %v, want ErrNotMigrated", err)
	}
}
