package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/fleet"
)

// check is one thing a scenario checked besides jobs and effects.
type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// badCase calls one public entry point with a value that must be refused, in tx.
type badCase struct {
	name string
	want error
	call func(ctx context.Context, tx pgx.Tx, schema string) error
}

type badArgs struct{ S string }

var (
	badKind = relay.NewKind[badArgs]("chaos.bad")
	badRaw  = relay.NewKind[json.RawMessage]("chaos.bad-raw")
)

func badEnqueue(opts ...relay.EnqueueOption) func(context.Context, pgx.Tx, string) error {
	return func(ctx context.Context, tx pgx.Tx, schema string) error {
		_, err := relay.Enqueue(ctx, tx, badKind, badArgs{}, append(opts, relay.Schema(schema))...)
		return err
	}
}

// badCases are the values the independent run found reaching PostgreSQL (issue 12), one
// entry point each.
var badCases = []badCase{
	{"MaxAttempts(4294967299), once stored as 3", relay.ErrInvalidJob, badEnqueue(relay.MaxAttempts(4294967299))},
	{"a kind's MaxAttempts(1<<32+2), once run with 2", relay.ErrInvalidConfig, func(context.Context, pgx.Tx, string) error {
		return relay.Handle(relay.New(relay.Config{}), badKind, func(context.Context, *relay.Job[badArgs]) error { return nil },
			relay.MaxAttempts(1<<32+2))
	}},
	{"GlobalLimit 1<<32+1, once stored as 1", relay.ErrInvalidConfig, func(ctx context.Context, tx pgx.Tx, schema string) error {
		return relay.SetQueue(ctx, tx, "chaos-limited", relay.QueueSettings{GlobalLimit: 1<<32 + 1}, relay.Schema(schema))
	}},
	{"a queue name with a NUL byte", relay.ErrInvalidJob, badEnqueue(relay.Queue("q\x00"))},
	{"a kind name that is not UTF-8", relay.ErrInvalidJob, func(ctx context.Context, tx pgx.Tx, schema string) error {
		_, err := relay.EnqueueMany(ctx, tx, []relay.JobSpec{relay.NewKind[badArgs]("k\xff").Job(badArgs{})}, relay.Schema(schema))
		return err
	}},
	{"a unique key with a NUL byte", relay.ErrInvalidJob, badEnqueue(relay.Unique("key\x00"))},
	{"an order key that is not UTF-8", relay.ErrInvalidJob, badEnqueue(relay.OrderKey("\xc3("))},
	{`JSON args holding \u0000`, relay.ErrEncodeArgs, func(ctx context.Context, tx pgx.Tx, schema string) error {
		_, err := relay.EnqueueJob(ctx, tx, badRaw, json.RawMessage(`{"s":"a\u0000b"}`), relay.Schema(schema))
		return err
	}},
	{"RunAt in year 300000", relay.ErrInvalidJob, badEnqueue(relay.RunAt(time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)))},
	{"a nil DB", relay.ErrNilDB, func(ctx context.Context, _ pgx.Tx, schema string) error {
		_, err := relay.Enqueue(ctx, nil, badKind, badArgs{}, relay.Schema(schema))
		return err
	}},
	{"a typed nil pool", relay.ErrNilDB, func(ctx context.Context, _ pgx.Tx, schema string) error {
		_, err := relay.EnqueueMany(ctx, (*pgxpool.Pool)(nil), []relay.JobSpec{badKind.Job(badArgs{})}, relay.Schema(schema))
		return err
	}},
}

// badInput calls every bad case in a transaction of its own, checks that it was refused
// with its sentinel before reaching PostgreSQL, then enqueues a good job in the same
// transaction and commits it: the job must run like any other. At the end no row of
// anything but the good jobs may be in the table.
func badInput(ctx context.Context, r *run) error {
	for i, c := range badCases {
		ok, detail, err := r.tryBad(ctx, c, int64(i))
		if err != nil {
			return err
		}
		r.res.Checks = append(r.res.Checks, check{Name: "refused: " + c.name, OK: ok, Detail: detail})
	}
	var stray int
	if err := r.s.pool.QueryRow(ctx, `SELECT count(*) FROM `+r.jobs()+` WHERE kind <> $1 OR queue <> $2`,
		fleet.Kind.Name(), r.queue).Scan(&stray); err != nil {
		return err
	}
	r.res.Checks = append(r.res.Checks, check{Name: "no bad job stored", OK: stray == 0, Detail: fmt.Sprintf("%d stray rows", stray)})
	var limited int
	if err := r.s.pool.QueryRow(ctx, `SELECT count(*) FROM `+r.quoted("queues")).Scan(&limited); err != nil {
		return err
	}
	r.res.Checks = append(r.res.Checks, check{Name: "no bad queue setting stored", OK: limited == 0, Detail: fmt.Sprintf("%d rows in queues", limited)})
	return nil
}

func (r *run) tryBad(ctx context.Context, c badCase, n int64) (ok bool, detail string, err error) {
	tx, err := r.s.pool.Begin(ctx)
	if err != nil {
		return false, "", err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	called := c.call(ctx, tx, r.schema)
	var problems []string
	switch {
	case called == nil:
		problems = append(problems, "accepted")
	case !errors.Is(called, c.want):
		problems = append(problems, fmt.Sprintf("%v does not wrap %q", called, c.want))
	}
	if pgErr, isPG := errors.AsType[*pgconn.PgError](called); isPG {
		problems = append(problems, "reached PostgreSQL: SQLSTATE "+pgErr.Code)
	}
	id, err := relay.Enqueue(ctx, tx, fleet.Kind, workMix(n), relay.Queue(r.queue), relay.Schema(r.schema))
	if err == nil {
		err = tx.Commit(ctx)
	}
	if err != nil {
		problems = append(problems, "the transaction was no longer usable: "+err.Error())
	} else {
		r.prod.count(id, true, false, 0)
	}
	if called != nil {
		detail = called.Error()
	}
	if len(problems) > 0 {
		detail = strings.Join(problems, "; ")
	}
	return len(problems) == 0, detail, nil
}
