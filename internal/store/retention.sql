-- The SQL of retention (relay.Config.Retention): deleting finished jobs whose time is up,
-- and the rows of clients long gone. Every client runs it, with no leader: a prune takes
-- an advisory lock with a try, and a client that finds it held leaves the work to the
-- client holding it, so two never delete at once.

-- name: expired
-- The (state, queue) ranges that hold jobs whose retention has passed under the rules
-- (@states, @queues, @keeps, aligned: the jobs of a state, in a queue or in every queue
-- for NULL, are kept for keep after they finished, NULL meaning forever; a queue's own
-- rule wins over its state's): what a pass of prunes works through. For each state, a
-- loose scan finds the queues that hold jobs in it, one index probe per queue, backwards:
-- the index entries of deleted rows stay until VACUUM, and they are the oldest of each
-- queue, while a backward probe lands on the newest.
WITH RECURSIVE {pruneRules}, queues AS (
    SELECT s.state, (
        SELECT queue FROM {schema}.jobs
        WHERE state = s.state AND state IN ('succeeded', 'failed', 'cancelled')
        ORDER BY queue DESC
        LIMIT 1) AS queue
    FROM unnest('{succeeded,failed,cancelled}'::text[]) s(state)
    UNION ALL
    SELECT q.state, (
        SELECT queue FROM {schema}.jobs
        WHERE state = q.state AND state IN ('succeeded', 'failed', 'cancelled') AND queue < q.queue
        ORDER BY queue DESC
        LIMIT 1)
    FROM queues q
    WHERE q.queue IS NOT NULL
)
SELECT q.state, q.queue
FROM queues q
CROSS JOIN LATERAL (SELECT {pruneCutoff} AS cutoff) c
WHERE q.queue IS NOT NULL
  AND EXISTS (
      SELECT FROM {schema}.jobs
      WHERE state = q.state AND state IN ('succeeded', 'failed', 'cancelled') AND queue = q.queue
        AND finished_at < c.cutoff AND NOT blocking);

-- name: pruneRules
-- The CTE "rules": the rules of @states, @queues and @keeps (see expired).
rules AS (
    SELECT * FROM unnest(@states::text[], @queues::text[], @keeps::interval[]) AS r(state, queue, keep)
)

-- name: pruneCutoff
-- When the jobs of range q (state, queue) expire under the rules: those that finished
-- before are expired; NULL if they are kept forever.
now() - (
    SELECT r.keep FROM rules r
    WHERE r.state = q.state AND (r.queue = q.queue OR r.queue IS NULL)
    ORDER BY r.queue IS NULL
    LIMIT 1)

-- name: prune
-- Deletes up to @limit expired jobs of the ranges @range_states and @range_queues (found
-- by expired), unless another client is pruning the schema right now: the advisory lock of
-- @lock_key is only tried, and a client that does not get it deletes nothing. Each range is
-- read from jobs_expiry_idx, oldest first, from @range_froms (the latest finished_at an
-- earlier prune of the pass deleted there, or NULL) up to its cutoff: a pass over millions
-- of jobs never walks the entries it left behind again and again. It locks only finished
-- rows, and skips any that another transaction holds (a retry, a delete): a prune never
-- waits for, nor holds up, an enqueue, a claim or an outcome. A failed job that blocks its
-- ordered key is never deleted.
--
-- One row per range it deleted from, with how many and the latest finished_at, then one
-- (state NULL) that says whether it held the lock.
WITH lock AS (
    SELECT pg_try_advisory_xact_lock(hashtext('relay.prune'), hashtext(@lock_key)) AS held
), {pruneRules}, doomed AS (
    -- Locked as they are read, each row once. A row another transaction holds is skipped:
    -- a prune never waits, for it holds the lock every client tries meanwhile. One changed
    -- since the statement began is rechecked on its latest version, which the delete below
    -- (of the statement's snapshot) does not see: it is left for the next prune.
    SELECT x.ctid
    FROM unnest(@range_states::text[], @range_queues::text[], @range_froms::timestamptz[]) WITH ORDINALITY
        AS q(state, queue, from_time, ord)
    CROSS JOIN LATERAL (SELECT {pruneCutoff} AS cutoff) c
    CROSS JOIN LATERAL (
        SELECT ctid FROM {schema}.jobs
        WHERE state = q.state AND state IN ('succeeded', 'failed', 'cancelled') AND queue = q.queue
          AND finished_at >= coalesce(q.from_time, '-infinity') AND finished_at < c.cutoff AND NOT blocking
        ORDER BY finished_at
        LIMIT @limit
        FOR UPDATE SKIP LOCKED
    ) x
    WHERE (SELECT held FROM lock) AND c.cutoff IS NOT NULL
    LIMIT @limit
), deleted AS (
    -- By the tuple ids of the rows locked above, which nobody else can change now: no
    -- second walk down the primary key per row.
    DELETE FROM {schema}.jobs
    WHERE ctid = ANY (array(SELECT ctid FROM doomed))
    RETURNING state, queue, finished_at
)
SELECT state, queue, count(*), max(finished_at), NULL::boolean FROM deleted GROUP BY state, queue
UNION ALL
SELECT NULL, NULL, NULL, NULL, (SELECT held FROM lock);

-- name: pruneClients
-- Deletes the rows of clients that stopped, or whose last heartbeat expired, more than
-- @keep ago, and that no running job names; returns how many. With them go their
-- dispatchers' rows, and any of a client whose row is gone already: a client that was
-- killed never deleted its own, and a new id each start would leave a few behind at every
-- crash, for good. Deleting one is always safe: a queue of a live client with no row counts
-- as waiting, and producers then notify.
WITH gone AS (
    DELETE FROM {schema}.clients c
    WHERE coalesce(c.stopped_at, c.heartbeat_at + c.lease_ttl) < now() - @keep::interval
      AND NOT EXISTS (SELECT FROM {schema}.jobs j WHERE j.state = 'running' AND j.attempted_by = c.id)
    RETURNING c.id
), strays AS (
    DELETE FROM {schema}.dispatchers d
    WHERE d.client_id IN (SELECT id FROM gone)
       OR NOT EXISTS (SELECT FROM {schema}.clients c WHERE c.id = d.client_id)
    RETURNING 1
)
SELECT count(*) FROM gone WHERE (SELECT count(*) FROM strays) >= 0;
