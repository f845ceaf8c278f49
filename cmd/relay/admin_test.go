package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// An operator's round trip: set a queue up, pause it, read it back, resume it; then show,
// cancel and retry a job. Each command must change what the library reads.
func TestQueueAndJobCommands(t *testing.T) {
	ctx := context.Background()
	db := relaytest.NewDB(t)
	base := []string{"--database-url", db.URL, "--schema", db.Schema}
	logger := slog.New(slog.DiscardHandler)
	cmd := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, append(args, base...), &out, logger); err != nil {
			t.Fatalf("relay %v: %v", args, err)
		}
		return out.String()
	}

	cmd("queue", "set", "billing", "--ordered", "--on-failure", "move-on", "--global-limit", "3")
	cmd("queue", "pause", "billing")
	var info relay.QueueInfo
	if err := json.Unmarshal([]byte(cmd("queue", "show", "billing")), &info); err != nil {
		t.Fatal(err)
	}
	want := relay.QueueSettings{Ordered: true, OnFailure: relay.MoveOnAfterFailure, GlobalLimit: 3}
	if info.QueueSettings != want || !info.Paused {
		t.Fatalf("queue show = %+v, want %+v and paused", info, want)
	}
	// Only the settings given change: the queue stays ordered and moving on.
	cmd("queue", "set", "billing", "--global-limit", "5")
	if got, err := relay.GetQueue(ctx, db, "billing", relay.Schema(db.Schema)); err != nil ||
		got.QueueSettings != (relay.QueueSettings{Ordered: true, OnFailure: relay.MoveOnAfterFailure, GlobalLimit: 5}) {
		t.Fatalf("after setting only the limit: %+v, %v", got.QueueSettings, err)
	}
	cmd("queue", "set", "billing", "--no-ordered")
	if got, _ := relay.GetQueue(ctx, db, "billing", relay.Schema(db.Schema)); got.Ordered || got.GlobalLimit != 5 {
		t.Fatalf("after --no-ordered: %+v", got.QueueSettings)
	}
	cmd("queue", "resume", "billing")
	if got, err := relay.GetQueue(ctx, db, "billing", relay.Schema(db.Schema)); err != nil || got.Paused {
		t.Fatalf("after resume: %+v, %v; want not paused", got, err)
	}

	id, err := relay.Enqueue(ctx, db, relay.NewKind[map[string]string]("email"), map[string]string{"to": "ada@example.com"}, relay.Schema(db.Schema))
	if err != nil {
		t.Fatal(err)
	}
	idArg := func() string { b, _ := json.Marshal(id); return string(b) }()
	cmd("job", "cancel", idArg)
	var rec relay.JobRecord
	if err := json.Unmarshal([]byte(cmd("job", "show", idArg)), &rec); err != nil {
		t.Fatal(err)
	}
	var args map[string]string
	if err := json.Unmarshal(rec.Args, &args); err != nil || rec.ID != id || rec.State != relay.StateCancelled || args["to"] != "ada@example.com" {
		t.Fatalf("job show after cancel = id %d state %s args %s (%v)", rec.ID, rec.State, rec.Args, err)
	}
	cmd("job", "retry", idArg)
	if got, err := relay.GetJob(ctx, db, id, relay.Schema(db.Schema)); err != nil || got.State != relay.StatePending {
		t.Fatalf("after retry: %v, %v; want pending", got.State, err)
	}

	// Errors come back as the library's, for scripts to act on.
	err = run(ctx, append([]string{"job", "retry", idArg}, base...), &bytes.Buffer{}, logger)
	if !errors.Is(err, relay.ErrJobNotRetryable) {
		t.Fatalf("retry of a pending job = %v, want ErrJobNotRetryable", err)
	}
	err = run(ctx, append([]string{"queue", "set", "x", "--on-failure", "explode"}, base...), &bytes.Buffer{}, logger)
	if err == nil {
		t.Fatal("queue set with an unknown --on-failure succeeded")
	}
}
