-- The SQL of listing and counting jobs (relay.ListJobs, relay.CountJobs). None of it is on
-- a hot path: these are the statements of dashboards and operators, and they read only.
--
-- list.go assembles each listing from the fragments below, keeping only the parts and the
-- filters a call asks for, so that every statement the server sees has one plan shape.
-- {schema} is the quoted schema name; {columns} the columns of a record; {filters} becomes
-- the filter fragments a call uses, {parts} the parts it needs. @after, @limit, @queue,
-- @kind, @from, @to and @finished are the bind parameters, the fields of listParams.
--
-- The indexes behind them (see schema.sql): unfinished jobs are few and have their own
-- small partial indexes (pending: jobs_claim_idx, running: jobs_lease_idx, held:
-- jobs_held_idx); finished jobs
-- are the millions, found through jobs_finished_idx (state, queue, id) INCLUDE (kind,
-- created_at): one ordered index range per state and queue, newest first, where the kind
-- and time filters are checked on the index entry itself.

-- name: columns
-- The columns of a record, in the order scanRecord reads them (the same as getJob's).
-- {values} is the fragment values, or noValues for a listing that leaves them out: then a
-- page reads no large value (nor its TOAST), only the sizes, which pg_column_size takes
-- from the row or the TOAST pointer.
id, kind, queue, state, attempt, max_attempts, created_at, run_at,
attempted_at, attempted_by, finished_at, lease_expires_at, timeout_ms, attempts,
run_at > now() AS scheduled, priority, order_key, blocking, unique_key, schedule, schedule_slot, {values},
pg_column_size(args), pg_column_size(checkpoint), pg_column_size(output), pg_column_size(payload),
pg_column_size(metadata),
held_until, committed_at, backoff

-- name: values
args, checkpoint, output, payload, metadata

-- name: noValues
NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::bytea, NULL::jsonb

-- name: listNewest
-- Jobs in any state: newest first along the primary key, the filters checked on each row.
SELECT {columns}
FROM {schema}.jobs
WHERE id < @after::bigint {filters}
ORDER BY id DESC
LIMIT @limit::integer;

-- name: listByState
-- Jobs in the states asked for: the newest @limit of each part, then the newest @limit
-- of them all, read by primary key. One statement, so one snapshot: a job that changes
-- state meanwhile is seen once, in one state. The page's ids are an array, each found by
-- its own probe of the primary key: as a join, the planner (which cannot know how few
-- they are) read the whole primary key (a merge join) or the whole table (a hash join).
SELECT {columns}
FROM {schema}.jobs
WHERE id = ANY (ARRAY(
    SELECT id FROM ({parts}) part
    ORDER BY id DESC
    LIMIT @limit::integer))
ORDER BY id DESC;

-- name: partPending
-- Due pending jobs: the claim index holds them all (in claim order, not id order), and the
-- newest are sorted out of them, so a page costs what the pending jobs of the queue (or
-- of all queues) do. "id + 0" keeps the planner from walking the primary key backwards
-- instead, filtering rows as it goes: quick while pending jobs are the newest of the
-- table, but a walk through every job finished since, when they are not.
(SELECT id FROM {schema}.jobs
 WHERE state = 'pending' AND run_at <= now() AND id < @after::bigint {filters}
 ORDER BY id + 0 DESC
 LIMIT @limit::integer)

-- name: partScheduled
(SELECT id FROM {schema}.jobs
 WHERE state = 'pending' AND run_at > now() AND id < @after::bigint {filters}
 ORDER BY id + 0 DESC
 LIMIT @limit::integer)

-- name: partRunning
-- Running jobs: the lease index holds them, a few per worker.
(SELECT id FROM {schema}.jobs
 WHERE state = 'running' AND id < @after::bigint {filters}
 ORDER BY id + 0 DESC
 LIMIT @limit::integer)

-- name: partHeld
-- Held jobs (reservations not yet committed): the expirers' index holds them.
(SELECT id FROM {schema}.jobs
 WHERE state = 'held' AND id < @after::bigint {filters}
 ORDER BY id + 0 DESC
 LIMIT @limit::integer)

-- name: partFinishedInQueue
-- Finished jobs of one queue in the states @finished: one backward range scan of
-- jobs_finished_idx per state, which stops after @limit entries that pass the filters.
-- (The literal state list lets the planner prove that the partial index applies.) The
-- bound on ids is a row comparison over (state, queue, id), the index's columns, which
-- only that index serves, as here and in partFinished: a bound on id alone let the planner
-- walk the primary key down from the newest job instead, filtering rows, across the whole
-- table when the state and queue are sparse (it cannot know how sparse they are).
-- The ORDER BY is that of the index likewise.
(SELECT f.id
 FROM unnest(@finished::text[]) s(state)
 CROSS JOIN LATERAL (
     SELECT id FROM {schema}.jobs
     WHERE state = s.state AND state IN ('succeeded', 'failed', 'cancelled')
       AND queue = @queue::text AND (state, queue, id) < (s.state, @queue::text, @after::bigint) {filters}
     ORDER BY state DESC, queue DESC, id DESC
     LIMIT @limit::integer
 ) f)

-- name: queuesInState
-- The recursive CTE "queues": the queues that hold jobs in the finished state s.state, by a
-- loose scan of jobs_finished_idx, one index probe per queue. Each queue appears once, and
-- a last row holds NULL.
queues AS (
    (SELECT queue FROM {schema}.jobs
     WHERE state = s.state AND state IN ('succeeded', 'failed', 'cancelled')
     ORDER BY queue
     LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM {schema}.jobs j
            WHERE j.state = s.state AND j.state IN ('succeeded', 'failed', 'cancelled')
              AND j.queue > q.queue
            ORDER BY j.queue
            LIMIT 1)
    FROM queues q
    WHERE q.queue IS NOT NULL
)

-- name: partFinished
-- Finished jobs of every queue in the states @finished. For each state, a loose scan
-- finds the queues that hold jobs in it (one index probe per queue) and one more probe per
-- queue finds its newest job that passes the filters, its head. The newest @limit jobs
-- of all queues are no older than the @limit-th newest head (those heads are @limit such
-- jobs), so only the queues whose head is that new are read further, and only down to it:
-- at most @limit queues, each at most @limit entries, however many queues and jobs there are.
(SELECT f.id
 FROM unnest(@finished::text[]) s(state)
 CROSS JOIN LATERAL (
     WITH RECURSIVE {queuesInState}, heads AS MATERIALIZED (
         SELECT q.queue, (
             SELECT id FROM {schema}.jobs
             WHERE state = s.state AND state IN ('succeeded', 'failed', 'cancelled')
               AND queue = q.queue AND (state, queue, id) < (s.state, q.queue, @after::bigint) {filters}
             ORDER BY state DESC, queue DESC, id DESC
             LIMIT 1
         ) AS head
         FROM queues q
         WHERE q.queue IS NOT NULL
     ), oldest AS (
         SELECT coalesce((
             SELECT head FROM heads
             WHERE head IS NOT NULL
             ORDER BY head DESC
             OFFSET @limit::integer - 1
             LIMIT 1
         ), 0) AS id
     )
     SELECT newest.id
     FROM heads h
     CROSS JOIN LATERAL (
         SELECT id FROM {schema}.jobs
         WHERE state = s.state AND state IN ('succeeded', 'failed', 'cancelled')
           AND queue = h.queue
           AND (state, queue, id) <= (s.state, h.queue, h.head)
           AND (state, queue, id) >= (s.state, h.queue, (SELECT id FROM oldest)) {filters}
         ORDER BY state DESC, queue DESC, id DESC
         LIMIT @limit::integer
     ) newest
     WHERE h.head >= (SELECT id FROM oldest)
 ) f)

-- name: filterQueue
AND queue = @queue::text

-- name: filterKind
AND kind = @kind::text

-- name: filterFrom
AND created_at >= @from::timestamptz

-- name: filterTo
AND created_at < @to::timestamptz

-- name: countJobs
-- How many jobs each queue holds in each state, exactly. Pending jobs are split into due
-- ('pending') and 'scheduled' ones. Unfinished jobs are counted from their small partial
-- indexes; finished ones by an index-only scan of jobs_finished_idx, walked one (state,
-- queue) range at a time: its cost grows with the number of finished jobs (and with those
-- on pages VACUUM has not yet marked all-visible, whose rows are visited too).
SELECT queue, CASE WHEN run_at > now() THEN 'scheduled' ELSE 'pending' END, count(*)
FROM {schema}.jobs
WHERE state = 'pending'
GROUP BY 1, 2
UNION ALL
SELECT queue, 'running', count(*)
FROM {schema}.jobs
WHERE state = 'running'
GROUP BY 1
UNION ALL
SELECT queue, 'held', count(*)
FROM {schema}.jobs
WHERE state = 'held'
GROUP BY 1
UNION ALL
SELECT g.queue, s.state, g.n
FROM unnest('{succeeded,failed,cancelled}'::text[]) s(state)
CROSS JOIN LATERAL (
    WITH RECURSIVE {queuesInState}
    SELECT q.queue, (
        SELECT count(*) FROM {schema}.jobs
        WHERE state = s.state AND state IN ('succeeded', 'failed', 'cancelled') AND queue = q.queue
    ) AS n
    FROM queues q
    WHERE q.queue IS NOT NULL
) g;

-- name: queueDepths
-- The unfinished jobs of every queue that has any: due pending jobs ('pending'), pending
-- jobs due later ('scheduled'), running and held ones, each with its count and, for the
-- pending ones, the earliest run_at and how many seconds ago that was on the database's
-- clock. Read from the partial indexes of pending, running and held jobs only
-- (jobs_claim_idx, jobs_lease_idx, jobs_held_idx), so its cost is what the unfinished jobs number, whatever the finished
-- ones do: it is what metrics read on every collection (see relay.QueueDepths).
SELECT queue, CASE WHEN run_at > now() THEN 'scheduled' ELSE 'pending' END, count(*),
       extract(epoch FROM now() - min(run_at))::float8
FROM {schema}.jobs
WHERE state = 'pending'
GROUP BY 1, 2
UNION ALL
SELECT queue, 'running', count(*), NULL
FROM {schema}.jobs
WHERE state = 'running'
GROUP BY 1
UNION ALL
SELECT queue, 'held', count(*), NULL
FROM {schema}.jobs
WHERE state = 'held'
GROUP BY 1;
