package relay_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// The worker-process harness: a test that needs relay clients in processes of their own
// (to SIGKILL them, say) starts this test binary again as TestHelperWorkerProcess, in a
// role, with b.startWorker.
//
// The protocol, over lines: the worker connects to the test's database, makes its role's
// client, starts it and says "ready" on stdout; the role's handlers then say what they do,
// one line each, so that the test knows what a killed worker had done. On stdin the test
// sends "stop" (stop the client gracefully and exit 0) or lines for the role to read. The
// worker exits at once when its stdin closes, so that it cannot outlive the test. Its
// stderr (relay's log) is shown if the test fails.
//
// A role is configured by settings the test passes as environment variables
// (workerEnvPrefix + name); a new role is a function in workerRoles.

// workerEnvPrefix starts the names of the variables a worker process is configured by:
// ROLE (unset: not a worker), SCHEMA, APP (the application_name of its connections), and
// its role's settings. ID, if set, is the ID of its client.
const workerEnvPrefix = "RELAY_TEST_WORKER_"

// workerTimeout bounds the waits for a worker process, which must start a Go binary and
// connect before it can say anything.
const workerTimeout = 30 * time.Second

// workerRoles are the roles a worker process can play: each makes the client the worker
// starts, with its handlers registered.
var workerRoles = map[string]func(w *workerSide) (*relay.Client, error){
	"crash":   crashWorker,   // crash_test.go
	"effects": effectsWorker, // exactly_once_test.go
	"steps":   stepsWorker,   // exactly_once_test.go
	"reserve": reserveWorker, // reserve_test.go
}

// workerSide is what a role sees of its worker process.
type workerSide struct {
	pool *pgxpool.Pool // eight connections, named by APP
	// cfg is the client's config with the harness's defaults: the test's schema, the ID
	// given (or none), a one-hour fallback poll, and relay's log on stderr.
	cfg relay.Config
	// say writes one line to the test, in one write: a kill cannot split it.
	say func(format string, args ...any)
	// commands receives the lines the test sends (worker.send), but "stop". Read it if
	// the test sends more than a few.
	commands <-chan string
}

// setting is the value of the role's setting name.
func (w *workerSide) setting(name string) string { return os.Getenv(workerEnvPrefix + name) }

// intSetting is the value of the role's setting name, a number.
func (w *workerSide) intSetting(name string) (int, error) {
	n, err := strconv.Atoi(w.setting(name))
	if err != nil {
		return 0, fmt.Errorf("setting %s: %w", name, err)
	}
	return n, nil
}

// TestHelperWorkerProcess is not a test: it is the worker process that b.startWorker
// starts, in the role its environment names.
func TestHelperWorkerProcess(t *testing.T) {
	role := os.Getenv(workerEnvPrefix + "ROLE")
	if role == "" {
		t.Skip("the worker process of the tests that use startWorker; runs only as their child")
	}
	commands, stop := make(chan string, 16), make(chan struct{}, 1)
	go func() {
		for sc := bufio.NewScanner(os.Stdin); sc.Scan(); {
			if line := sc.Text(); line == "stop" {
				select {
				case stop <- struct{}{}:
				default: // already asked
				}
			} else {
				commands <- line
			}
		}
		os.Exit(3) // the test is gone
	}()
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "worker %s: %s: %v\n", role, what, err)
		os.Exit(2)
	}
	makeClient, ok := workerRoles[role]
	if !ok {
		fail("role", fmt.Errorf("no role %q in workerRoles", role))
	}
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(relaytest.URL(t)) // DATABASE_URL, from the test
	if err != nil {
		fail("parse the database URL", err)
	}
	cfg.MaxConns = 8
	cfg.ConnConfig.RuntimeParams["application_name"] = os.Getenv(workerEnvPrefix + "APP")
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		fail("connect", err)
	}
	var out sync.Mutex
	w := &workerSide{
		pool: pool,
		cfg: relay.Config{
			Schema: os.Getenv(workerEnvPrefix + "SCHEMA"), ID: os.Getenv(workerEnvPrefix + "ID"),
			PollInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		},
		say: func(format string, args ...any) {
			out.Lock()
			defer out.Unlock()
			fmt.Fprintf(os.Stdout, format+"\n", args...)
		},
		commands: commands,
	}
	c, err := makeClient(w)
	if err == nil {
		err = c.Start(ctx, pool)
	}
	if err != nil {
		fail("start", err)
	}
	w.say("ready")
	<-stop // unless killed first
	stopCtx, cancel := context.WithTimeout(ctx, workerTimeout)
	defer cancel()
	if err := c.Stop(stopCtx); err != nil {
		fail("stop", err)
	}
	os.Exit(0) // before the testing package writes to stdout
}

// worker is a running worker process, as its test sees it.
type worker struct {
	b      *bundle
	role   string
	app    string // the application_name of its connections
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	ready  chan struct{} // closed when it said "ready"
	exited chan struct{} // closed once its stdout is drained and it has been waited for
	stderr lockedBuffer
	killed bool // by the test

	mu      sync.Mutex
	lines   []string      // what it said, but "ready"
	next    int           // how many of lines nextLine has returned
	done    bool          // its stdout is closed
	changed chan struct{} // closed, and replaced, when lines or done change
}

// startWorker starts a worker process in role on b's database and schema, its role
// configured by settings. It is killed when the test ends, if the test has not killed it.
func (b *bundle) startWorker(role string, settings map[string]string) *worker {
	b.t.Helper()
	w := &worker{b: b, role: role, app: "relaytest-worker-" + randomHex(),
		ready: make(chan struct{}), exited: make(chan struct{}), changed: make(chan struct{})}
	w.cmd = exec.Command(os.Args[0], "-test.run=^TestHelperWorkerProcess$", "-test.timeout=2m")
	env := append(os.Environ(), "DATABASE_URL="+b.URL,
		workerEnvPrefix+"ROLE="+role, workerEnvPrefix+"SCHEMA="+b.Schema, workerEnvPrefix+"APP="+w.app)
	for name, value := range settings {
		env = append(env, workerEnvPrefix+name+"="+value)
	}
	w.cmd.Env = env
	var err error
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		b.t.Fatal(err)
	}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		b.t.Fatal(err)
	}
	w.cmd.Stderr = &w.stderr
	if err := w.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	go w.read(stdout)
	t := b.t
	t.Cleanup(func() {
		w.stdin.Close()
		_ = w.cmd.Process.Kill()
		<-w.exited
		if !t.Failed() {
			return
		}
		s := w.stderr.String()
		// A worker the test killed logs lost attempts as warnings: only its errors matter.
		if w.killed && !strings.Contains(s, "level=ERROR") {
			return
		}
		if len(s) > 4000 {
			s = "…" + s[len(s)-4000:]
		}
		t.Logf("stderr of %s worker process %d (%v):\n%s", role, w.cmd.Process.Pid, w.cmd.ProcessState, s)
	})
	return w
}

// read takes in what the worker says until its stdout closes, then waits for it.
func (w *worker) read(stdout io.Reader) {
	defer close(w.exited)
	sc := bufio.NewScanner(stdout)
	said := false
	for sc.Scan() {
		if line := sc.Text(); line == "ready" && !said {
			said = true
			close(w.ready)
		} else {
			w.update(func() { w.lines = append(w.lines, line) })
		}
	}
	_ = w.cmd.Wait() // only once stdout is drained: Wait closes it
	w.update(func() { w.done = true })
}

func (w *worker) update(change func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	change()
	close(w.changed)
	w.changed = make(chan struct{})
}

// waitReady waits until the worker's client is started.
func (w *worker) waitReady() {
	w.b.t.Helper()
	select {
	case <-w.ready:
	case <-w.exited:
		w.b.t.Fatalf("%s worker process exited before it was ready: %v", w.role, w.cmd.ProcessState)
	case <-time.After(workerTimeout):
		w.b.t.Fatalf("timed out waiting for the %s worker process to start", w.role)
	}
}

// await waits until cond holds of what the worker has said, failing the test if the
// worker exits or workerTimeout passes first.
func (w *worker) await(what string, cond func(lines []string) bool) {
	w.b.t.Helper()
	timer := time.NewTimer(workerTimeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		ok, done, changed := cond(w.lines), w.done, w.changed
		w.mu.Unlock()
		switch {
		case ok:
			return
		case done:
			w.b.t.Fatalf("the %s worker process exited (%v) while the test waited for %s", w.role, w.cmd.ProcessState, what)
		}
		select {
		case <-changed:
		case <-timer.C:
			w.b.t.Fatalf("timed out after %v waiting for %s", workerTimeout, what)
		}
	}
}

// nextLine returns the next line the worker says, in order, waiting for it.
func (w *worker) nextLine(what string) string {
	w.b.t.Helper()
	w.await(what, func(lines []string) bool { return len(lines) > w.next })
	w.mu.Lock()
	defer w.mu.Unlock()
	w.next++
	return w.lines[w.next-1]
}

// waitSaid waits until the worker has said line.
func (w *worker) waitSaid(line string) {
	w.b.t.Helper()
	w.await(fmt.Sprintf("the %s worker process to say %q", w.role, line), func(lines []string) bool {
		return slices.Contains(lines, line)
	})
}

// kill SIGKILLs the worker and waits until it is gone, with its database connections; it
// returns all the worker said.
func (w *worker) kill() []string {
	t := w.b.t
	t.Helper()
	w.killed = true
	if err := w.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("kill the %s worker process: %v", w.role, err)
	}
	select {
	case <-w.exited:
	case <-time.After(workerTimeout):
		t.Fatalf("the killed %s worker process did not exit", w.role)
	}
	if ws, ok := w.cmd.ProcessState.Sys().(interface{ Signaled() bool }); ok && !ws.Signaled() {
		t.Fatalf("the %s worker process was not killed but exited by itself: %v", w.role, w.cmd.ProcessState)
	}
	// A statement the worker sent just before it died (a COMMIT, say) may still be carried
	// out by its server process: what it did is settled only once those are gone too.
	relaytest.WaitFor(t, waitTimeout, "the killed worker's database connections to end", func() bool {
		var n int
		err := w.b.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, w.app).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.lines)
}

// send writes line to the worker's stdin, for its role to read from workerSide.commands.
func (w *worker) send(line string) {
	w.b.t.Helper()
	if _, err := io.WriteString(w.stdin, line+"\n"); err != nil {
		w.b.t.Fatalf("send %q to the %s worker process: %v", line, w.role, err)
	}
}

// stop asks the worker to stop its client gracefully (Client.Stop waits for the running
// handlers) and waits until it has exited; it returns all the worker said.
func (w *worker) stop() []string {
	t := w.b.t
	t.Helper()
	w.send("stop")
	select {
	case <-w.exited:
	case <-time.After(workerTimeout + 5*time.Second): // the worker's Stop has workerTimeout
		t.Fatalf("the %s worker process did not stop", w.role)
	}
	if !w.cmd.ProcessState.Success() {
		t.Fatalf("the %s worker process did not stop cleanly: %v", w.role, w.cmd.ProcessState)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.lines)
}

// lockedBuffer collects a worker's stderr; Write is called from exec's copying goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
