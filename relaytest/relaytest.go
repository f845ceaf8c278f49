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
//		db := relaytest.NewDB(t) // a database of its own, with relay's tables migrated
//		// ... run code that enqueues, as in production ...
//		jobs := relaytest.Enqueued(t, db, SendEmail) // SendEmail is a relay.Kind
//		err := relaytest.Work(ctx, t, SendEmail, sendEmail, EmailArgs{To: "ada@example.com"})
//	}
//
// Each test's database is a copy of a template migrated once per test binary, so it costs
// tens of milliseconds, and tests share nothing: not relay's tables, not the
// application's (put those in the template with [Setup]).
package relaytest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/relayq/relay/internal/pgtest"
)

// Main runs the tests of a package, drops the template databases they were copied from
// and stops the throwaway server, if one was started. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	dropTemplates()
	pgtest.StopShared()
	os.Exit(code)
}

// URL returns the URL of the server tests use: DATABASE_URL if set, else the throwaway
// server's, starting it on first use. It names the server's own database, where
// [NewDB] creates each test's; a test connects to its database with [DB].URL. It fails
// the test if no server can be had, saying how to install PostgreSQL or set DATABASE_URL.
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
