// Package listener keeps one PostgreSQL connection LISTENing on a channel and hands every
// notification to a callback, reconnecting with backoff whenever the connection is lost.
//
// It is built on github.com/jackc/pgxlisten and knows nothing of jobs: payloads are opaque
// strings. Because notifications sent while no connection is listening are lost, the
// OnListen callback runs after every (re)connect, once LISTEN is in place, so that the
// caller can look for whatever it may have missed.
package listener

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"

	"github.com/relayq/relay/backoff"
)

// Config configures a [Listener].
type Config struct {
	// Connect opens a new dedicated connection. It is called on start and after every loss.
	Connect func(ctx context.Context) (*pgx.Conn, error)
	// Channel is the channel to LISTEN on.
	Channel string
	// OnNotify receives every payload, on the listening goroutine: it must not block.
	OnNotify func(payload string)
	// OnListen runs each time LISTEN is in place on a new connection.
	OnListen func()
	// Reconnect spaces reconnect attempts; zero means 50 ms doubling to 400 ms (±20 %).
	// The listener is often the first to notice that the database is back (relay's client
	// takes its reconnect as the signal for everything else to retry), so it keeps trying
	// a few times a second: a connection attempt to a server that is down costs little.
	Reconnect backoff.Policy
	// Logger receives connection losses; nil discards them.
	Logger *slog.Logger
}

// Listener is one LISTEN connection. Create it with [New] and run it with [Listener.Run].
type Listener struct {
	cfg       Config
	listening chan struct{} // closed the first time LISTEN is in place
	once      sync.Once
	delays    *backoff.Series
	failed    bool // the previous connect or listen failed: wait before the next
}

// New returns a Listener for cfg.
func New(cfg Config) *Listener {
	if cfg.Reconnect == (backoff.Policy{}) {
		cfg.Reconnect = backoff.Policy{Initial: 50 * time.Millisecond, Multiplier: 2, Max: 400 * time.Millisecond, Jitter: 0.2}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Listener{cfg: cfg, listening: make(chan struct{}), delays: cfg.Reconnect.Series()}
}

// Listening is closed once LISTEN is first in place: from then on no notification sent
// on the channel is missed while the connection lasts.
func (l *Listener) Listening() <-chan struct{} { return l.listening }

// Run listens until ctx ends, reconnecting as needed, and returns ctx's error.
func (l *Listener) Run(ctx context.Context) error {
	if l.cfg.Connect == nil || l.cfg.OnNotify == nil || l.cfg.Channel == "" {
		return errors.New("listener: Connect, Channel and OnNotify are required")
	}
	pl := &pgxlisten.Listener{
		Connect:        l.connect,
		LogError:       l.logError,
		ReconnectDelay: -1, // connect waits with our own backoff instead of a fixed minute
	}
	pl.Handle(l.cfg.Channel, handler{l})
	return pl.Listen(ctx)
}

func (l *Listener) connect(ctx context.Context) (*pgx.Conn, error) {
	if l.failed {
		t := time.NewTimer(l.delays.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	// Any return from here on that is not followed by a successful LISTEN is a failure;
	// HandleBacklog clears the flag once listening works.
	l.failed = true
	return l.cfg.Connect(ctx)
}

func (l *Listener) logError(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // shutting down: the connection error is ours
	}
	l.cfg.Logger.Warn("relay listener lost its connection; reconnecting", "error", err)
}

// handler adapts Listener to pgxlisten's Handler and BacklogHandler.
type handler struct{ l *Listener }

func (h handler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	h.l.cfg.OnNotify(n.Payload)
	return nil
}

// HandleBacklog runs right after LISTEN succeeded on a new connection.
func (h handler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	l := h.l
	l.failed = false
	l.delays.Reset()
	l.once.Do(func() { close(l.listening) })
	if l.cfg.OnListen != nil {
		l.cfg.OnListen()
	}
	return nil
}
