package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay/dispatcher"
)

// handOff is the JSON of a hand-off's payload, as hand_off writes it (migration 016):
// times in microseconds since the Unix epoch.
type handOff struct {
	ID          int64           `json:"id"`
	Kind        string          `json:"kind"`
	Queue       string          `json:"queue"`
	Args        json.RawMessage `json:"args"`
	Attempt     int             `json:"attempt"`
	MaxAttempts int             `json:"max_attempts"`
	CreatedAt   int64           `json:"created_at"`
	RunAt       int64           `json:"run_at"`
	AttemptedAt int64           `json:"attempted_at"`
	TimeoutMS   *int64          `json:"timeout_ms"`
	Priority    int             `json:"priority"`
	Payload     []byte          `json:"payload"` // base64, which encoding/json decodes
	Metadata    json.RawMessage `json:"metadata"`
	Backoff     json.RawMessage `json:"backoff"`
	Schedule    string          `json:"schedule"`
	Slot        *int64          `json:"schedule_slot"`
}

// ParseHandOff decodes the payload of a hand-off, "h:<the job as JSON>": a job the
// producer's statement leased to this client (see migration 016), to run as if claimed.
// ok is false for another kind of payload; err is set for a hand-off that cannot be read.
func ParseHandOff(payload string) (job *dispatcher.Job, ok bool, err error) {
	js, ok := strings.CutPrefix(payload, "h:")
	if !ok {
		return nil, false, nil
	}
	var h handOff
	if err := json.Unmarshal([]byte(js), &h); err != nil {
		return nil, true, fmt.Errorf("read a hand-off: %w", err)
	}
	if h.ID == 0 || h.Queue == "" || h.Kind == "" || h.Attempt < 1 {
		return nil, true, errors.New("read a hand-off: it lacks the job's id, queue, kind or attempt")
	}
	job = &dispatcher.Job{
		ID: h.ID, Kind: h.Kind, Queue: h.Queue, Args: rawOrNil(h.Args), Attempt: h.Attempt, MaxAttempts: h.MaxAttempts,
		CreatedAt: time.UnixMicro(h.CreatedAt), RunAt: time.UnixMicro(h.RunAt), AttemptedAt: time.UnixMicro(h.AttemptedAt),
		Priority: h.Priority, Payload: h.Payload, Metadata: rawOrNil(h.Metadata),
		Backoff: decodePolicy(rawOrNil(h.Backoff)), Schedule: h.Schedule, HandedOff: true,
	}
	if h.TimeoutMS != nil {
		job.Timeout, job.HasTimeout = time.Duration(*h.TimeoutMS)*time.Millisecond, true
	}
	if h.Slot != nil {
		job.Slot = time.UnixMicro(*h.Slot)
	}
	return job, true, nil
}

// rawOrNil is b, or nil for JSON null (a NULL column), as a claim returns it.
func rawOrNil(b json.RawMessage) []byte {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return b
}

// ReleaseHandOff gives back a job handed off to the client that it cannot start: pending
// again, its attempt uncounted, its queue woken. It reports false if the job was no longer
// the client's hand-off.
func (c *Client) ReleaseHandOff(ctx context.Context, job *dispatcher.Job) (bool, error) {
	var woke bool
	err := c.s.q.releaseHandOff.queryRow(ctx, c.db, heldParams{ID: job.ID, Client: c.info.ID, Attempt: job.Attempt}).Scan(&woke)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("give back job %d, handed off to client %s: %w", job.ID, c.info.ID, err)
	}
	return true, nil
}

// AckHandOffs acknowledges the hand-offs of jobs to the client, which starts them: each
// gets a lease of ttl, and producers may hand the client jobs again. A job that is no
// longer the client's hand-off (given back, rescued) is left as it is.
func (c *Client) AckHandOffs(ctx context.Context, jobs []*dispatcher.Job, ttl time.Duration) error {
	p := ackParams{Client: c.info.ID, TTL: ttl, IDs: make([]int64, len(jobs)), Attempts: make([]int32, len(jobs))}
	for i, j := range jobs {
		p.IDs[i], p.Attempts[i] = j.ID, int32(j.Attempt)
	}
	// After genericPlan, as claims: planned for its values, the statement was planned afresh
	// at a quarter of its runs in the latency workload (1,297 plans in 4,994 runs), 0.24 ms
	// each on the two cores producers share with the client.
	b := &pgx.Batch{}
	c.s.q.genericPlan.queue(b, struct{}{})
	c.s.q.ackHandOffs.queue(b, p)
	if err := c.db.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("acknowledge %d jobs handed off to client %s: %w", len(jobs), c.info.ID, err)
	}
	return nil
}

type ackParams struct {
	Client   string        `db:"client"`
	TTL      time.Duration `db:"ttl"`
	IDs      []int64       `db:"ids"`
	Attempts []int32       `db:"attempts"`
}

// HandedOff takes the jobs handed off to the client that it has not acknowledged, among
// them any whose hand-off it did not hear: it acknowledges them (each gets a lease of ttl)
// and returns them.
func (c *Client) HandedOff(ctx context.Context, ttl time.Duration) ([]*dispatcher.Job, error) {
	rows, err := c.s.q.handedOff.query(ctx, c.db, handedOffParams{Client: c.info.ID, TTL: ttl})
	if err != nil {
		return nil, fmt.Errorf("take the jobs handed off to client %s: %w", c.info.ID, err)
	}
	defer rows.Close()
	var (
		jobs  []*dispatcher.Job
		r     claimedRow
		queue string
	)
	targets := append(r.targets(), &queue)
	for rows.Next() {
		if err := rows.Scan(targets...); err != nil {
			return nil, fmt.Errorf("take the jobs handed off to client %s: %w", c.info.ID, err)
		}
		jobs = append(jobs, r.job(queue))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("take the jobs handed off to client %s: %w", c.info.ID, err)
	}
	return jobs, nil
}

// GiveBackHandOffs gives back, as the client stops, the jobs handed off to it that it has
// not acknowledged, but for those in running (its handlers still run them), and reports
// how many it gave back: their wakeups were not heard, and the client starts no more.
func (c *Client) GiveBackHandOffs(ctx context.Context, running []int64) (int, error) {
	if running == nil {
		running = []int64{} // not NULL, which would match no job
	}
	var n int
	if err := c.s.q.giveBackHandOffs.queryRow(ctx, c.db, giveBackParams{Client: c.info.ID, Running: running}).Scan(&n); err != nil {
		return 0, fmt.Errorf("give back the jobs handed off to client %s: %w", c.info.ID, err)
	}
	return n, nil
}

type giveBackParams struct {
	Client  string  `db:"client"`
	Running []int64 `db:"running"`
}

type handedOffParams struct {
	Client string        `db:"client"`
	TTL    time.Duration `db:"ttl"`
}

// HoldListening takes the listening lock of client on conn, the connection its listener has
// just LISTENed on: producers hand the client jobs only while a connection holds it, one
// that hears their wakeups. The lock ends with the connection.
func (s *Store) HoldListening(ctx context.Context, conn DB, client string) error {
	if _, err := s.q.holdListening.exec(ctx, conn, clientParams{Client: client}); err != nil {
		return fmt.Errorf("take the listening lock of client %s: %w", client, err)
	}
	return nil
}

// RefuseHandOffs makes producers hand the client no more jobs, for the rest of its life:
// its listener hears no notifications (as through a pooler in transaction mode), and a job
// handed off to it would wait until it stops. Its jobs are claimed, at its polls.
func (c *Client) RefuseHandOffs(ctx context.Context) error {
	c.deaf.Store(true)
	if _, err := c.s.q.refuseHandOffs.exec(ctx, c.db, clientParams{Client: c.info.ID}); err != nil {
		return fmt.Errorf("refuse hand-offs to client %s: %w", c.info.ID, err)
	}
	return nil
}
