package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// The bulk commands print the count first and change nothing without --yes; with it,
// they change exactly the jobs the filter selects. relay job delete deletes one.
func TestBulkAndDeleteCommands(t *testing.T) {
	ctx := context.Background()
	db := relaytest.NewDB(t)
	base := []string{"--database-url", db.URL, "--schema", db.Schema}
	logger := slog.New(slog.DiscardHandler)
	cmd := func(args ...string) (string, error) {
		t.Helper()
		var out bytes.Buffer
		err := run(ctx, append(args, base...), &out, logger)
		return out.String(), err
	}
	kind := relay.NewKind[struct{}]("email")
	enqueue := func(queue string) int64 {
		id, err := relay.Enqueue(ctx, db, kind, struct{}{}, relay.Queue(queue), relay.Schema(db.Schema))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	var cancelled []int64
	for range 3 {
		cancelled = append(cancelled, enqueue("mail"))
	}
	other := enqueue("other")

	out, err := cmd("jobs", "cancel", "--queue", "mail", "--dry-run")
	if err != nil || out != "3 jobs would be cancelled (dry run)\n" {
		t.Fatalf("jobs cancel --dry-run = %q, %v", out, err)
	}
	out, err = cmd("jobs", "cancel", "--queue", "mail")
	if err == nil || !strings.Contains(err.Error(), "--yes") || out != "3 jobs would be cancelled\n" {
		t.Fatalf("jobs cancel without --yes = %q, %v; want the count and an error asking for --yes", out, err)
	}
	if rec, _ := relay.GetJob(ctx, db, cancelled[0], relay.Schema(db.Schema)); rec.State != relay.StatePending {
		t.Fatalf("a job is %s before --yes", rec.State)
	}
	out, err = cmd("jobs", "cancel", "--queue", "mail", "--yes")
	if err != nil || out != "3 jobs match\ncancelled 3 jobs\n" {
		t.Fatalf("jobs cancel --yes = %q, %v", out, err)
	}
	out, err = cmd("jobs", "delete", "--state", "cancelled", "--before", "0s", "--yes")
	if err != nil || out != "3 jobs match\ndeleted 3 jobs\n" {
		t.Fatalf("jobs delete --yes = %q, %v", out, err)
	}
	for _, id := range cancelled {
		if _, err := relay.GetJob(ctx, db, id, relay.Schema(db.Schema)); !errors.Is(err, relay.ErrJobNotFound) {
			t.Errorf("job %d after jobs delete: %v", id, err)
		}
	}
	if _, err := cmd("jobs", "retry", "--state", "pending", "--yes"); !errors.Is(err, relay.ErrInvalidFilter) {
		t.Errorf("jobs retry --state pending = %v, want ErrInvalidFilter", err)
	}
	if _, err := cmd("jobs", "delete", "--before", "yesterday", "--dry-run"); err == nil {
		t.Error("--before yesterday was taken")
	}

	if _, err := cmd("job", "delete", strconv.FormatInt(other, 10)); err != nil {
		t.Fatalf("job delete: %v", err)
	}
	if _, err := cmd("job", "delete", strconv.FormatInt(other, 10)); !errors.Is(err, relay.ErrJobNotFound) {
		t.Errorf("job delete of a deleted job = %v, want ErrJobNotFound", err)
	}
	out, err = cmd("schedule", "list")
	if err != nil || !strings.HasPrefix(out, "NAME") {
		t.Errorf("schedule list = %q, %v", out, err)
	}
}
