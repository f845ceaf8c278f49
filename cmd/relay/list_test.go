package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// job list prints the jobs a filter selects, newest first, and pages with --after.
func TestJobList(t *testing.T) {
	ctx := context.Background()
	db := relaytest.NewDB(t)
	// Five jobs: failed and pending email jobs, one report job.
	if _, err := db.Exec(ctx, `
		INSERT INTO relay.jobs (kind, queue, args, state, finished_at, attempts)
		SELECT 'email', 'mail', '{}', 'failed', now(), '[{"attempt": 1, "error": "smtp: 550 mailbox unavailable\nmore"}]'
		FROM generate_series(1, 3);
		INSERT INTO relay.jobs (kind, queue, args) VALUES ('email', 'mail', '{}'), ('report', 'default', '{}');
		INSERT INTO relay.jobs (kind, queue, args, state, held_until)
		VALUES ('ledger', 'default', '{}', 'held', '2031-01-02T03:04:05Z')`); err != nil {
		t.Fatal(err)
	}
	base := []string{"--database-url", db.URL}
	list := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, append(append([]string{"job", "list"}, args...), base...), &out, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatalf("relay job list %v: %v", args, err)
		}
		return out.String()
	}
	lines := func(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

	all := lines(list())
	if len(all) != 7 || !strings.HasPrefix(all[0], "ID") || !strings.HasPrefix(all[2], "5 ") || !strings.Contains(all[2], "report") {
		t.Fatalf("job list = %q, want a header and 6 jobs, newest (6, the reservation; then 5, report) first", all)
	}
	if held := lines(list("--state", "held")); len(held) != 2 || !strings.Contains(held[1], "held") ||
		!strings.Contains(held[1], "held until "+time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC).Local().Format(time.RFC3339)) {
		t.Fatalf("held jobs = %q, want the reservation, with its deadline", held)
	}
	failed := lines(list("--state", "failed", "--queue", "mail", "--limit", "2"))
	if len(failed) != 4 || !strings.Contains(failed[1], "smtp: 550 mailbox unavailable") || strings.Contains(failed[1], "more") ||
		!strings.HasPrefix(failed[3], "more: add --after ") {
		t.Fatalf("failed jobs, 2 per page = %q, want 2 rows with the first line of their last error, then how to go on", failed)
	}
	rest := lines(list("--state", "failed", "--queue", "mail", "--limit", "2", "--after", strings.TrimPrefix(failed[3], "more: add --after ")))
	if len(rest) != 2 || !strings.HasPrefix(rest[1], "1 ") {
		t.Fatalf("second page = %q, want job 1 alone", rest)
	}
	var rec relay.JobRecord
	jsonLines := lines(list("--kind", "report", "--json"))
	if len(jsonLines) != 1 || json.Unmarshal([]byte(jsonLines[0]), &rec) != nil || rec.ID != 5 || rec.Kind != "report" || string(rec.Args) != "{}" {
		t.Fatalf("--json = %q, want the report job, with its args, as one line of JSON", jsonLines)
	}
	err := run(ctx, append([]string{"job", "list", "--state", "lost"}, base...), &bytes.Buffer{}, slog.New(slog.DiscardHandler))
	if !errors.Is(err, relay.ErrInvalidFilter) {
		t.Fatalf("an unknown state = %v, want ErrInvalidFilter", err)
	}
}

// An error of the library, which says "relay:" itself, is printed with the prefix once.
func TestErrorMessageHasOnePrefix(t *testing.T) {
	db := relaytest.NewDB(t)
	err := run(context.Background(), []string{"job", "show", "42", "--database-url", db.URL}, &bytes.Buffer{}, slog.New(slog.DiscardHandler))
	if !errors.Is(err, relay.ErrJobNotFound) {
		t.Fatalf("job show of a missing job = %v, want ErrJobNotFound", err)
	}
	if msg := errorMessage(err); strings.Count(msg, "relay:") != 1 || !strings.HasPrefix(msg, "relay: ") {
		t.Fatalf("printed as %q, want one leading \"relay: \"", msg)
	}
	if msg := errorMessage(errors.New("connect: refused")); msg != "relay: connect: refused" {
		t.Fatalf("an error of the CLI's own is printed as %q", msg)
	}
}

// Logs to a file or a pipe carry no colour codes.
func TestLogsToAFileHaveNoColour(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	newLogger(f).Error("relay: something failed", "job", 7)
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(got, []byte("\x1b[")) || !bytes.Contains(got, []byte("something failed")) {
		t.Fatalf("log written to a file = %q, want the message without escape codes", got)
	}
}
