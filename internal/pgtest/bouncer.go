package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPgBouncer is wrapped by StartBouncer when no pgbouncer binary can be found, so that
// a test can skip on a developer's machine and fail in CI (see [BouncerOrSkip]).
var ErrNoPgBouncer = errors.New("pgtest: no pgbouncer binary found (on Debian or Ubuntu: apt-get install pgbouncer)")

// BouncerOptions configures a PgBouncer started by [StartBouncer].
type BouncerOptions struct {
	// PoolMode is pgbouncer's pool_mode: "transaction" (the default), "session" or
	// "statement".
	PoolMode string
	// PoolSize is default_pool_size: the server connections per database and user;
	// default 20.
	PoolSize int
	// Logf, if set, receives progress lines.
	Logf func(format string, args ...any)
}

// Bouncer is a running PgBouncer owned by this process, in front of one PostgreSQL server.
type Bouncer struct {
	admin string // the user, an admin of the console
	dir   string
	port  int
	cmd   *exec.Cmd
	done  chan struct{} // closed once the process has exited
	logf  func(format string, args ...any)

	mu      sync.Mutex
	stopped bool
}

// StartBouncer starts pgbouncer on a free port of 127.0.0.1 in front of the server that
// target (a postgres:// URL) names, for every database of that server (a wildcard
// entry), with the user and password of target. It runs as the "postgres" OS user when
// the process is root (pgbouncer refuses root), from a temporary directory holding its
// generated ini and auth file, and is killed if this process dies. It returns once a
// connection through it works.
func StartBouncer(ctx context.Context, target string, opts BouncerOptions) (*Bouncer, error) {
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/pgbouncer"); statErr != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoPgBouncer, err)
		}
		bin = "/usr/sbin/pgbouncer"
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("pgtest: the bouncer's target must be a postgres:// URL, not %q", target)
	}
	if opts.PoolMode == "" {
		opts.PoolMode = "transaction"
	}
	if opts.PoolSize == 0 {
		opts.PoolSize = 20
	}
	b := &Bouncer{logf: opts.Logf, done: make(chan struct{})}
	if b.logf == nil {
		b.logf = func(string, ...any) {}
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	parent, err := tempParent(cred)
	if err != nil {
		return nil, err
	}
	if b.dir, err = os.MkdirTemp(parent, "pgbouncer-"); err != nil {
		return nil, fmt.Errorf("pgtest: create temp dir: %w", err)
	}
	if err := b.start(ctx, bin, u, opts, cred); err != nil {
		log, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
		b.Stop()
		return nil, fmt.Errorf("%w\n--- pgbouncer log (last lines) ---\n%s", err, lastLines(string(log), 20))
	}
	b.logf("pgtest: pgbouncer (%s mode) ready on 127.0.0.1:%d", opts.PoolMode, b.port)
	return b, nil
}

func (b *Bouncer) start(ctx context.Context, bin string, target *url.URL, opts BouncerOptions, cred *syscall.Credential) error {
	user := target.User.Username()
	if user == "" {
		user = "postgres"
	}
	b.admin = user
	password, _ := target.User.Password()
	host, port := target.Hostname(), target.Port()
	if port == "" {
		port = "5432"
	}
	var err error
	if b.port, err = freePort(); err != nil {
		return err
	}
	quote := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	auth := quote(user) + " " + quote(password) + "\n"
	ini := fmt.Sprintf(`[databases]
* = host=%s port=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
default_pool_size = %d
max_client_conn = 1000
logfile = %s
pidfile = %s
admin_users = %s
ignore_startup_parameters = extra_float_digits
server_login_retry = 1
`, host, port, b.port, filepath.Join(b.dir, "userlist.txt"), opts.PoolMode, opts.PoolSize,
		filepath.Join(b.dir, "pgbouncer.log"), filepath.Join(b.dir, "pgbouncer.pid"), user)
	if password != "" {
		// The server asks for it: the auth file gives it for the user.
		ini = strings.Replace(ini, "auth_type = trust", "auth_type = plain", 1)
	}
	for name, content := range map[string]string{"pgbouncer.ini": ini, "userlist.txt": auth} {
		if err := os.WriteFile(filepath.Join(b.dir, name), []byte(content), 0o600); err != nil {
			return fmt.Errorf("pgtest: write %s: %w", name, err)
		}
	}
	if cred != nil {
		for _, p := range []string{b.dir, filepath.Join(b.dir, "pgbouncer.ini"), filepath.Join(b.dir, "userlist.txt")} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return fmt.Errorf("pgtest: chown %s: %w", p, err)
			}
		}
	}
	b.cmd = exec.Command(bin, filepath.Join(b.dir, "pgbouncer.ini"))
	b.cmd.Dir = b.dir
	b.cmd.Env = append(os.Environ(), "HOME="+b.dir, "LC_ALL=C")
	// Killed with this process, should it die without calling Stop.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		close(b.done)
		return fmt.Errorf("pgtest: start pgbouncer: %w", err)
	}
	go func() {
		_ = b.cmd.Wait()
		close(b.done)
	}()
	return b.ready(ctx, target)
}

// ready waits until a query through the bouncer works.
func (b *Bouncer) ready(ctx context.Context, target *url.URL) error {
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	via := b.Via(target.String())
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, 250*time.Millisecond) {
		err := ping(ctx, via)
		if err == nil {
			return nil
		}
		select {
		case <-b.done:
			return fmt.Errorf("pgtest: pgbouncer exited at start (%v)", b.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("pgtest: pgbouncer on port %d not accepting connections: %w (last attempt: %w)", b.port, ctx.Err(), err)
		case <-time.After(pause):
		}
	}
}

// Port is the bouncer's TCP port on 127.0.0.1.
func (b *Bouncer) Port() int { return b.port }

// Via returns dbURL (a postgres:// URL of the bouncer's server) with its host and port
// replaced by the bouncer's: the same database and user, through the bouncer.
func (b *Bouncer) Via(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		return dbURL // ParseConfig reports it where the URL is used
	}
	u.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port))
	return u.String()
}

// Reconnect closes every server connection of the bouncer once its client releases it
// (the admin console's RECONNECT), so that their backends exit: for a caller that waits
// for its sessions' statistics to be flushed, which a backend does when it exits.
func (b *Bouncer) Reconnect(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s@127.0.0.1:%d/pgbouncer?sslmode=disable", b.admin, b.port))
	if err != nil {
		return err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol // all the console speaks
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("pgtest: connect to pgbouncer's admin console: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "RECONNECT"); err != nil {
		return fmt.Errorf("pgtest: pgbouncer RECONNECT: %w", err)
	}
	return nil
}

// Stop stops pgbouncer and removes its directory. Calling it again does nothing.
func (b *Bouncer) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	b.stopped = true
	if b.cmd != nil && b.cmd.Process != nil {
		_ = b.cmd.Process.Signal(syscall.SIGTERM) // an immediate shutdown; SIGKILL if it takes long
		select {
		case <-b.done:
		case <-time.After(5 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.done
		}
	}
	_ = os.RemoveAll(b.dir)
}

// StartBouncerT starts a bouncer for test t (see [StartBouncer]), stopped when the test
// ends. Without a pgbouncer binary it skips the test, saying how to install one, unless
// the environment variable CI is set: in CI a missing binary fails the test.
func StartBouncerT(t testing.TB, target string, opts BouncerOptions) *Bouncer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	b, err := StartBouncer(ctx, target, opts)
	if errors.Is(err, ErrNoPgBouncer) && os.Getenv("CI") == "" {
		t.Skipf("%v; the tests through PgBouncer are skipped (with CI set they fail instead)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return b
}
