package store

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

//go:embed periodic.sql
var periodicSQL string

// periodicQueries are periodic.sql's statements.
type periodicQueries struct {
	registerSchedules statement[registerParams]
	lockSchedule      statement[scheduleParams]
	scheduled         statement[scheduledParams]
	listSchedules     statement[struct{}]
	deleteSchedule    statement[scheduleParams]
}

func buildPeriodicQueries(names *strings.Replacer) periodicQueries {
	var q periodicQueries
	bindAll(periodicSQL, "periodic.sql", names, []named{
		{"registerSchedules", &q.registerSchedules}, {"lockSchedule", &q.lockSchedule},
		{"scheduled", &q.scheduled}, {"listSchedules", &q.listSchedules}, {"deleteSchedule", &q.deleteSchedule},
	})
	checkBuilt(q)
	return q
}

// ErrNoSchedule is returned for a schedule name that has no row.
var ErrNoSchedule = errors.New("no such schedule")

// ScheduleDef is a schedule as a client registers it.
type ScheduleDef struct {
	Name, Spec, Kind, Queue, CatchUp string
}

type registerParams struct {
	Names    []string `db:"names"`
	Specs    []string `db:"specs"`
	Kinds    []string `db:"kinds"`
	Queues   []string `db:"queues"`
	CatchUps []string `db:"catch_ups"`
}

type scheduleParams struct {
	Name string `db:"name"`
}

type scheduledParams struct {
	Name     string             `db:"name"`
	IDs      []int64            `db:"ids"`
	Slots    []time.Time        `db:"slots"`
	NextSlot pgtype.Timestamptz `db:"next_slot"`
}

// RegisterSchedules creates the schedules defs, or updates their definitions, keeping
// their slots.
func (s *Store) RegisterSchedules(ctx context.Context, db DB, defs []ScheduleDef) error {
	var p registerParams
	for _, d := range defs {
		p.Names, p.Specs, p.Kinds = append(p.Names, d.Name), append(p.Specs, d.Spec), append(p.Kinds, d.Kind)
		p.Queues, p.CatchUps = append(p.Queues, d.Queue), append(p.CatchUps, d.CatchUp)
	}
	if _, err := s.p.registerSchedules.exec(ctx, db, p); err != nil {
		return fmt.Errorf("register schedules: %w", err)
	}
	return nil
}

// SlotPlan is what a client enqueues for a schedule, given its next slot: the jobs, each
// for its slot, and the schedule's next slot after them.
type SlotPlan struct {
	Jobs  []NewJob
	Slots []time.Time // aligned with Jobs
	Next  time.Time
}

// Slotted is one job a schedule's plan enqueued.
type Slotted struct {
	Slot time.Time
	ID   int64
	// Inserted is false when a job already held the slot's unique key (ID is that job).
	Inserted bool
}

// Schedule enqueues slots of schedule name in one transaction on db that holds the
// schedule's row: plan is called with its next slot (zero if it never enqueued) and says
// what to enqueue, and the schedule moves on to the plan's next slot. Whichever client
// locks the row first for a slot enqueues it; the others find next_slot past it.
func (s *Store) Schedule(ctx context.Context, db Beginner, name string, plan func(next time.Time) SlotPlan) ([]Slotted, error) {
	var out []Slotted
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		out = nil
		var next pgtype.Timestamptz
		err := s.p.lockSchedule.queryRow(ctx, tx, scheduleParams{Name: name}).Scan(&next)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %q", ErrNoSchedule, name)
		}
		if err != nil {
			return err
		}
		pl := plan(next.Time)
		if len(pl.Jobs) == 0 && pl.Next.Equal(next.Time) {
			return nil // another client got there first: nothing to write
		}
		p := scheduledParams{Name: name, NextSlot: pgtype.Timestamptz{Time: pl.Next, Valid: !pl.Next.IsZero()}}
		if len(pl.Jobs) > 0 {
			ins, err := s.InsertMany(ctx, tx, pl.Jobs)
			if err != nil {
				return err
			}
			for i, in := range ins {
				out = append(out, Slotted{Slot: pl.Slots[i], ID: in.ID, Inserted: in.Inserted})
				if in.Inserted {
					p.IDs, p.Slots = append(p.IDs, in.ID), append(p.Slots, pl.Slots[i])
				}
			}
		}
		_, err = s.p.scheduled.exec(ctx, tx, p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("enqueue the slots of schedule %q: %w", name, err)
	}
	return out, nil
}

// ScheduleRow is a schedule as stored, with the live clients that have it.
type ScheduleRow struct {
	ScheduleDef
	NextSlot, LastSlot   time.Time
	LastJob              int64
	CreatedAt, UpdatedAt time.Time
	Clients              []string
}

// ListSchedules returns every schedule, by name.
func (s *Store) ListSchedules(ctx context.Context, db DB) ([]ScheduleRow, error) {
	rows, err := s.p.listSchedules.query(ctx, db, struct{}{})
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ScheduleRow, error) {
		var (
			r          ScheduleRow
			next, last pgtype.Timestamptz
			lastJob    pgtype.Int8
		)
		err := row.Scan(&r.Name, &r.Spec, &r.Kind, &r.Queue, &r.CatchUp, &next, &last, &lastJob,
			&r.CreatedAt, &r.UpdatedAt, &r.Clients)
		r.NextSlot, r.LastSlot, r.LastJob = next.Time, last.Time, lastJob.Int64
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	return list, nil
}

// DeleteSchedule deletes schedule name unless a live client has it; it returns those
// that have it (nothing was deleted then), or ErrNoSchedule.
func (s *Store) DeleteSchedule(ctx context.Context, db DB, name string) (liveClients []string, err error) {
	err = s.p.deleteSchedule.queryRow(ctx, db, scheduleParams{Name: name}).Scan(&liveClients)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoSchedule
	}
	if err != nil {
		return nil, fmt.Errorf("delete schedule %q: %w", name, err)
	}
	return liveClients, nil
}
