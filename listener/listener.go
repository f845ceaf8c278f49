// Package listener keeps one PostgreSQL connection LISTENing on a channel (and on any
// [Config].Others) and hands every notification to a callback, reconnecting with backoff
// whenever the connection is lost.
//
// It is built on github.com/jackc/pgxlisten and knows nothing of jobs: payloads are opaque
// strings. Because notifications sent while no connection is listening are lost, the
// OnListen callback runs after every (re)connect, once LISTEN is in place, so that the
// caller can look for whatever it may have missed.
//
// A connection can LISTEN and yet never hear a notification: through a connection pooler
// in transaction mode (PgBouncer's pool_mode = transaction), LISTEN runs on whichever
// server connection the pooler lends for that one statement, and notifications go to that
// server connection, not to the listener. With [Config].Probe the listener checks, after
// every (re)connect, that a notification sent through another connection arrives, and
// says so through [Config].OnDeaf if it does not.
package listener

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
	// Channel is the channel to LISTEN on, and the one probes travel on.
	Channel string
	// Others are more channels to LISTEN on, on the same connection: their payloads go to
	// OnNotify as well.
	Others []string
	// OnNotify receives every payload, on the listening goroutine: it must not block.
	OnNotify func(payload string)
	// Hold, if set, runs on each new connection once LISTEN is in place on every channel,
	// before OnListen, to take what the connection holds for as long as it listens: a
	// session-level advisory lock that tells others it does, say. An error is logged, and
	// the connection listens without it (a lost connection shows when it is next read).
	Hold func(ctx context.Context, conn *pgx.Conn) error
	// OnListen runs each time LISTEN is in place on a new connection, on every channel.
	OnListen func()
	// Reconnect spaces reconnect attempts; zero means 50 ms doubling to 400 ms (±20 %).
	// The listener is often the first to notice that the database is back (relay's client
	// takes its reconnect as the signal for everything else to retry), so it keeps trying
	// a few times a second: a connection attempt to a server that is down costs little.
	Reconnect backoff.Policy
	// Logger receives connection losses; nil discards them.
	Logger *slog.Logger

	// Probe, if set, checks that notifications reach the listener: each time LISTEN is in
	// place, Probe is called (on a goroutine of its own) with a payload made of
	// ProbePrefix and a random token, and must send it on Channel through another
	// connection. If it has not arrived ProbeTimeout after Probe returned, OnDeaf is
	// called. Probe's context ends after ProbeTimeout or 5 s, whichever is longer. A Probe
	// that fails (the database is away, the pool has no connection to spare) is called
	// again, ProbeTimeout later, for as long as the connection lasts: a listener that went
	// unprobed could be deaf without anyone knowing. A probe that arrives is followed by
	// another, at intervals that double from twice ProbeTimeout up to a minute, until one
	// does not arrive (OnDeaf, once per connection) or the connection is replaced: one
	// probe can arrive by chance through a pooler in transaction mode.
	Probe func(ctx context.Context, payload string) error
	// ProbePrefix starts every probe's payload; required with Probe. Payloads that start
	// with it are probes — this listener's or those of others on the channel — and never
	// reach OnNotify.
	ProbePrefix string
	// ProbeTimeout is how long a probe may take to arrive; default 5 s.
	ProbeTimeout time.Duration
	// OnDeaf is called when a probe did not arrive in time: the connection LISTENs but
	// hears nothing.
	OnDeaf func()
}

// Listener is one LISTEN connection. Create it with [New] and run it with [Listener.Run].
type Listener struct {
	cfg       Config
	listening chan struct{} // closed the first time LISTEN is in place
	once      sync.Once
	delays    *backoff.Series
	failed    bool // the previous connect or listen failed: wait before the next

	probes sync.WaitGroup
	// endConn ends the context of the connection tried last, when the next is tried: the
	// probes of a connection that is gone give no verdict, and stop at once, not after
	// their timers (a storm of killed connections would leave one behind for each).
	endConn context.CancelFunc
	connCtx context.Context
	mu      sync.Mutex
	pending map[string]chan struct{} // probes sent and not yet arrived, by payload
}

// New returns a Listener for cfg.
func New(cfg Config) *Listener {
	if cfg.Reconnect == (backoff.Policy{}) {
		cfg.Reconnect = backoff.Policy{Initial: 50 * time.Millisecond, Multiplier: 2, Max: 400 * time.Millisecond, Jitter: 0.2}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 5 * time.Second
	}
	return &Listener{cfg: cfg, listening: make(chan struct{}), delays: cfg.Reconnect.Series(),
		pending: map[string]chan struct{}{}}
}

// Listening is closed once LISTEN is first in place: from then on no notification sent
// on the channel is missed while the connection lasts.
func (l *Listener) Listening() <-chan struct{} { return l.listening }

// Run listens until ctx ends, reconnecting as needed, and returns ctx's error.
func (l *Listener) Run(ctx context.Context) error {
	if l.cfg.Connect == nil || l.cfg.OnNotify == nil || l.cfg.Channel == "" {
		return errors.New("listener: Connect, Channel and OnNotify are required")
	}
	if l.cfg.Probe != nil && l.cfg.ProbePrefix == "" {
		return errors.New("listener: a Probe needs a ProbePrefix")
	}
	defer l.probes.Wait()
	defer func() {
		if l.endConn != nil {
			l.endConn()
		}
	}()
	pl := &pgxlisten.Listener{
		Connect:        l.connect,
		LogError:       l.logError,
		ReconnectDelay: -1, // connect waits with our own backoff instead of a fixed minute
	}
	pl.Handle(l.cfg.Channel, handler{l})
	for _, ch := range l.cfg.Others {
		pl.Handle(ch, otherHandler{l})
	}
	return pl.Listen(ctx)
}

func (l *Listener) connect(ctx context.Context) (*pgx.Conn, error) {
	if l.failed {
		if err := l.delays.Wait(ctx, nil); err != nil {
			return nil, err
		}
	}
	if l.endConn != nil {
		l.endConn() // the previous connection is gone: pgxlisten connects only then
	}
	l.connCtx, l.endConn = context.WithCancel(ctx)
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
	l := h.l
	if l.cfg.Probe != nil && strings.HasPrefix(n.Payload, l.cfg.ProbePrefix) {
		l.mu.Lock()
		if arrived, ok := l.pending[n.Payload]; ok {
			close(arrived)
			delete(l.pending, n.Payload)
		}
		l.mu.Unlock()
		return nil
	}
	l.cfg.OnNotify(n.Payload)
	return nil
}

// HandleBacklog runs right after LISTEN succeeded on Channel on a new connection.
func (h handler) HandleBacklog(ctx context.Context, _ string, conn *pgx.Conn) error {
	l := h.l
	// pgxlisten LISTENs on its channels in no set order: OnListen must come after all of
	// them, so Others are listened to here first (a second LISTEN on a channel does nothing).
	for _, ch := range l.cfg.Others {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			// Not listening on every channel: as a lost connection, connect again.
			conn.Close(ctx)
			return fmt.Errorf("listen %q: %w", ch, err)
		}
	}
	if l.cfg.Hold != nil {
		if err := l.cfg.Hold(ctx, conn); err != nil && ctx.Err() == nil {
			l.cfg.Logger.Warn("relay listener could not take what its connection holds while it listens; listening without it", "error", err)
		}
	}
	l.failed = false
	l.delays.Reset()
	l.once.Do(func() { close(l.listening) })
	if l.cfg.OnListen != nil {
		l.cfg.OnListen()
	}
	if l.cfg.Probe != nil {
		connCtx := l.connCtx
		l.probes.Go(func() { l.probe(connCtx) })
	}
	return nil
}

// otherHandler adapts Listener to pgxlisten's Handler for Config.Others.
type otherHandler struct{ l *Listener }

func (h otherHandler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	h.l.cfg.OnNotify(n.Payload)
	return nil
}

// minProbeSend bounds the sending of a probe, however short ProbeTimeout (which bounds its
// arrival): sending may wait for a connection from a busy pool, which a short bound would
// cut off at every try, leaving the listener without a verdict.
const minProbeSend = 5 * time.Second

// maxReprobe bounds the interval between the probes of a connection that has heard them.
const maxReprobe = time.Minute

// probe probes the connection whose context is ctx until a probe does not arrive, or the
// connection is replaced. One probe that arrives does not prove the next will: behind a
// pooler in transaction mode, one can reach the listener by the pooler's choice of server
// connection (a test through PgBouncer saw it in about one run in ten). So a probe that
// arrives is followed by another, twice the interval later each time, up to maxReprobe:
// a few probes in the first seconds, then one notification a minute.
func (l *Listener) probe(ctx context.Context) {
	for next := 2 * l.cfg.ProbeTimeout; l.probeOnce(ctx); next = min(2*next, maxReprobe) {
		t := time.NewTimer(next)
		select {
		case <-ctx.Done(): // stopped, or the next connection has probes of its own
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// probeOnce sends a notification to this listener through Config.Probe and reports whether
// it arrived within ProbeTimeout on the connection whose context is ctx, calling OnDeaf if
// it did not: a probe of a connection that is lost meanwhile gives no verdict (and reports
// false).
func (l *Listener) probeOnce(ctx context.Context) bool {
	token := make([]byte, 8)
	_, _ = rand.Read(token)
	payload := l.cfg.ProbePrefix + hex.EncodeToString(token)
	arrived := make(chan struct{})
	l.mu.Lock()
	l.pending[payload] = arrived
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.pending, payload)
		l.mu.Unlock()
	}()
	t := time.NewTimer(l.cfg.ProbeTimeout)
	defer t.Stop()
	for {
		sendCtx, cancel := context.WithTimeout(ctx, max(l.cfg.ProbeTimeout, minProbeSend))
		err := l.cfg.Probe(sendCtx, payload)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		l.cfg.Logger.Debug("relay listener could not send its probe; trying again", "error", err)
		t.Reset(l.cfg.ProbeTimeout)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	t.Reset(l.cfg.ProbeTimeout)
	select {
	case <-arrived:
		return true
	case <-ctx.Done():
	case <-t.C:
		if l.cfg.OnDeaf != nil && ctx.Err() == nil {
			l.cfg.OnDeaf()
		}
	}
	return false
}
