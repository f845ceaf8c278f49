-- The SQL of retention (relay.Config.Retention): deleting finished jobs whose time is up,
-- and the rows of clients long gone. Every client runs it, with no leader: a prune takes
-- an advisory lock with a try, and a client that finds it held leaves the work to the
-- client holding it, so two never delete at once.

-- name: prune
-- Deletes up to @limit finished jobs whose retention has passed, unless another client is
-- pruning the schema right now: the advisory lock of @lock_key is only tried, and a client
-- that does not get it deletes nothing. The rules are @states, @queues and @keeps,
-- aligned: the jobs of a state (in a queue, or in every queue for NULL) are kept for keep
-- after they finished, NULL meaning forever; a queue's own rule wins over its state's.
--
-- For each state, a loose scan finds the queues that hold jobs in it, one index probe
-- per queue, and each queue's jobs are read from jobs_expiry_idx, oldest first, down to
-- the queue's cutoff: a prune reads only jobs it deletes (and the failed jobs that block
-- an ordered key, which are never deleted), however many younger ones the table keeps.
-- Rows that another transaction holds (a retry, a delete) are skipped, to be seen next
-- time, and deleting locks only finished rows: a prune never waits for, nor holds up, an
-- enqueue, a claim or an outcome.
--
-- The index entries of deleted rows stay until VACUUM removes them, and they are the
-- oldest of each range: the loose scan walks queues backwards, landing on the newest
-- (live) entries of each, and a prune that follows another in one pass resumes each range
-- where the last one stopped (@from_states, @from_queues, @from_times: the latest
-- finished_at it deleted there), so that a pass over millions of jobs does not walk the
-- entries it left behind again and again.
--
-- One row per (state, queue) it deleted from, with how many and the latest finished_at,
-- then one (state NULL) that says whether it held the lock.
WITH RECURSIVE lock AS (
    SELECT pg_try_advisory_xact_lock(hashtext('relay.prune'), hashtext(@lock_key)) AS held
), rules AS (
    SELECT * FROM unnest(@states::text[], @queues::text[], @keeps::interval[]) AS r(state, queue, keep)
), resume AS (
    SELECT * FROM unnest(@from_states::text[], @from_queues::text[], @from_times::timestamptz[]) AS f(state, queue, at)
), queues AS (
    -- the queues holding finished jobs, newest queue name first, per state
    SELECT s.state, (
        SELECT queue FROM {schema}.jobs
        WHERE state = s.state AND state IN ('succeeded', 'failed', 'cancelled')
        ORDER BY queue DESC
        LIMIT 1) AS queue
    FROM unnest('{succeeded,failed,cancelled}'::text[]) s(state)
    WHERE (SELECT held FROM lock)
    UNION ALL
    SELECT q.state, (
        SELECT queue FROM {schema}.jobs
        WHERE state = q.state AND state IN ('succeeded', 'failed', 'cancelled') AND queue < q.queue
        ORDER BY queue DESC
        LIMIT 1)
    FROM queues q
    WHERE q.queue IS NOT NULL
), doomed AS (
    -- Locked as they are read, each row once. A row another transaction holds is skipped:
    -- a prune never waits, for it holds the lock every client tries meanwhile. One changed
    -- since the statement began is rechecked on its latest version, which the delete below
    -- (of the statement's snapshot) does not see: it is left for the next prune.
    SELECT x.ctid
    FROM queues q
    CROSS JOIN LATERAL (
        SELECT now() - (
            SELECT r.keep FROM rules r
            WHERE r.state = q.state AND (r.queue = q.queue OR r.queue IS NULL)
            ORDER BY r.queue IS NULL
            LIMIT 1) AS cutoff,
            coalesce((SELECT f.at FROM resume f WHERE f.state = q.state AND f.queue = q.queue), '-infinity') AS from_time
    ) c
    CROSS JOIN LATERAL (
        SELECT ctid FROM {schema}.jobs
        WHERE state = q.state AND state IN ('succeeded', 'failed', 'cancelled') AND queue = q.queue
          AND finished_at >= c.from_time AND finished_at < c.cutoff AND NOT blocking
        ORDER BY finished_at
        LIMIT @limit
        FOR UPDATE SKIP LOCKED
    ) x
    WHERE q.queue IS NOT NULL AND c.cutoff IS NOT NULL
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
-- @keep ago, and that no running job names; returns how many.
WITH gone AS (
    DELETE FROM {schema}.clients c
    WHERE coalesce(c.stopped_at, c.heartbeat_at + c.lease_ttl) < now() - @keep::interval
      AND NOT EXISTS (SELECT FROM {schema}.jobs j WHERE j.state = 'running' AND j.attempted_by = c.id)
    RETURNING 1
)
SELECT count(*) FROM gone;
