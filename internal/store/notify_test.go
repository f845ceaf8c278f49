package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/relaytest"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

// The payloads the schema's wakeup_payload function makes are the ones ParseWakeup reads:
// due now, due later (with the delay measured on the database's clock), priorities of
// either sign, and a queue name that itself holds colons.
func TestWakeupPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	db, s := newStoreTest(t)
	ctx := context.Background()
	fn := s.Table("wakeup_payload") // a function lives in the schema like a table
	for _, tc := range []struct {
		queue    string
		offset   time.Duration
		priority int
	}{
		{"default", -time.Minute, 0},
		{"default", 0, 32767},
		{"mail:eu:west", 2 * time.Second, -5},
		{"q", 90 * time.Minute, 7},
	} {
		var payload string
		var runAt, now time.Time
		err := db.QueryRow(ctx, `SELECT `+fn+`($1, now() + $2::interval, $3), now() + $2::interval, now()`,
			tc.queue, tc.offset, tc.priority).Scan(&payload, &runAt, &now)
		if err != nil {
			t.Fatal(err)
		}
		w, ok := store.ParseWakeup(payload)
		if !ok {
			t.Fatalf("ParseWakeup(%q) failed", payload)
		}
		if w.Queue != tc.queue {
			t.Errorf("%q: queue %q, want %q", payload, w.Queue, tc.queue)
		}
		if !w.At.RunAt.Equal(runAt) || w.At.Priority != tc.priority {
			t.Errorf("%q: at %v priority %d, want %v priority %d", payload, w.At.RunAt, w.At.Priority, runAt, tc.priority)
		}
		switch {
		case tc.offset <= 0 && w.In != 0:
			t.Errorf("%q: due in %v, want 0 (due now)", payload, w.In)
		case tc.offset > 0 && (w.In <= 0 || w.In > tc.offset):
			t.Errorf("%q: due in %v, want in (0, %v]", payload, w.In, tc.offset)
		}
		// A backup's wakeup (migration 015's wake) is the same payload with "b:".
		backup, ok := store.ParseWakeup("b" + payload[1:])
		if w.Backup || !ok || !backup.Backup || backup.Queue != w.Queue || backup.In != w.In || backup.At != w.At {
			t.Errorf("%q: as a backup's wakeup %+v (ok %v); want %+v marked Backup", payload, backup, ok, w)
		}
	}
}

// The channel a client LISTENs on for the wakeups addressed to it is the one the schema's
// client_channel names, and it fits in a channel name whatever the lengths of the schema's
// name and of the client's ID.
func TestClientChannelIsTheSchemas(t *testing.T) {
	t.Parallel()
	db, s := newStoreTest(t)
	for _, id := range []string{"a", "host-1234-abcdef", strings.Repeat("é", 64)} {
		var want string
		err := db.QueryRow(context.Background(), "SELECT "+s.Table("client_channel")+"($1, $2)", s.Channel(), id).Scan(&want)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.ClientChannel(id); got != want || len(got) >= 64 {
			t.Errorf("ClientChannel(%q) = %q (%d bytes), want the schema's %q, under 64 bytes", id, got, len(got), want)
		}
	}
}

func TestParseRejectsMalformedPayloads(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", "w:", "w:1:2:0:", "w:x:2:0:q", "w:1:y:0:q", "w:1:2:z:q", "w:1:2:q", "w:1:2:99999:q", "w:1", "x:1:2:0:q", "b:", "b:1:2:0:", "c:", "c:abc"} {
		if _, ok := store.ParseWakeup(p); ok {
			t.Errorf("ParseWakeup(%q) accepted a malformed payload", p)
		}
	}
	for _, p := range []string{"c:", "c:abc", "c:42", "c:42:", "c:42:x", "c::3", "w:1:2:q", ""} {
		if _, _, ok := store.ParseCancel(p); ok {
			t.Errorf("ParseCancel(%q) accepted a malformed payload", p)
		}
	}
	if id, attempt, ok := store.ParseCancel("c:42:3"); !ok || id != 42 || attempt != 3 {
		t.Errorf(`ParseCancel("c:42:3") = %d, %d, %v`, id, attempt, ok)
	}
	if q, ok := store.ParseQueueControl("q:tenant:7"); !ok || q != "tenant:7" {
		t.Errorf(`ParseQueueControl("q:tenant:7") = %q, %v`, q, ok)
	}
	for _, p := range []string{"q:", "w:1:2:0:q", "c:1"} {
		if _, ok := store.ParseQueueControl(p); ok {
			t.Errorf("ParseQueueControl(%q) accepted a malformed payload", p)
		}
	}
}

// FuzzParseWakeup checks that no payload, however mangled, panics the parser, and that a
// parsed wakeup always names a queue.
func FuzzParseWakeup(f *testing.F) {
	for _, seed := range []string{"w:0:1700000000000000:0:default", "w:1500:1700000000000000:-3:a:b", "c:7", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		if w, ok := store.ParseWakeup(payload); ok && w.Queue == "" {
			t.Fatalf("ParseWakeup(%q) accepted an empty queue", payload)
		}
		store.ParseCancel(payload)
	})
}
