package relaytest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

// Parallel tests that create the same application tables, types and triggers each see
// only their own: each has a database of its own, and relay's default schema works there
// without a relay.Schema option.
func TestDatabasesAreIsolated(t *testing.T) {
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := relaytest.NewDB(t)
			if _, err := db.Exec(ctx, `
				CREATE TYPE plan AS ENUM ('free', 'paid');
				CREATE TABLE signups (email text PRIMARY KEY, plan plan NOT NULL);
				CREATE FUNCTION upper_email() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN NEW.email := upper(NEW.email); RETURN NEW; END $$;
				CREATE TRIGGER upper_email BEFORE INSERT ON signups FOR EACH ROW EXECUTE FUNCTION upper_email();`); err != nil {
				t.Fatalf("create the application's tables: %v", err)
			}
			for j := range i + 1 {
				if _, err := db.Exec(ctx, "INSERT INTO signups VALUES ($1, 'free')", fmt.Sprintf("u%d@example.com", j)); err != nil {
					t.Fatal(err)
				}
			}
			var n int
			if err := db.QueryRow(ctx, "SELECT count(*) FROM signups").Scan(&n); err != nil || n != i+1 {
				t.Fatalf("signups = %d (%v), want this test's own %d", n, err, i+1)
			}
			if db.Schema != relay.DefaultSchema {
				t.Fatalf("db.Schema = %q, want the default %q", db.Schema, relay.DefaultSchema)
			}
			if err := relay.SetQueue(ctx, db, "q", relay.QueueSettings{GlobalLimit: i + 1}); err != nil {
				t.Fatalf("relay's default schema is not migrated: %v", err)
			}
			if info, err := relay.GetQueue(ctx, db, "q"); err != nil || info.GlobalLimit != i+1 {
				t.Fatalf("queue q = %+v (%v), want this test's own limit %d", info, err, i+1)
			}
		})
	}
}

// Setup runs once per test binary, on the template: every database made with it has the
// application's tables and data, and writes in one do not reach another.
func TestSetupPreparesEveryDatabaseOnce(t *testing.T) {
	ctx := context.Background()
	runs := 0
	setup := relaytest.Setup("plans", func(ctx context.Context, pool *pgxpool.Pool) error {
		runs++
		_, err := pool.Exec(ctx, "CREATE TABLE plans (name text PRIMARY KEY); INSERT INTO plans VALUES ('free')")
		return err
	})
	a, b := relaytest.NewDB(t, setup), relaytest.NewDB(t, setup)
	if _, err := a.Exec(ctx, "INSERT INTO plans VALUES ('paid')"); err != nil {
		t.Fatal(err)
	}
	var na, nb int
	if err := a.QueryRow(ctx, "SELECT count(*) FROM plans").Scan(&na); err != nil {
		t.Fatal(err)
	}
	if err := b.QueryRow(ctx, "SELECT count(*) FROM plans").Scan(&nb); err != nil {
		t.Fatal(err)
	}
	if na != 2 || nb != 1 || runs != 1 {
		t.Fatalf("plans: %d in a, %d in b, setup ran %d times; want 2, 1 and once", na, nb, runs)
	}
	if _, err := relay.CountJobs(ctx, b); err != nil {
		t.Fatalf("relay's tables are missing beside the setup's: %v", err)
	}
}

// A second pool reaches the same database; an unmigrated database has no relay tables;
// and a test's database is gone once the test ends.
func TestDatabaseLifecycle(t *testing.T) {
	ctx := context.Background()
	var name string
	t.Run("inner", func(t *testing.T) {
		db := relaytest.NewDB(t)
		if err := db.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		var other string
		if err := db.NewPool(t).QueryRow(ctx, "SELECT current_database()").Scan(&other); err != nil || other != name {
			t.Fatalf("NewPool reached %q (%v), want %q", other, err, name)
		}
		bare := relaytest.NewDB(t, relaytest.Unmigrated())
		var tables int
		if err := bare.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'relay'").Scan(&tables); err != nil || tables != 0 {
			t.Fatalf("an unmigrated database has %d relay tables (%v)", tables, err)
		}
	})
	admin, err := pgxpool.New(ctx, relaytest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil || exists {
		t.Fatalf("database %s still exists after its test (%v)", name, err)
	}
}
