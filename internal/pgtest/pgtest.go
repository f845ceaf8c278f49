// Package pgtest starts throwaway PostgreSQL servers for tests and benchmarks.
//
// It drives the stock server binaries (initdb, pg_ctl) directly instead of
// Docker so that tests run on any machine with `apt-get install postgresql`,
// including CI runners and sandboxes without a container runtime. Every server
// lives in its own temporary directory and listens only on 127.0.0.1, so
// several test binaries can run side by side without sharing state.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres is wrapped by Start when no server binaries can be found, so
// callers can tell "PostgreSQL is not installed" (skip or point at
// DATABASE_URL) apart from "PostgreSQL is installed but broken" (fail).
var ErrNoPostgres = errors.New("pgtest: no PostgreSQL server binaries found")

// Options for Start. The zero value gives settings tuned for fast tests.
type Options struct {
	// Durable keeps PostgreSQL's default durability settings (fsync,
	// synchronous_commit, full_page_writes on). When false (tests), they are
	// turned off for speed: a test database never has to survive a machine
	// crash, and fsync dominates the cost of small transactions.
	Durable bool
	// Settings are extra server settings written to postgresql.conf (e.g.
	// "max_connections": "300"). They override pgtest's defaults, except
	// "port", which pgtest owns because URL and Port report it.
	Settings map[string]string
	// Logf, if set, receives progress lines (e.g. t.Logf or a slog wrapper),
	// which helps explain slow or failing starts on busy CI machines.
	Logf func(format string, args ...any)
}

// Server is a running PostgreSQL instance owned by this process. Its methods
// are safe for concurrent use.
type Server struct {
	bindir  string
	dir     string // temporary root; removing it removes everything
	dataDir string
	logFile string
	port    int
	cred    *syscall.Credential // nil when no privilege drop is needed
	logf    func(format string, args ...any)

	mu       sync.Mutex // serialises pg_ctl invocations
	stopped  bool
	watchdog *exec.Cmd // stops the server if this process dies without calling Stop
}

const (
	// maxPortAttempts bounds retries when another process grabs the port
	// between picking it and postgres binding it.
	maxPortAttempts = 5
	// pgCtlTimeout is generous because initdb/startup on a loaded 2-core CI
	// machine can take far longer than on a laptop; ctx still cuts it short.
	pgCtlTimeout = 90 * time.Second
	// verifyTimeout bounds how long Start keeps trying a real client
	// connection after pg_ctl reports the server ready.
	verifyTimeout = 10 * time.Second
	// stopTimeout bounds Stop, which has no context of its own.
	stopTimeout = 60 * time.Second
)

// Start finds the server binaries, runs initdb into a new temporary
// directory, picks a free TCP port on 127.0.0.1, starts postgres (pg_ctl
// start -w, logging to a file in the directory) and returns once it accepts
// connections.
//
// Binaries are looked up in this order: pg_ctl on $PATH, `pg_config
// --bindir`, then /usr/lib/postgresql/*/bin (highest version number wins). If
// none are found the error wraps ErrNoPostgres and says how to install them
// or to set DATABASE_URL instead.
//
// PostgreSQL refuses to run as root, so when the process is root the server
// runs as the "postgres" OS user (or "nobody" if that does not exist).
// If Start fails after postgres was launched, the server is stopped and the
// directory removed before returning; the error includes the log tail.
func Start(ctx context.Context, opts Options) (*Server, error) {
	for k := range opts.Settings {
		if !validSettingName(k) {
			return nil, fmt.Errorf("pgtest: invalid setting name %q", k)
		}
		if strings.EqualFold(k, "port") {
			return nil, errors.New(`pgtest: Settings must not contain "port"; pgtest picks a free port itself`)
		}
	}

	bindir, err := findBinDir(defaultBinGlob)
	if err != nil {
		return nil, err
	}
	s := &Server{bindir: bindir, logf: opts.Logf}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	s.logf("pgtest: using PostgreSQL binaries in %s", bindir)

	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	s.cred = cred

	parent, err := tempParent(cred)
	if err != nil {
		return nil, err
	}
	s.dir, err = os.MkdirTemp(parent, "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: create temp dir: %w", err)
	}
	s.dataDir = filepath.Join(s.dir, "data")
	s.logFile = filepath.Join(s.dir, "postgres.log")

	if err := s.start(ctx, opts); err != nil {
		// Read the log before the directory (and the log with it) goes away.
		tail := s.LogTail(30)
		s.cleanup()
		if tail != "" {
			err = fmt.Errorf("%w\n--- server log (last lines) ---\n%s", err, tail)
		}
		return nil, err
	}
	s.startWatchdog()
	s.logf("pgtest: PostgreSQL ready at %s (data %s)", s.URL(), s.dataDir)
	return s, nil
}

// startWatchdog starts a small shell process, in a process group of its own so that it
// outlives this one, that stops the server and removes its directory once this process
// is gone. A test binary killed by `go test -timeout` or SIGKILL never reaches Stop; without
// the watchdog its PostgreSQL would run on until the machine stops. The check is on /proc,
// which works whatever user the watchdog runs as. A failure to start it is only logged.
func (s *Server) startWatchdog() {
	const script = `while [ -d "/proc/$1" ]; do sleep 1; done; "$2" stop -D "$3" -m immediate >/dev/null 2>&1; rm -rf "$4"`
	cmd := exec.Command("sh", "-c", script, "pgtest-watchdog",
		strconv.Itoa(os.Getpid()), filepath.Join(s.bindir, "pg_ctl"), s.dataDir, s.dir)
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	if err := cmd.Start(); err != nil {
		s.logf("pgtest: no watchdog (the server will outlive a killed test): %v", err)
		return
	}
	s.watchdog = cmd
}

// start does everything after the temp dir exists; Start owns cleanup so
// that every failure path here can simply return.
func (s *Server) start(ctx context.Context, opts Options) error {
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: chown %s: %w", s.dir, err)
		}
	}

	initArgs := []string{"-D", s.dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"}
	if !opts.Durable {
		// Skipping initdb's final sync saves seconds per server on slow disks.
		initArgs = append(initArgs, "--no-sync")
	}
	s.logf("pgtest: initdb %s", s.dataDir)
	if _, err := s.run(ctx, "initdb", initArgs...); err != nil {
		return err
	}

	confPath := filepath.Join(s.dataDir, "postgresql.conf")
	baseConf, err := os.ReadFile(confPath)
	if err != nil {
		return fmt.Errorf("pgtest: read postgresql.conf: %w", err)
	}

	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("pgtest: start: %w", err)
		}
		port, err := freePort()
		if err != nil {
			return err
		}
		s.port = port
		// Rewriting the whole file (rather than appending) keeps exactly one
		// port line however many attempts it takes.
		conf := append(bytes.Clone(baseConf), s.conf(opts)...)
		if err := os.WriteFile(confPath, conf, 0o600); err != nil {
			return fmt.Errorf("pgtest: write postgresql.conf: %w", err)
		}

		logOffset := fileSize(s.logFile)
		s.logf("pgtest: starting postgres on 127.0.0.1:%d (attempt %d)", port, attempt)
		err = s.pgCtl(ctx, "start", "-D", s.dataDir, "-l", s.logFile)
		if err == nil {
			break
		}
		// pg_ctl -w may have timed out while postgres still runs; stop it
		// before retrying or returning so nothing leaks.
		s.forceStop()
		if attempt < maxPortAttempts && ctx.Err() == nil && portInUse(readFrom(s.logFile, logOffset)) {
			s.logf("pgtest: port %d was taken, retrying with another port", port)
			continue
		}
		return err
	}

	if err := s.verify(ctx); err != nil {
		s.forceStop()
		return err
	}
	return nil
}

// conf renders pgtest's settings block for postgresql.conf. Later lines win
// in postgresql.conf, so user Settings are written after the defaults and the
// port last.
func (s *Server) conf(opts Options) []byte {
	var b strings.Builder
	b.WriteString("\n# --- added by pgtest ---\n")
	set := func(k, v string) {
		// Quoting every value is valid for all parameter types and removes
		// any need to know which ones contain spaces or units.
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(v, "'", "''"))
	}
	set("listen_addresses", "127.0.0.1")
	// A socket directory we own avoids needing write access to
	// /var/run/postgresql and keeps parallel servers from colliding.
	set("unix_socket_directories", s.dir)
	set("max_connections", "200")
	set("shared_buffers", "128MB")
	if !opts.Durable {
		set("fsync", "off")
		set("synchronous_commit", "off")
		set("full_page_writes", "off")
	}
	keys := make([]string, 0, len(opts.Settings))
	for k := range opts.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set(k, opts.Settings[k])
	}
	set("port", strconv.Itoa(s.port))
	return []byte(b.String())
}

// verify opens a real client connection because pg_ctl -w only proves the
// postmaster is up, not that TCP on 127.0.0.1 works for a pgx client.
func (s *Server) verify(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	backoff := 10 * time.Millisecond
	for {
		err := ping(ctx, s.URL())
		if err == nil {
			return nil
		}
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("pgtest: server on port %d not accepting connections: %w (last attempt: %w)", s.port, ctx.Err(), err)
		case <-timer.C:
		}
		backoff = min(backoff*2, 250*time.Millisecond)
	}
}

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// URL returns a connection string for the superuser "postgres" database,
// e.g. postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable.
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Port returns the TCP port on 127.0.0.1; it stays the same across Restart.
func (s *Server) Port() int { return s.port }

// DataDir returns the cluster's data directory, for tests that inspect or
// corrupt files on disk. It is removed by Stop.
func (s *Server) DataDir() string { return s.dataDir }

// Restart restarts the server with `pg_ctl restart -m <mode>` ("smart",
// "fast" or "immediate") keeping the same port and data. "immediate"
// simulates a crash: the server goes through WAL recovery on the way up,
// which is what crash-safety tests want to exercise. Restart returns once a
// client connection succeeds again.
func (s *Server) Restart(ctx context.Context, mode string) error {
	// -l is required: without it the new postmaster would write to pg_ctl's
	// stdout, which is our pipe, and the command would never finish.
	return s.control(ctx, "restart", mode, true, "restart", "-m", mode, "-D", s.dataDir, "-l", s.logFile)
}

// Halt stops the server with `pg_ctl stop -m <mode>` ("smart", "fast" or "immediate")
// but keeps its data and port, so that [Server.Resume] can start it again: for tests of
// what clients do while the database is down. Connections fail (refused) until then.
func (s *Server) Halt(ctx context.Context, mode string) error {
	return s.control(ctx, "halt", mode, false, "stop", "-m", mode, "-D", s.dataDir)
}

// Resume starts a server stopped by [Server.Halt] on the same port and data, and returns
// once a client connection succeeds again.
func (s *Server) Resume(ctx context.Context) error {
	return s.control(ctx, "resume", "fast", true, "start", "-D", s.dataDir, "-l", s.logFile)
}

// control runs pg_ctl with args on the running server (what names it in errors and
// logs, mode the shutdown mode it uses), then, if verify, waits until a client connection
// succeeds. Its errors carry the end of the server's log.
func (s *Server) control(ctx context.Context, what, mode string, verify bool, args ...string) error {
	switch mode {
	case "smart", "fast", "immediate":
	default:
		return fmt.Errorf("pgtest: invalid shutdown mode %q (want smart, fast or immediate)", mode)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fmt.Errorf("pgtest: %s on stopped server", what)
	}
	s.logf("pgtest: %s of postgres on port %d (mode %s)", what, s.port, mode)
	err := s.pgCtl(ctx, args[0], args[1:]...)
	if err == nil && verify {
		err = s.verify(ctx)
	}
	if err != nil {
		return fmt.Errorf("%w\n--- server log (last lines) ---\n%s", err, s.LogTail(30))
	}
	return nil
}

// Stop stops the server (pg_ctl stop -m fast, falling back to immediate and
// finally SIGKILL) and removes its directory. It is safe to call more than
// once, so it can be both deferred and called explicitly.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	s.logf("pgtest: stopping postgres on port %d", s.port)
	if s.watchdog != nil {
		_ = s.watchdog.Process.Kill()
		_ = s.watchdog.Wait()
	}

	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	var errs []error
	if err := s.pgCtl(ctx, "stop", "-m", "fast", "-D", s.dataDir); err != nil {
		errs = append(errs, err)
		if err := s.pgCtl(ctx, "stop", "-m", "immediate", "-D", s.dataDir); err != nil {
			errs = append(errs, err)
			if err := s.killPostmaster(); err != nil {
				errs = append(errs, err)
			} else {
				// A forced kill succeeded, so the earlier failures were only
				// noise on the way there.
				errs = nil
			}
		} else {
			errs = nil
		}
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("pgtest: remove %s: %w", s.dir, err))
	}
	return errors.Join(errs...)
}

// LogTail returns the last n lines of the server log, for test failure
// messages: the log usually says why a query or startup failed. It returns
// "" if the log does not exist (yet or any more).
func (s *Server) LogTail(n int) string {
	if n <= 0 {
		return ""
	}
	f, err := os.Open(s.logFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	// Only the end of the file matters; bound the read so a chatty server
	// (log_statement=all in a benchmark) cannot make this expensive.
	const maxRead = 1 << 20
	if st, err := f.Stat(); err == nil && st.Size() > maxRead {
		if _, err := f.Seek(st.Size()-maxRead, io.SeekStart); err != nil {
			return ""
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return ""
	}
	return lastLines(string(data), n)
}

// cleanup tears down a server whose Start failed. Errors are ignored because
// the start error is the one worth reporting.
func (s *Server) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	_ = os.RemoveAll(s.dir)
}

// forceStop makes sure no postmaster from this data dir keeps running after
// a failed start. It is a no-op when none is running.
func (s *Server) forceStop() {
	if _, err := os.Stat(filepath.Join(s.dataDir, "postmaster.pid")); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := s.pgCtl(ctx, "stop", "-m", "immediate", "-D", s.dataDir); err != nil {
		_ = s.killPostmaster()
	}
}

// killPostmaster is the last resort when pg_ctl cannot stop the server.
// Backends notice the postmaster's death and exit on their own.
func (s *Server) killPostmaster() error {
	data, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // not running
		}
		return fmt.Errorf("pgtest: read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return fmt.Errorf("pgtest: bad postmaster.pid %q", first)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("pgtest: kill postmaster %d: %w", pid, err)
	}
	return nil
}

// pgCtl runs `pg_ctl action -w -t N args...` and lets it finish even if ctx
// is cancelled: killing pg_ctl mid-start can orphan a postmaster that has
// not yet written postmaster.pid, and then nothing could find it to stop it.
// Instead ctx's deadline bounds pg_ctl's own -t wait.
func (s *Server) pgCtl(ctx context.Context, action string, args ...string) error {
	timeout := pgCtlTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	secs := max(1, int(math.Ceil(timeout.Seconds())))
	full := append([]string{action, "-w", "-t", strconv.Itoa(secs)}, args...)
	_, err := s.run(context.WithoutCancel(ctx), "pg_ctl", full...)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", err, ctx.Err())
	}
	return err
}

// run executes a server binary as the server's OS user with the temp dir as
// home and working directory, since the postgres user usually cannot enter
// the caller's working directory.
func (s *Server) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bindir, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(),
		"HOME="+s.dir,
		// Fixed messages keep log parsing (port-in-use detection) reliable.
		"LC_ALL=C",
		"PGDATA="+s.dataDir,
	)
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	// If a grandchild ever inherited our pipes, don't hang on them forever.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			// "signal: killed" alone hides that the caller gave up; wrap
			// both so errors.Is(err, context.DeadlineExceeded) works.
			err = fmt.Errorf("%w (%w)", ctxErr, err)
		}
		return out, fmt.Errorf("pgtest: %s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(string(out), 15))
	}
	return out, nil
}

// lastLines keeps error messages readable: initdb and pg_ctl print their
// progress before the line that says what went wrong.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// defaultBinGlob is where Debian/Ubuntu's postgresql packages install
// versioned server binaries, which are not on $PATH by default.
const defaultBinGlob = "/usr/lib/postgresql/*/bin"

// findBinDir returns a directory containing initdb, pg_ctl and postgres.
func findBinDir(glob string) (string, error) {
	var candidates []string
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		// Resolve symlinks (e.g. /usr/local/bin/pg_ctl -> .../15/bin/pg_ctl)
		// so initdb and postgres are looked for next to the real binary.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	if p, err := exec.LookPath("pg_config"); err == nil {
		// pg_config may come from a client-only package (libpq-dev), so its
		// bindir is checked like any other candidate.
		if out, err := exec.Command(p, "--bindir").Output(); err == nil {
			candidates = append(candidates, strings.TrimSpace(string(out)))
		}
	}
	dirs, _ := filepath.Glob(glob)
	sort.Slice(dirs, func(i, j int) bool {
		return versionOf(dirs[i]) > versionOf(dirs[j])
	})
	candidates = append(candidates, dirs...)

	for _, dir := range candidates {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w (looked for pg_ctl on $PATH, in `pg_config --bindir` and in %s): "+
		"install the server (e.g. `apt-get install postgresql`) or set DATABASE_URL to an existing database",
		ErrNoPostgres, glob)
}

// versionOf extracts the number from .../postgresql/<N>/bin so that 16 sorts
// above 9.6; unparsable names sort last.
func versionOf(bindir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(bindir)), 64)
	if err != nil {
		return -1
	}
	return v
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// serverCredential returns the identity to run postgres as, or nil to run
// as ourselves. Postgres refuses to start as root.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var u *user.User
	var err error
	for _, name := range []string{"postgres", "nobody"} {
		if u, err = user.Lookup(name); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root but neither user postgres nor nobody exists: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: bad uid %q for %s: %w", u.Uid, u.Username, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: bad gid %q for %s: %w", u.Gid, u.Username, err)
	}
	// An empty (non-nil) Groups drops root's supplementary groups too.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// tempParent picks where to create the server directory. When dropping
// privileges, $TMPDIR may point somewhere the server user cannot traverse
// (e.g. under /root), so fall back to /tmp in that case.
func tempParent(cred *syscall.Credential) (string, error) {
	if cred == nil {
		return "", nil // os.MkdirTemp's default
	}
	for _, dir := range []string{os.TempDir(), "/tmp"} {
		if traversable(dir, cred) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("pgtest: no temp directory that uid %d can access (tried %s and /tmp)", cred.Uid, os.TempDir())
}

// traversable reports whether every directory from / to dir grants search
// permission to cred's uid/gid.
func traversable(dir string, cred *syscall.Credential) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for p := abs; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil || !st.IsDir() {
			return false
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return true // cannot tell; let initdb report any problem
		}
		perm := st.Mode().Perm()
		var search bool
		switch {
		case sys.Uid == cred.Uid:
			search = perm&0o100 != 0
		case sys.Gid == cred.Gid:
			search = perm&0o010 != 0
		default:
			search = perm&0o001 != 0
		}
		if !search {
			return false
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}

// freePort asks the kernel for an unused port. Another process can take it
// before postgres binds; Start retries in that case.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portInUse reports whether a start failure was caused by losing the port
// race, which is worth retrying, rather than a real configuration problem.
func portInUse(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "could not bind IPv4 address") ||
		strings.Contains(log, "could not create any TCP/IP sockets")
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// readFrom returns the file's content from offset on, so a retry only looks
// at log lines from its own attempt.
func readFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	data, _ := io.ReadAll(f)
	return string(data)
}

func validSettingName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// BinDir returns the directory of the PostgreSQL binaries a [Start] would use, for tests
// that run a client program of the same installation (psql).
func BinDir() (string, error) { return findBinDir(defaultBinGlob) }
