package relaytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// DB is a database of the test's own, with relay's tables migrated into the default
// schema. The application's tables are the test's own too: nothing is shared with tests
// running in parallel, so code under test needs no relay.Schema option.
type DB struct {
	*pgxpool.Pool
	// Schema is the schema relay's tables live in: [relay.DefaultSchema].
	Schema string
	// URL connects to the test's database, for a second pool, a child process or the CLI.
	URL string
}

// NewPool returns another pool on the test's database, with connections of its own (as
// a second process would have), closed when the test ends.
func (db *DB) NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return newPool(t, db.URL)
}

// Option changes what [NewDB] prepares.
type Option interface{ applyDB(*dbOptions) }

type dbOptions struct {
	setupName string
	setup     func(ctx context.Context, pool *pgxpool.Pool) error
	bare      bool
}

type optionFunc func(*dbOptions)

func (f optionFunc) applyDB(o *dbOptions) { f(o) }

// Setup runs fn once per test binary, after relay's migrations, on the template every
// [NewDB] with the same name is cloned from: apply the application's own schema there,
// and each test starts with it at the cost of a database copy (tens of milliseconds)
// instead of running the migrations again. Use one name per distinct fn.
func Setup(name string, fn func(ctx context.Context, pool *pgxpool.Pool) error) Option {
	return optionFunc(func(o *dbOptions) { o.setupName, o.setup = name, fn })
}

// Unmigrated gives the test an empty database, without relay's tables: for tests of
// migrations.
func Unmigrated() Option { return optionFunc(func(o *dbOptions) { o.bare = true }) }

// NewDB creates a database of the test's own, a copy of a template with relay's tables
// migrated (and the [Setup] given, if any), and returns a pool on it. Both are removed when
// the test ends. Tests that each use their own DB may run in parallel: they share nothing.
func NewDB(t testing.TB, opts ...Option) *DB {
	t.Helper()
	var o dbOptions
	for _, opt := range opts {
		opt.applyDB(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := serverFor(ctx, URL(t))
	if err != nil {
		t.Fatalf("relaytest: %v", err)
	}
	name := "relaytest_" + randomSuffix()
	template := "template0"
	if !o.bare {
		if template, err = srv.template(ctx, o); err != nil {
			t.Fatalf("relaytest: %v", err)
		}
	}
	if err := srv.createDatabase(ctx, name, template); err != nil {
		t.Fatalf("relaytest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.dropDatabase(ctx, name); err != nil {
			t.Logf("relaytest: %v", err)
		}
	})
	dbURL, err := withDatabase(srv.url, name)
	if err != nil {
		t.Fatalf("relaytest: %v", err)
	}
	return &DB{Pool: newPool(t, dbURL), Schema: relay.DefaultSchema, URL: dbURL}
}

// server is a PostgreSQL server tests make databases on, with the templates this test
// binary built on it.
type server struct {
	url   string
	admin *pgxpool.Pool // on the URL's own database: CREATE and DROP DATABASE
	// fileCopy is true on PostgreSQL 15 and later, where cloning a small template by
	// copying its files (one checkpoint) is several times faster than the default,
	// which writes every block to the WAL.
	fileCopy bool

	mu        sync.Mutex
	templates map[string]*templateBuild // by Setup name; "" for relay's tables alone
}

type templateBuild struct {
	done chan struct{}
	name string
	err  error
}

var servers struct {
	mu  sync.Mutex
	all map[string]*server
}

func serverFor(ctx context.Context, serverURL string) (*server, error) {
	servers.mu.Lock()
	defer servers.mu.Unlock()
	if s := servers.all[serverURL]; s != nil {
		return s, nil
	}
	cfg, err := pgxpool.ParseConfig(serverURL)
	if err != nil {
		return nil, fmt.Errorf("parse the database URL: %w", err)
	}
	cfg.MaxConns = 4
	admin, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.ConnConfig.Host, err)
	}
	var version int
	if err := admin.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		admin.Close()
		return nil, fmt.Errorf("read the server version: %w", err)
	}
	s := &server{url: serverURL, admin: admin, fileCopy: version >= 150000, templates: map[string]*templateBuild{}}
	if servers.all == nil {
		servers.all = map[string]*server{}
	}
	servers.all[serverURL] = s
	return s, nil
}

// template returns the name of the template for o, building it on first use. Templates
// belong to this test binary (a random name each) and are dropped by [Main]: a template
// left from another run could hold an older schema.
func (s *server) template(ctx context.Context, o dbOptions) (string, error) {
	s.mu.Lock()
	b := s.templates[o.setupName]
	if b == nil {
		b = &templateBuild{done: make(chan struct{}), name: "relaytest_template_" + randomSuffix()}
		s.templates[o.setupName] = b
		go func() {
			defer close(b.done)
			buildCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			b.err = s.buildTemplate(buildCtx, b.name, o)
		}()
	}
	s.mu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return b.name, b.err
}

func (s *server) buildTemplate(ctx context.Context, name string, o dbOptions) error {
	if err := s.createDatabase(ctx, name, "template0"); err != nil {
		return err
	}
	dbURL, err := withDatabase(s.url, name)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to template %s: %w", name, err)
	}
	err = relay.Migrate(ctx, pool)
	if err == nil && o.setup != nil {
		if err = o.setup(ctx, pool); err != nil {
			err = fmt.Errorf("Setup %q: %w", o.setupName, err)
		}
	}
	pool.Close() // a template is copied only while nobody is connected to it
	if err != nil {
		return fmt.Errorf("prepare template %s: %w", name, err)
	}
	// No connection may open on it any more: one would make every copy fail.
	if _, err := s.admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("close template %s: %w", name, err)
	}
	return nil
}

func (s *server) createDatabase(ctx context.Context, name, template string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize() + " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	if s.fileCopy {
		sql += " STRATEGY FILE_COPY"
	}
	if _, err := s.admin.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

func (s *server) dropDatabase(ctx context.Context, name string) error {
	// FORCE ends the sessions still connected: a child process, or a pool a test leaked.
	if _, err := s.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// dropTemplates drops the templates this binary built and closes the admin pools.
func dropTemplates() {
	servers.mu.Lock()
	defer servers.mu.Unlock()
	for _, s := range servers.all {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		s.mu.Lock()
		for _, b := range s.templates {
			<-b.done
			_ = s.dropDatabase(ctx, b.name)
		}
		s.mu.Unlock()
		cancel()
		s.admin.Close()
	}
	servers.all = nil
}

// withDatabase returns serverURL with its database replaced by name. Both URLs
// (postgres://…) and keyword/value strings (host=… dbname=…) are understood.
func withDatabase(serverURL, name string) (string, error) {
	if strings.HasPrefix(serverURL, "postgres://") || strings.HasPrefix(serverURL, "postgresql://") {
		u, err := url.Parse(serverURL)
		if err != nil {
			return "", fmt.Errorf("parse the database URL: %w", err)
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	// In a keyword/value string the last setting of a keyword wins.
	return serverURL + " dbname=" + name, nil
}

func newPool(t testing.TB, dbURL string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatalf("relaytest: parse database URL: %v", err)
	}
	cfg.MaxConns = 8
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("relaytest: connect: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
