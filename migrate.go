package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/migrations"
)

// versionTable records which migrations have been applied to a schema.
const versionTable = "schema_migrations"

// Migrate creates relay's schema (default [DefaultSchema]) if needed and applies every
// migration it lacks, in one transaction under an advisory lock, so any number of
// processes may call it at start-up at once: one applies, the others wait and find
// nothing left to do.
//
// A migration that alters a table needs its exclusive lock, which waits for every open
// transaction that used the table, and meanwhile holds up every statement on the table
// that comes after it: a handler's long transaction around [CompleteTx] would stop every
// enqueue and claim until it ends. So each statement waits at most [MigrationLockTimeout]
// for a lock; if one cannot have it, the whole transaction is rolled back and tried again
// after a pause (100 ms, doubling up to 5 s), until it succeeds or ctx ends. relay's
// statements are then held up a second at a time at most.
func Migrate(ctx context.Context, db Beginner, opts ...MigrateOption) error {
	if err := checkDB(db, "Migrate"); err != nil {
		return err
	}
	s, err := migrateStore(opts)
	if err != nil {
		return err
	}
	all, err := migrations.All()
	if err != nil {
		return fmt.Errorf("relay: migrate: %w", err)
	}
	retry := migrationRetry().Series()
	var refused error // the last try's lock_not_available, if any
	for tries := 1; ; tries++ {
		err := migrateOnce(ctx, db, s, all)
		switch {
		case isLockNotAvailable(err) && ctx.Err() == nil:
			refused = err
			if retry.Wait(ctx, nil) == nil {
				continue
			}
		case err == nil || refused == nil || ctx.Err() == nil:
			return err
		}
		// ctx ended while a try waited for a lock, or between two tries.
		return fmt.Errorf("%w; gave up after %d tries of %v each, as %w: an open transaction holds a lock the migration "+
			"needs (pg_locks and pg_stat_activity show which); end it, or migrate once it has ended", refused, tries,
			MigrationLockTimeout, context.Cause(ctx))
	}
}

// MigrationLockTimeout is how long [Migrate] waits for each lock a migration takes before it
// rolls back and tries again later; [MigrationSQL]'s script sets it too.
const MigrationLockTimeout = time.Second

// migrationRetry spaces the tries of a migration that could not have a lock.
func migrationRetry() backoff.Policy {
	return backoff.Policy{Initial: 100 * time.Millisecond, Multiplier: 2, Max: 5 * time.Second, Jitter: 0.2}
}

// migrateOnce applies the migrations that schema s lacks, in one transaction.
func migrateOnce(ctx context.Context, db Beginner, s *store.Store, all []migrations.Migration) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		for _, stmt := range migrationPreamble(s) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("relay: migrate schema %q: %w", s.Schema(), err)
			}
		}
		applied, err := appliedVersions(ctx, tx, s)
		if err != nil {
			return fmt.Errorf("relay: migrate schema %q: %w", s.Schema(), err)
		}
		for _, m := range all {
			if applied[m.Version] {
				continue
			}
			for _, stmt := range []string{m.SQL, recordMigration(s, m)} {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("relay: migrate schema %q: apply %s: %w", s.Schema(), m.Name, err)
				}
			}
		}
		return nil
	})
}

// isLockNotAvailable reports a statement that waited lock_timeout for a lock in vain.
func isLockNotAvailable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03" // lock_not_available
}

// MigrationSQL returns, as one script, the SQL that [Migrate] would run against db now:
// for users who apply migrations with their own tool. It only reads from db. The script
// is empty of migrations (but still valid) when the schema is up to date.
func MigrationSQL(ctx context.Context, db DB, opts ...MigrateOption) (string, error) {
	if err := checkDB(db, "MigrationSQL"); err != nil {
		return "", err
	}
	s, err := migrateStore(opts)
	if err != nil {
		return "", err
	}
	all, err := migrations.All()
	if err != nil {
		return "", fmt.Errorf("relay: migration SQL: %w", err)
	}
	applied, err := appliedVersions(ctx, db, s)
	if err != nil && !isUndefinedTable(err) {
		return "", fmt.Errorf("relay: read applied migrations of schema %q: %w", s.Schema(), err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "-- Each statement waits at most %v for a lock (lock_timeout), so that a long transaction on\n"+
		"-- relay's tables cannot make this script hold up their other statements for longer.\n"+
		"-- If it fails with lock_not_available (SQLSTATE 55P03), run it again.\n", MigrationLockTimeout)
	b.WriteString("BEGIN;\n\n")
	for _, stmt := range migrationPreamble(s) {
		b.WriteString(stmt + ";\n")
	}
	for _, m := range all {
		if applied[m.Version] {
			continue
		}
		fmt.Fprintf(&b, "\n-- %s\n%s\n%s;\n", m.Name, strings.TrimSpace(m.SQL), recordMigration(s, m))
	}
	b.WriteString("\nCOMMIT;\n")
	return b.String(), nil
}

func migrateStore(opts []MigrateOption) (*store.Store, error) {
	o := migrateOptions{schema: DefaultSchema}
	for _, opt := range opts {
		opt.applyMigrate(&o)
	}
	s, err := store.For(o.schema)
	if err != nil {
		return nil, fmt.Errorf("relay: migrate: %w", err)
	}
	return s, nil
}

// migrationPreamble takes the lock, bounds every later wait for a lock (see [Migrate]),
// makes sure the schema and version table exist, and points unqualified names in the
// migrations at the schema.
func migrationPreamble(s *store.Store) []string {
	quoted := pgx.Identifier{s.Schema()}.Sanitize()
	return []string{
		// Two-key lock: relay's own key space, then the schema, so that migrations of
		// different schemas do not wait for each other. It waits as long as it takes: the
		// other migrator holds up no one.
		fmt.Sprintf("SELECT pg_advisory_xact_lock(hashtext('relay.migrate'), hashtext(%s))", quoteLiteral(s.Schema())),
		fmt.Sprintf("SET LOCAL lock_timeout = %d", MigrationLockTimeout.Milliseconds()),
		"CREATE SCHEMA IF NOT EXISTS " + quoted,
		"SET LOCAL search_path TO " + quoted,
		"CREATE TABLE IF NOT EXISTS " + versionTable + ` (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`,
	}
}

func recordMigration(s *store.Store, m migrations.Migration) string {
	return fmt.Sprintf("INSERT INTO %s (version, name) VALUES (%d, %s)", s.Table(versionTable), m.Version, quoteLiteral(m.Name))
}

func appliedVersions(ctx context.Context, db DB, s *store.Store) (map[int]bool, error) {
	rows, err := db.Query(ctx, "SELECT version FROM "+s.Table(versionTable))
	if err != nil {
		return nil, err
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, err
	}
	applied := make(map[int]bool, len(versions))
	for _, v := range versions {
		applied[int(v)] = true
	}
	return applied, nil
}

// checkMigrated reports, wrapping ErrNotMigrated, a schema that lacks a migration.
func checkMigrated(ctx context.Context, db DB, s *store.Store) error {
	all, err := migrations.All()
	if err != nil {
		return err
	}
	applied, err := appliedVersions(ctx, db, s)
	switch {
	case isUndefinedTable(err):
		return fmt.Errorf("%w: schema %q has no relay tables; %s", ErrNotMigrated, s.Schema(), howToMigrate(s.Schema()))
	case err != nil:
		return fmt.Errorf("relay: check migrations of schema %q: %w", s.Schema(), err)
	}
	for _, m := range all {
		if !applied[m.Version] {
			return fmt.Errorf("%w: schema %q lacks migration %s; %s", ErrNotMigrated, s.Schema(), m.Name, howToMigrate(s.Schema()))
		}
	}
	return nil
}

// howToMigrate says how to migrate schema, naming it unless it is the default one.
func howToMigrate(schema string) string {
	if schema == DefaultSchema {
		return "run relay.Migrate(ctx, pool) or `relay migrate --apply`"
	}
	return fmt.Sprintf("run relay.Migrate(ctx, pool, relay.Schema(%q)) or `relay migrate --apply --schema %s`",
		schema, shellQuote(schema))
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") // undefined_table, invalid_schema_name
}

func isUndefinedFunction(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42883" // undefined_function
}

// quoteLiteral quotes s as an SQL string literal. It is used only where a script is
// printed for a human to run and so cannot carry bind parameters.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
