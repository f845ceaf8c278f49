-- The SQL of periodic schedules (relay.Schedule). Every client that has a schedule
-- enqueues its slots, with no leader: it locks the schedule's row in the periodic table,
-- enqueues the slots that are due and not yet done (next_slot says which are), moves
-- next_slot on and commits, so that each slot is enqueued once, whichever client gets
-- there first. Its jobs are enqueued by the statements of every enqueue (queries.sql),
-- in the same transaction.

-- name: registerSchedules
-- Creates or updates the schedules of a client starting (@names, @specs, @kinds, @queues,
-- @catch_ups, aligned), keeping each one's slots: the spec stored is the latest client's.
INSERT INTO {schema}.periodic AS p (name, spec, kind, queue, catch_up)
SELECT * FROM unnest(@names::text[], @specs::text[], @kinds::text[], @queues::text[], @catch_ups::text[])
ON CONFLICT (name) DO UPDATE SET
    spec = EXCLUDED.spec, kind = EXCLUDED.kind, queue = EXCLUDED.queue, catch_up = EXCLUDED.catch_up,
    updated_at = now();

-- name: lockSchedule
-- Locks schedule @name until the end of the transaction and returns its next slot: NULL
-- if it has never been enqueued. No row: it is not registered (deleted meanwhile).
SELECT next_slot FROM {schema}.periodic WHERE name = @name FOR UPDATE;

-- name: scheduled
-- Records, in the transaction that locked schedule @name, that it enqueued jobs @ids for
-- slots @slots (aligned; none if it only moved on) and that its next slot is @next_slot.
-- Each job is marked with its schedule and slot.
WITH marked AS (
    UPDATE {schema}.jobs j SET schedule = @name, schedule_slot = m.slot
    FROM unnest(@ids::bigint[], @slots::timestamptz[]) AS m(id, slot)
    WHERE j.id = m.id
    RETURNING j.id, m.slot
), latest AS (
    SELECT id, slot FROM marked ORDER BY slot DESC LIMIT 1
)
UPDATE {schema}.periodic p
SET next_slot = @next_slot,
    last_slot = coalesce((SELECT slot FROM latest), p.last_slot),
    last_job = coalesce((SELECT id FROM latest), p.last_job)
WHERE p.name = @name;

-- name: listSchedules
-- Every schedule, with the live clients that have it.
SELECT p.name, p.spec, p.kind, p.queue, p.catch_up, p.next_slot, p.last_slot, p.last_job,
    p.created_at, p.updated_at,
    array(SELECT c.id FROM {schema}.clients c
          WHERE p.name = ANY (c.schedules) AND c.id IN (SELECT id FROM {schema}.client_status WHERE alive)
          ORDER BY c.id)
FROM {schema}.periodic p
ORDER BY p.name;

-- name: deleteSchedule
-- Deletes schedule @name unless a live client has it. Returns whether it exists and the
-- live clients that have it; no row if there is no such schedule.
WITH target AS (
    SELECT name FROM {schema}.periodic WHERE name = @name FOR UPDATE
), live AS (
    SELECT array(SELECT c.id FROM {schema}.clients c
                 WHERE @name = ANY (c.schedules) AND c.id IN (SELECT id FROM {schema}.client_status WHERE alive)
                 ORDER BY c.id) AS ids
), deleted AS (
    DELETE FROM {schema}.periodic p
    USING target t
    WHERE p.name = t.name AND cardinality((SELECT ids FROM live)) = 0
    RETURNING 1
)
SELECT ids FROM live
WHERE EXISTS (SELECT FROM target) AND (SELECT count(*) FROM deleted) >= 0;
