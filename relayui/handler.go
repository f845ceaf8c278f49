// Package relayui is a web dashboard for relay's operators: queues with their counts,
// throughput and settings, jobs with their history, and clients, with the actions an
// operator needs (retry, cancel, delete, pause, resume, and retry, cancel or delete of
// every job a filter selects); and the periodic schedules, with their slots.
//
// [Handler] returns an [http.Handler] to mount in your own server, behind your own
// authentication:
//
//	ui := relayui.Handler(pool, relayui.Options{Prefix: "/admin/jobs"})
//	mux.Handle("/admin/jobs/", requireAdmin(ui))
//
// or run it on its own with `relay ui --database-url URL` (it listens on 127.0.0.1:8080).
//
// Pages are rendered on the server from embedded templates and assets (htmx refreshes
// the live parts), so the dashboard needs no build step and works offline. Every page is
// read through an index, so it stays fast with millions of finished jobs.
//
// It shows job arguments, which may hold personal data, and it can cancel work: mount it
// behind authentication, consider [Options.ReadOnly] and [Options.Redact]. Every change
// is a POST that carries a CSRF token; responses forbid framing and carry a strict
// Content-Security-Policy (no inline script or style), and all job data is escaped.
package relayui

import (
	"context"
	"crypto/rand"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/store"
)

// Options configure [Handler]. The zero value serves the default schema at the root of
// the server it is mounted in, with every action allowed.
type Options struct {
	// Prefix is the path the handler is mounted at, such as "/admin/jobs": the handler
	// strips it from requests and puts it in front of its links. "" for the root.
	Prefix string
	// Schema is the schema relay's tables live in; "" for [relay.DefaultSchema].
	Schema string
	// ReadOnly hides every action and refuses every state-changing request (403).
	ReadOnly bool
	// Redact, if set, is called on every job before it is shown (its page, its line in a
	// listing, and the last error of a job that blocks an ordered key, which it sees as a
	// record with only that attempt), and may blank or replace anything in it: Args,
	// Payload, Output, Checkpoint, Metadata, and the errors, stacks and error data (Data,
	// DataError) of its Attempts. It must not keep the record, and is called from many
	// requests at once.
	Redact func(job *relay.JobRecord)
	// CSRFKey signs the CSRF tokens of forms. Nil: a random key per Handler, so a form
	// loaded before a restart must be reloaded. Set the same key of at least 32 bytes on
	// every process when several serve the dashboard behind one address.
	CSRFKey []byte
	// CountInterval is how long job counts are reused before they are counted again, in
	// the background; 0 for 10 s. Counting reads every finished job's index entry, so
	// with millions of them it takes seconds: pages show counts this old, or a little
	// older, and say when they were taken.
	CountInterval time.Duration
	// Logger receives errors of the pages; nil for [slog.Default].
	Logger *slog.Logger
}

// Handler returns the dashboard over db (usually a *pgxpool.Pool), configured by opts. It
// panics if opts are invalid (a schema relay cannot use, a CSRFKey shorter than 32 bytes),
// as [http.ServeMux] does for an invalid pattern: that is a bug in the calling program.
func Handler(db relay.DB, opts Options) http.Handler {
	if opts.Schema == "" {
		opts.Schema = relay.DefaultSchema
	}
	s, err := store.For(opts.Schema)
	if err != nil {
		panic(fmt.Sprintf("relayui: Options.Schema: %v", err))
	}
	key := opts.CSRFKey
	if key == nil {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	} else if len(key) < 32 {
		panic(fmt.Sprintf("relayui: Options.CSRFKey is %d bytes long; use at least 32 random bytes", len(key)))
	}
	if opts.CountInterval <= 0 {
		opts.CountInterval = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	u := &ui{
		db: db, store: s, opts: opts, schema: relay.Schema(opts.Schema),
		prefix: strings.TrimSuffix(opts.Prefix, "/"),
		csrf:   csrf{key: key},
		counts: countCache{every: opts.CountInterval},
	}
	if u.pages, err = u.parseTemplates(); err != nil {
		panic(fmt.Sprintf("relayui: templates: %v", err)) // they are embedded: a bug
	}
	mux := http.NewServeMux()
	u.routes(mux)
	return u.secure(mux)
}

// ui is one dashboard: what its pages read and how they link.
type ui struct {
	db     relay.DB
	store  *store.Store
	opts   Options
	schema relay.SchemaOption
	prefix string // Options.Prefix without a trailing slash
	csrf   csrf
	counts countCache
	pages  map[string]*template.Template // by file name, each with the layout
}

func (u *ui) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", u.page(u.overview))
	mux.HandleFunc("GET /queues/{name}", u.page(u.queue))
	mux.HandleFunc("GET /jobs", u.page(u.jobs))
	mux.HandleFunc("GET /jobs/{id}", u.page(u.job))
	mux.HandleFunc("GET /bulk", u.page(u.bulkConfirm))
	mux.HandleFunc("GET /clients", u.page(u.clients))
	mux.HandleFunc("GET /periodic", u.page(u.periodic))
	mux.Handle("GET /static/", staticFiles())

	mux.HandleFunc("POST /jobs/{id}/retry", u.action(u.jobAction(u.retryJob, "retried")))
	mux.HandleFunc("POST /jobs/{id}/cancel", u.action(u.jobAction(u.cancelJob, "cancelled")))
	mux.HandleFunc("POST /jobs/{id}/delete", u.action(u.deleteJob))
	mux.HandleFunc("POST /queues/{name}/pause", u.action(u.queueAction(u.pauseQueue, "paused")))
	mux.HandleFunc("POST /queues/{name}/resume", u.action(u.queueAction(u.resumeQueue, "resumed")))
	mux.HandleFunc("POST /queues/{name}/settings", u.action(u.queueAction(u.setQueue, "saved")))
	mux.HandleFunc("POST /bulk", u.action(u.bulkRun))
	mux.HandleFunc("POST /periodic/{name}/delete", u.action(u.deleteSchedule))
}

// countCache keeps the latest [relay.CountJobs]: counting reads every finished job's
// index entry (seconds, with tens of millions), and every open overview refreshes every
// few seconds. Counts older than every are still served, while one recount runs in the
// background for the requests after; only a request with nothing counted yet waits.
type countCache struct {
	every time.Duration
	mu    sync.Mutex
	last  *relay.JobCounts
	at    time.Time
	err   error         // of the latest count, if it failed
	done  chan struct{} // closed when the count under way ends; nil if none runs
}

// get returns the latest counts and when they were taken. count counts anew, with a
// context of its own: a recount outlives the request that started it.
func (c *countCache) get(ctx context.Context, count func(context.Context) (*relay.JobCounts, error)) (*relay.JobCounts, time.Time, error) {
	c.mu.Lock()
	if (c.last == nil || time.Since(c.at) >= c.every) && c.done == nil {
		c.done = make(chan struct{})
		go c.recount(context.WithoutCancel(ctx), count, c.done)
	}
	last, at, done := c.last, c.at, c.done
	c.mu.Unlock()
	if last != nil {
		return last, at, nil
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, time.Time{}, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		return nil, time.Time{}, c.err
	}
	return c.last, c.at, nil
}

func (c *countCache) recount(ctx context.Context, count func(context.Context) (*relay.JobCounts, error), done chan struct{}) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	counts, err := count(ctx)
	c.mu.Lock()
	if err == nil {
		c.last, c.at = counts, time.Now()
	}
	c.err, c.done = err, nil
	c.mu.Unlock()
	close(done)
}

// forget makes the next request count anew, after an action that changed the counts.
func (c *countCache) forget() {
	c.mu.Lock()
	c.at = time.Time{}
	c.mu.Unlock()
}
