package listener_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/listener"
	"github.com/relayq/relay/relaytest"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

const waitTimeout = 15 * time.Second

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	return relaytest.Receive(t, ch, waitTimeout, what)
}

// rig is a listener on a channel of the test's own, with its callbacks reported on
// channels.
type rig struct {
	t        *testing.T
	pool     *pgxpool.Pool
	channel  string
	l        *listener.Listener
	conns    chan uint32 // backend pid of every connection Connect opened
	listens  chan struct{}
	payloads chan string
	failNext atomic.Int32 // how many further Connect calls fail
	stop     context.CancelFunc
	done     chan error
}

var rigs atomic.Int64

func newRig(t *testing.T, configure ...func(*rig, *listener.Config)) *rig {
	t.Helper()
	pool := relaytest.NewDB(t, relaytest.Unmigrated()).Pool
	r := &rig{
		t: t, pool: pool,
		channel:  fmt.Sprintf("relaytest:listener:%d:%d", time.Now().UnixNano(), rigs.Add(1)),
		conns:    make(chan uint32, 10),
		listens:  make(chan struct{}, 10),
		payloads: make(chan string, 100),
	}
	cfg := listener.Config{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			if r.failNext.Load() > 0 {
				r.failNext.Add(-1)
				return nil, errors.New("connection refused (by the test)")
			}
			conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
			if err == nil {
				r.conns <- conn.PgConn().PID()
			}
			return conn, err
		},
		Channel:   r.channel,
		OnNotify:  func(p string) { r.payloads <- p },
		OnListen:  func() { r.listens <- struct{}{} },
		Reconnect: backoff.Policy{Initial: time.Millisecond, Multiplier: 2, Max: 10 * time.Millisecond},
	}
	for _, c := range configure {
		c(r, &cfg)
	}
	r.l = listener.New(cfg)
	return r
}

func (r *rig) run() {
	ctx, cancel := context.WithCancel(context.Background())
	r.stop, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.l.Run(ctx) }()
	r.t.Cleanup(func() {
		cancel()
		<-r.done
	})
}

func (r *rig) notify(channel, payload string) {
	r.t.Helper()
	if _, err := r.pool.Exec(context.Background(), `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
		r.t.Fatal(err)
	}
}

// OnListen runs once LISTEN is in place, Listening is closed, and every NOTIFY on the
// channel, and only on it, reaches OnNotify with its payload. Run returns when its
// context ends.
func TestListenerDeliversNotifications(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.run()
	recv(t, r.conns, "a connection")
	recv(t, r.listens, "OnListen")
	recv(t, r.l.Listening(), "Listening to be closed")

	r.notify(r.channel+"-other", "not for us")
	for _, p := range []string{"w:default", "s:1500:q", ""} {
		r.notify(r.channel, p)
		if got := recv(t, r.payloads, "payload "+p); got != p {
			t.Fatalf("OnNotify got %q, want %q", got, p)
		}
	}
	// Notifications sent in one transaction arrive in order.
	tx, err := r.pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := tx.Exec(context.Background(), `SELECT pg_notify($1, $2)`, r.channel, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if got := recv(t, r.payloads, "a payload of the transaction"); got != fmt.Sprint(i) {
			t.Fatalf("payload %d is %q", i, got)
		}
	}

	r.stop()
	if err := recv(t, r.done, "Run to return"); !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
	r.done <- nil // for the cleanup
	select {
	case p := <-r.payloads:
		t.Errorf("OnNotify got %q from another channel", p)
	default:
	}
}

// With Others, the listener also hears those channels, on the same connection, and
// OnListen runs once per connection, after LISTEN is in place on all of them (here after a
// reconnect too): a notification sent from OnListen on the last of them arrives.
func TestListenerHearsOtherChannels(t *testing.T) {
	t.Parallel()
	var others []string
	listened := make(chan struct{}, 10)
	var rr *rig
	r := newRig(t, func(r *rig, cfg *listener.Config) {
		rr = r
		others = []string{r.channel + ":a", r.channel + ":b"}
		cfg.Others = others
		cfg.OnListen = func() {
			// Sent as OnListen runs: it arrives only if LISTEN is in place on b already.
			if _, err := rr.pool.Exec(context.Background(), `SELECT pg_notify($1, 'on listen')`, others[1]); err != nil {
				rr.t.Error(err)
			}
			listened <- struct{}{}
		}
	})
	r.run()
	pid := recv(t, r.conns, "a connection")
	for round := range 2 {
		recv(t, listened, "OnListen")
		if got := recv(t, r.payloads, "the notification OnListen sent"); got != "on listen" {
			t.Fatalf("got %q, want the notification OnListen sent on %s", got, others[1])
		}
		for _, ch := range append([]string{r.channel}, others...) {
			r.notify(ch, "to "+ch)
			if got := recv(t, r.payloads, "a payload on "+ch); got != "to "+ch {
				t.Fatalf("got %q, want %q", got, "to "+ch)
			}
		}
		select {
		case <-listened:
			t.Fatalf("round %d: OnListen ran more than once for one connection", round)
		default:
		}
		if round == 0 {
			if _, err := r.pool.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, pid); err != nil {
				t.Fatal(err)
			}
			pid = recv(t, r.conns, "a new connection")
		}
	}
}

// When its connection is terminated the listener reconnects, calls OnListen again, and
// notifications reach it again.
func TestListenerReconnectsAfterTermination(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.run()
	pid := recv(t, r.conns, "a connection")
	recv(t, r.listens, "OnListen")
	r.notify(r.channel, "before")
	if got := recv(t, r.payloads, "a payload"); got != "before" {
		t.Fatalf("got %q", got)
	}

	for round := range 2 {
		var ok bool
		if err := r.pool.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("terminate %d: %v %v", pid, ok, err)
		}
		next := recv(t, r.conns, "a new connection")
		if next == pid {
			t.Fatalf("reconnected to the terminated backend %d", pid)
		}
		pid = next
		recv(t, r.listens, "OnListen after the reconnect")
		payload := fmt.Sprint("after ", round)
		r.notify(r.channel, payload)
		if got := recv(t, r.payloads, "a payload after the reconnect"); got != payload {
			t.Fatalf("got %q, want %q", got, payload)
		}
	}
}

// A failing Connect is retried with backoff until it works.
func TestListenerRetriesFailedConnects(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.failNext.Store(3)
	r.run()
	recv(t, r.conns, "a connection after three failures")
	recv(t, r.listens, "OnListen")
	recv(t, r.l.Listening(), "Listening to be closed")
	if n := r.failNext.Load(); n != 0 {
		t.Fatalf("%d failing connects left", n)
	}
	r.notify(r.channel, "hello")
	if got := recv(t, r.payloads, "a payload"); got != "hello" {
		t.Fatalf("got %q", got)
	}
}

// While the database stays away, the listener tries to connect again a few times a
// second, however long it has been failing: it is what notices first that it is back. And
// no more often than its backoff says, or a database that is away would be hammered.
func TestListenerKeepsTryingOftenWhileTheDatabaseIsAway(t *testing.T) {
	t.Parallel()
	attempts := make(chan time.Time, 100)
	l := listener.New(listener.Config{
		Channel: "c", OnNotify: func(string) {},
		Connect: func(context.Context) (*pgx.Conn, error) {
			attempts <- time.Now()
			return nil, errors.New("the database is away")
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	var last time.Time
	for i := range 10 {
		at := recv(t, attempts, "a connect attempt")
		gap := at.Sub(last)
		if i >= 6 && gap > 600*time.Millisecond {
			t.Errorf("connect attempt %d came %v after the one before; want at most 480 ms (400 ms ± 20 %%)", i+1, gap)
		}
		// From the fifth attempt on, the delay has reached its cap: 400 ms less 20 % at most.
		// A timer never fires early, so this bound is exact.
		if i >= 4 && gap < 320*time.Millisecond {
			t.Errorf("connect attempt %d came %v after the one before; want at least 320 ms (400 ms ± 20 %%)", i+1, gap)
		}
		last = at
	}
}

func TestListenerRejectsIncompleteConfig(t *testing.T) {
	t.Parallel()
	connect := func(context.Context) (*pgx.Conn, error) { return nil, errors.New("unused") }
	for name, cfg := range map[string]listener.Config{
		"no Connect":  {Channel: "c", OnNotify: func(string) {}},
		"no Channel":  {Connect: connect, OnNotify: func(string) {}},
		"no OnNotify": {Connect: connect, Channel: "c"},
		"a Probe without a ProbePrefix": {Connect: connect, Channel: "c", OnNotify: func(string) {},
			Probe: func(context.Context, string) error { return nil }},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		if err := listener.New(cfg).Run(ctx); err == nil || ctx.Err() != nil {
			t.Errorf("%s: Run returned %v, want an error at once", name, err)
		}
		cancel()
	}
}

// probing makes a rig's listener probe its connection after every LISTEN, through the
// pool unless deaf (then the probe is lost on the way, as the notification to a listener
// behind a pooler in transaction mode is), reporting each probe sent and each verdict that
// the connection hears nothing.
func probing(deaf bool, sent chan<- string, deafs chan<- struct{}) func(*rig, *listener.Config) {
	return probingFailing(0, deaf, sent, deafs)
}

// probingFailing is probing whose first failures probes fail to be sent.
func probingFailing(failures int, deaf bool, sent chan<- string, deafs chan<- struct{}) func(*rig, *listener.Config) {
	return probingWith(failures, func(int64) bool { return deaf }, sent, deafs)
}

// probingLuckily is probing whose first probe arrives and later ones are lost, as through
// a pooler in transaction mode that happened to route the first to the listener.
func probingLuckily(sent chan<- string, deafs chan<- struct{}) func(*rig, *listener.Config) {
	return probingWith(0, func(n int64) bool { return n > 1 }, sent, deafs)
}

// probingWith is probing whose first failures probes fail to be sent, and whose nth probe
// sent is lost if lost(n).
func probingWith(failures int, lost func(n int64) bool, sent chan<- string, deafs chan<- struct{}) func(*rig, *listener.Config) {
	var tries, sends atomic.Int64
	return func(r *rig, cfg *listener.Config) {
		cfg.ProbePrefix, cfg.ProbeTimeout = "probe:", 300*time.Millisecond
		cfg.Probe = func(ctx context.Context, payload string) error {
			if tries.Add(1) <= int64(failures) {
				return errors.New("no connection to spare")
			}
			select {
			case sent <- payload:
			case <-ctx.Done():
				return ctx.Err()
			}
			if lost(sends.Add(1)) {
				return nil
			}
			_, err := r.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, r.channel, payload)
			return err
		}
		cfg.OnDeaf = func() { deafs <- struct{}{} }
	}
}

// A listener that hears its probe says nothing, and passes no probe — its own or another
// listener's — to OnNotify; one whose probe is lost calls OnDeaf, after every connect.
func TestListenerProbesItsConnection(t *testing.T) {
	t.Parallel()
	t.Run("hears", func(t *testing.T) {
		t.Parallel()
		sent, deafs := make(chan string, 10), make(chan struct{}, 10)
		r := newRig(t, probing(false, sent, deafs))
		r.run()
		recv(t, r.listens, "OnListen")
		recv(t, sent, "a probe")
		r.notify(r.channel, "probe:of-another-listener")
		r.notify(r.channel, "after")
		if got := recv(t, r.payloads, "a payload"); got != "after" {
			t.Fatalf("OnNotify got %q, want %q: a probe reached it", got, "after")
		}
		// Twice the probe's timeout: a verdict would have come by then.
		select {
		case <-deafs:
			t.Fatal("OnDeaf was called although the probe was sent to the listening connection")
		case <-time.After(600 * time.Millisecond):
		}
	})
	t.Run("deaf", func(t *testing.T) {
		t.Parallel()
		sent, deafs := make(chan string, 10), make(chan struct{}, 10)
		r := newRig(t, probing(true, sent, deafs))
		r.run()
		pid := recv(t, r.conns, "a connection")
		recv(t, sent, "a probe")
		recv(t, deafs, "OnDeaf")
		var ok bool
		if err := r.pool.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("terminate %d: %v %v", pid, ok, err)
		}
		recv(t, sent, "a probe after the reconnect")
		recv(t, deafs, "OnDeaf after the reconnect")
	})
	t.Run("deaf, its first probe arriving by chance", func(t *testing.T) {
		t.Parallel()
		sent, deafs := make(chan string, 10), make(chan struct{}, 10)
		r := newRig(t, probingLuckily(sent, deafs))
		r.run()
		recv(t, sent, "the first probe")
		recv(t, sent, "a second probe, after the first arrived")
		recv(t, deafs, "OnDeaf")
	})
	t.Run("deaf, its probe failing twice", func(t *testing.T) {
		t.Parallel()
		sent, deafs := make(chan string, 10), make(chan struct{}, 10)
		r := newRig(t, probingFailing(2, true, sent, deafs))
		r.run()
		recv(t, sent, "the probe, sent at its third try")
		recv(t, deafs, "OnDeaf")
	})
}

// A connection's probe ends when the connection is replaced, even while it waits to be
// sent (for a connection of a busy pool, say): in a storm of killed connections, each
// would otherwise send a probe that gives no verdict, and linger until its timers ran out.
func TestListenerProbeEndsWithItsConnection(t *testing.T) {
	t.Parallel()
	var probes atomic.Int64
	waiting, ended := make(chan struct{}, 1), make(chan time.Time, 1)
	r := newRig(t, func(r *rig, cfg *listener.Config) {
		cfg.ProbePrefix, cfg.ProbeTimeout = "probe:", 300*time.Millisecond
		cfg.Probe = func(ctx context.Context, payload string) error {
			if probes.Add(1) == 1 { // the first connection's: it waits for a pool that has no room
				waiting <- struct{}{}
				<-ctx.Done()
				ended <- time.Now()
				return ctx.Err()
			}
			_, err := r.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, r.channel, payload)
			return err
		}
	})
	r.run()
	pid := recv(t, r.conns, "a connection")
	recv(t, waiting, "its probe, waiting to be sent")
	killed := time.Now()
	var ok bool
	if err := r.pool.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminate %d: %v %v", pid, ok, err)
	}
	recv(t, r.conns, "a new connection")
	// The probe's own bound on sending is 5 s: an end well before it is the connection's.
	if took := recv(t, ended, "the first probe to end").Sub(killed); took > 2*time.Second {
		t.Fatalf("the probe of the lost connection ended %v after it was killed, want at once", took)
	}
}
