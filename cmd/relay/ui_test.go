package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/relayq/relay/internal/testlog"
	"github.com/relayq/relay/relaytest"
)

// relay ui serves the dashboard, on the loopback address unless told otherwise, and with
// --basic-auth only to those who give the user and password.
func TestUIServesBehindBasicAuth(t *testing.T) {
	var c cli
	parser, err := kong.New(&c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse([]string{"ui", "--database-url", "postgres://x"}); err != nil {
		t.Fatal(err)
	}
	if c.UI.Listen != "127.0.0.1:8080" {
		t.Errorf("relay ui listens on %q by default, want 127.0.0.1:8080", c.UI.Listen)
	}

	db := relaytest.NewDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan string, 1) // the address of the log record that says the dashboard serves
	logger := slog.New(testlog.Func(func(r slog.Record) {
		if addr, ok := testlog.Attr(r, "addr"); ok {
			addrs <- addr.String()
		}
	}))
	t.Setenv("RELAY_UI_BASIC_AUTH", "ops:s3cret")
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"ui", "--database-url", db.URL, "--listen", "127.0.0.1:0", "--read-only"}, io.Discard, logger)
	}()
	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("relay ui: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("relay ui did not start serving")
	}
	for _, tc := range []struct {
		user, password string
		want           int
	}{{"", "", http.StatusUnauthorized}, {"ops", "wrong", http.StatusUnauthorized}, {"ops", "s3cret", http.StatusOK}} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET / as %q:%q: %s, want %d", tc.user, tc.password, resp.Status, tc.want)
		}
		if tc.want == http.StatusOK && (!strings.Contains(string(body), "Overview") || !strings.Contains(string(body), "read-only")) {
			t.Errorf("GET / shows no read-only overview:\n%s", body)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("relay ui after its context ended: %v", err)
	}
}
