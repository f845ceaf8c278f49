package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/relayq/relay/relaytest"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

func TestMigratePrintsThenApplies(t *testing.T) {
	ctx := context.Background()
	db := relaytest.NewDB(t, relaytest.Unmigrated())
	url, pool := db.URL, db.Pool
	schema := "relaytest_cli_" + strings.ReplaceAll(t.Name(), "/", "_")
	t.Cleanup(func() { pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`) })
	logger := slog.New(slog.DiscardHandler)

	var printed bytes.Buffer
	if err := run(ctx, []string{"migrate", "--database-url", url, "--schema", schema}, &printed, logger); err != nil {
		t.Fatalf("migrate (print): %v", err)
	}
	for _, want := range []string{"BEGIN;", `CREATE SCHEMA IF NOT EXISTS "` + schema + `"`, "CREATE TABLE jobs", "INSERT INTO", "COMMIT;"} {
		if !strings.Contains(printed.String(), want) {
			t.Errorf("printed SQL lacks %q:\n%s", want, printed.String())
		}
	}
	var exists bool
	pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists)
	if exists {
		t.Fatal("printing the SQL created the schema; it must only read")
	}

	if err := run(ctx, []string{"migrate", "--database-url", url, "--schema", schema, "--apply"}, &bytes.Buffer{}, logger); err != nil {
		t.Fatalf("migrate --apply: %v", err)
	}
	var versions int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM "`+schema+`".schema_migrations`).Scan(&versions); err != nil || versions == 0 {
		t.Fatalf("after --apply: %d versions recorded, err %v", versions, err)
	}

	var again bytes.Buffer
	if err := run(ctx, []string{"migrate", "--database-url", url, "--schema", schema}, &again, logger); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(again.String(), "INSERT INTO") {
		t.Fatalf("an up-to-date schema still prints migrations:\n%s", again.String())
	}
}

func TestMigrateRequiresDatabaseURL(t *testing.T) {
	t.Setenv("DATABASE_URL", "") // restored after the test
	os.Unsetenv("DATABASE_URL")
	err := run(context.Background(), []string{"migrate"}, &bytes.Buffer{}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "database-url") {
		t.Fatalf("migrate without a URL = %v, want an error naming --database-url", err)
	}
}
