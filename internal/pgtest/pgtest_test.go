package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { RunMain(m) }

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// startServer starts a private server and stops it when the test ends, so a
// failing assertion never leaks a postgres process.
func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	srv, err := Start(testCtx(t), opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return srv
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func setting(t *testing.T, ctx context.Context, conn *pgx.Conn, name string) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
		t.Fatalf("current_setting(%s): %v", name, err)
	}
	return v
}

func TestStartAndQuery(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{Settings: map[string]string{
		"max_connections": "50",
		// A quote in the value proves settings are escaped, not spliced.
		"cluster_name": "it's pgtest",
	}})
	ctx := testCtx(t)

	if !strings.Contains(srv.URL(), "127.0.0.1:") || srv.Port() <= 0 {
		t.Fatalf("URL %q / Port %d look wrong", srv.URL(), srv.Port())
	}
	conn := connect(t, ctx, srv.URL())

	var sum int
	if err := conn.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&sum); err != nil || sum != 42 {
		t.Fatalf("SELECT 41+1 = %d, %v", sum, err)
	}
	for name, want := range map[string]string{
		"max_connections":    "50", // user setting overrides the default 200
		"cluster_name":       "it's pgtest",
		"fsync":              "off", // non-durable by default
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"shared_buffers":     "128MB",
		"listen_addresses":   "127.0.0.1",
		"port":               strconv.Itoa(srv.Port()),
		"server_encoding":    "UTF8",
	} {
		if got := setting(t, ctx, conn, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if tail := srv.LogTail(50); !strings.Contains(tail, "ready to accept connections") {
		t.Errorf("LogTail does not show startup:\n%s", tail)
	}
	if got := srv.LogTail(1); strings.Contains(got, "\n") {
		t.Errorf("LogTail(1) returned several lines: %q", got)
	}
}

func TestDurableKeepsDefaults(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{Durable: true})
	ctx := testCtx(t)
	conn := connect(t, ctx, srv.URL())
	for _, name := range []string{"fsync", "synchronous_commit", "full_page_writes"} {
		if got := setting(t, ctx, conn, name); got != "on" {
			t.Errorf("%s = %q, want on", name, got)
		}
	}
	if got := setting(t, ctx, conn, "max_connections"); got != "200" {
		t.Errorf("max_connections = %q, want 200", got)
	}
}

// serverWithRow starts a durable server, so that a committed row must survive a crash,
// and commits a row there: table t, v = 7.
func serverWithRow(t *testing.T) (*Server, context.Context, *pgx.Conn) {
	t.Helper()
	srv := startServer(t, Options{Durable: true})
	ctx := testCtx(t)
	conn := connect(t, ctx, srv.URL())
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	return srv, ctx, conn
}

func TestRestartImmediate(t *testing.T) {
	t.Parallel()
	srv, ctx, conn := serverWithRow(t)
	var before time.Time
	if err := conn.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&before); err != nil {
		t.Fatal(err)
	}
	port, dataDir := srv.Port(), srv.DataDir()

	if err := srv.Restart(ctx, "bogus"); err == nil {
		t.Fatal("Restart with an invalid mode succeeded")
	}
	if err := srv.Restart(ctx, "immediate"); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if srv.Port() != port || srv.DataDir() != dataDir {
		t.Fatalf("port/data dir changed: %d %s -> %d %s", port, dataDir, srv.Port(), srv.DataDir())
	}

	// The old session died with the old postmaster.
	if err := conn.Ping(ctx); err == nil {
		t.Error("connection from before the restart still works")
	}

	conn2 := connect(t, ctx, srv.URL())
	var after time.Time
	var v int
	if err := conn2.QueryRow(ctx, "SELECT pg_postmaster_start_time(), (SELECT v FROM t)").Scan(&after, &v); err != nil {
		t.Fatalf("query after restart: %v\n%s", err, srv.LogTail(20))
	}
	if !after.After(before) {
		t.Errorf("postmaster start time %v not after %v: server was not restarted", after, before)
	}
	if v != 7 {
		t.Errorf("row after restart = %d, want 7", v)
	}
	// Immediate mode skips the shutdown checkpoint, so startup must recover.
	if tail := srv.LogTail(40); !strings.Contains(tail, "automatic recovery in progress") {
		t.Errorf("log shows no crash recovery after immediate restart:\n%s", tail)
	}
}

// Halt stops the server and Resume starts it again, on the same port with the same data;
// in between, connections are refused.
func TestHaltAndResume(t *testing.T) {
	t.Parallel()
	srv, ctx, _ := serverWithRow(t)
	if err := srv.Halt(ctx, "bogus"); err == nil {
		t.Fatal("Halt with an invalid mode succeeded")
	}
	if err := srv.Halt(ctx, "fast"); err != nil {
		t.Fatalf("Halt: %v", err)
	}
	if err := ping(ctx, srv.URL()); err == nil {
		t.Fatal("a connection to the halted server succeeded")
	}
	if err := srv.Resume(ctx); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	var v int
	if err := connect(t, ctx, srv.URL()).QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != 7 {
		t.Fatalf("after Resume: v = %d, %v; want 7", v, err)
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	srv, err := Start(testCtx(t), Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	dir := filepath.Dir(srv.DataDir())
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port()))
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
		t.Fatalf("server not listening before Stop: %v", err)
	} else {
		c.Close()
	}

	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s still exists after Stop (stat err %v)", dir, err)
	}
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("port %s still accepts connections after Stop", addr)
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := srv.Restart(testCtx(t), "fast"); err == nil {
		t.Error("Restart after Stop succeeded")
	}
}

func TestSharedURL(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)

	// Concurrent first use must start exactly one server.
	const n = 4
	urls := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { urls[i], errs[i] = SharedURL(ctx) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("SharedURL: %v", errs[i])
		}
		if urls[i] != urls[0] {
			t.Fatalf("SharedURL returned different URLs: %q vs %q", urls[i], urls[0])
		}
	}
	again, err := SharedURL(ctx)
	if err != nil || again != urls[0] {
		t.Fatalf("second SharedURL = %q, %v; want %q", again, err, urls[0])
	}
	if env := os.Getenv("DATABASE_URL"); env != "" && again != env {
		t.Fatalf("SharedURL = %q, want DATABASE_URL %q", again, env)
	}

	conn := connect(t, ctx, again)
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 on shared server = %d, %v", one, err)
	}

	// A caller whose context is already done gets its own error and does
	// not disturb the shared server.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if os.Getenv("DATABASE_URL") == "" {
		if u, err := SharedURL(cancelled); err == nil && u != again {
			t.Errorf("SharedURL(cancelled) = %q, want %q or an error", u, again)
		}
	}
}

func TestStartFailureIncludesLogAndCleansUp(t *testing.T) {
	// Not parallel: t.Setenv. The test counts directories in a TMPDIR of its own, since
	// other test packages start servers in the shared one at the same time.
	private := t.TempDir()
	for _, dir := range []string{filepath.Dir(private), private} {
		if err := os.Chmod(dir, 0o755); err != nil { // the server user must reach it
			t.Fatal(err)
		}
	}
	t.Setenv("TMPDIR", private)
	cred, err := serverCredential()
	if err != nil {
		t.Fatal(err)
	}
	parent, err := tempParent(cred)
	if err != nil {
		t.Fatal(err)
	}
	if parent == "" {
		parent = os.TempDir()
	}
	pattern := filepath.Join(parent, "pgtest-*")
	before, _ := filepath.Glob(pattern)

	_, err = Start(testCtx(t), Options{Logf: t.Logf, Settings: map[string]string{"shared_buffers": "lots"}})
	if err == nil {
		t.Fatal("Start with an invalid setting succeeded")
	}
	if errors.Is(err, ErrNoPostgres) {
		t.Fatalf("error wrongly wraps ErrNoPostgres: %v", err)
	}
	// The reason is only in the server log, so it proves the tail is attached.
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("error lacks the server log's reason:\n%v", err)
	}
	after, _ := filepath.Glob(pattern)
	if len(after) != len(before) {
		t.Errorf("failed Start leaked a directory: before %v, after %v", before, after)
	}
}

func TestStartRejectsBadSettings(t *testing.T) {
	t.Parallel()
	for _, settings := range []map[string]string{
		{"port": "5432"},
		{"bad name": "x"},
		{"fsync = on\nport": "1"},
	} {
		if srv, err := Start(testCtx(t), Options{Settings: settings}); err == nil {
			srv.Stop()
			t.Errorf("Start accepted settings %q", settings)
		}
	}
}

func TestFindBinDir(t *testing.T) {
	// Not parallel: t.Setenv.
	if dir, err := findBinDir(defaultBinGlob); err != nil {
		t.Fatalf("findBinDir on this machine: %v", err)
	} else if !hasServerBinaries(dir) {
		t.Fatalf("findBinDir returned %s without server binaries", dir)
	}

	// With nothing on PATH, the highest version under the glob wins, and
	// numerically (15 > 9.6), not lexically.
	t.Setenv("PATH", t.TempDir())
	root := t.TempDir()
	for _, v := range []string{"9.6", "15", "10", "16"} {
		bin := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if v == "16" {
			continue // incomplete install: must be skipped
		}
		for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
			if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	dir, err := findBinDir(filepath.Join(root, "*", "bin"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "15", "bin"); dir != want {
		t.Errorf("findBinDir = %s, want %s", dir, want)
	}

	_, err = findBinDir(filepath.Join(t.TempDir(), "*", "bin"))
	if !errors.Is(err, ErrNoPostgres) {
		t.Fatalf("err = %v, want ErrNoPostgres", err)
	}
	for _, hint := range []string{"apt-get install postgresql", "DATABASE_URL"} {
		if !strings.Contains(err.Error(), hint) {
			t.Errorf("error %q lacks hint %q", err, hint)
		}
	}
}

func TestPortInUse(t *testing.T) {
	t.Parallel()
	// Verbatim PostgreSQL 15 messages for a lost port race.
	log := `LOG:  could not bind IPv4 address "127.0.0.1": Address already in use
HINT:  Is another postmaster already running on port 5432? If not, wait a few seconds and retry.
WARNING:  could not create listen socket for "127.0.0.1"
FATAL:  could not create any TCP/IP sockets`
	if !portInUse(log) {
		t.Error("port race not detected")
	}
	if portInUse(`FATAL:  invalid value for parameter "shared_buffers": "lots"`) {
		t.Error("config error mistaken for a port race")
	}
}

// A test process killed before it can call Stop (a `go test -timeout`, a SIGKILL) leaves
// no PostgreSQL behind: the watchdog stops the server and removes its directory.
func TestKilledProcessLeavesNoServerBehind(t *testing.T) {
	if os.Getenv("PGTEST_WATCHDOG_CHILD") == "1" {
		srv, err := Start(context.Background(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("%d %s\n", srv.Port(), srv.DataDir())
		select {} // until killed
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledProcessLeavesNoServerBehind$")
	cmd.Env = append(os.Environ(), "PGTEST_WATCHDOG_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var port int
	var dataDir string
	if _, err := fmt.Fscan(out, &port, &dataDir); err != nil {
		cmd.Process.Kill()
		t.Fatalf("reading the child's server: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if c, err := net.Dial("tcp", addr); err != nil {
		t.Fatalf("the child's server does not accept connections: %v", err)
	} else {
		c.Close()
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	deadline := time.Now().Add(30 * time.Second)
	for {
		_, statErr := os.Stat(dataDir)
		c, dialErr := net.Dial("tcp", addr)
		if c != nil {
			c.Close()
		}
		if dialErr != nil && errors.Is(statErr, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the kill: server still accepting connections: %v; data dir still there: %v", dialErr == nil, statErr == nil)
		}
		time.Sleep(100 * time.Millisecond) // polling an outside process: there is no signal to await
	}
}
