package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Attempts that fail because of their database connection — not because of the handler —
// are infrastructure faults: they are recorded with [ReasonInfrastructure], retried at
// once, and do not use up an attempt for the first freeInfraAttempts attempts of a job.

// freeInfraAttempts bounds the attempts of a job whose infrastructure faults do not count.
// A handler whose own statement brings its connection down every time (one cancelled by
// recovery conflicts on a standby, say, or one talking to another server that is down)
// would otherwise be retried forever; from this attempt on its faults count, and wait for
// the job's backoff delay as if this were its first attempt.
const freeInfraAttempts = 25

// infraDelay is how long after its n-th attempt failed this way a job runs again: at once
// after its first attempt, else after a delay that doubles from 50 ms up to a second, so
// that a fault that keeps coming back is not retried in a tight loop. (Delays are by the
// attempt's number: a job's attempts are mostly such faults once there are many.)
func infraDelay(attempt int) time.Duration {
	if attempt <= 1 {
		return 0
	}
	d := 50 * time.Millisecond
	for range attempt - 2 {
		if d *= 2; d >= time.Second {
			return time.Second
		}
	}
	return d
}

// connectionLost reports whether err, a handler's error, says that its database connection
// failed rather than the handler: PostgreSQL ended the session or refused it (SQLSTATE
// class 08 "connection exception" or 57 "operator intervention", but 57014, a statement
// cancelled by its timeout or by request), a connection could not be made, or pgx found
// the connection closed. Only errors that certainly come from pgx or PostgreSQL count: a
// reset connection of any other kind (an HTTP call's, say) is the handler's error.
func connectionLost(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return len(pgErr.Code) == 5 && (pgErr.Code[:2] == "08" || pgErr.Code[:2] == "57") && pgErr.Code != "57014"
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	return errors.Is(err, pgconn.ErrConnClosed)
}

// unreachable reports whether err, from one of relay's own statements, says that the
// database could not be reached: a lost or refused connection, a broken socket, or a
// statement that timed out. Such failures make the client wait for the database to come
// back (see recovery); others (a statement PostgreSQL refused) do not.
func unreachable(err error) bool {
	if err == nil {
		return false
	}
	if connectionLost(err) || pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if _, ok := errors.AsType[*pgconn.PgError](err); ok {
		return false
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED)
}
