-- The SQL of retention (relay.Config.Retention): deleting finished jobs whose time is up,
-- and the rows of clients long gone. Every client runs it, with no leader: a prune takes
-- an advisory lock with a try, and a client that finds it held leaves the work to the
-- client holding it, so two never delete at once.

-- name: prune
-- Deletes up to @limit finished jobs whose retention has passed, unless another client is
-- pruning the schema right now: the advisory lock of @lock_key is only tried, and a client
-- that does not get it deletes nothing (the first column says whether it did). The rules
-- are @states, @queues and @keeps, aligned: the jobs of a state (in a queue, or in every
-- queue for NULL) are kept for keep after they finished, NULL meaning forever; a queue's
-- own rule wins over its state's.
--
-- For each state, a loose scan of jobs_finished_idx finds the queues that hold jobs in it
-- (one index probe per queue), and each queue's jobs are read from jobs_expiry_idx, oldest
-- first, down to the queue's cutoff: a prune reads only jobs it deletes (and the failed
-- jobs that block an ordered key, which are never deleted), however many younger ones
-- the table keeps. Rows that another transaction holds (a retry, a delete) are skipped,
-- to be seen next time, and deleting locks only finished rows: a prune never waits for,
-- nor holds up, an enqueue, a claim or an outcome.
WITH lock AS (
    SELECT pg_try_advisory_xact_lock(hashtext('relay.prune'), hashtext(@lock_key)) AS held
), rules AS (
    SELECT * FROM unnest(@states::text[], @queues::text[], @keeps::interval[]) AS r(state, queue, keep)
), candidates AS (
    SELECT e.id, e.state, e.cutoff
    FROM unnest('{succeeded,failed,cancelled}'::text[]) s(state)
    CROSS JOIN LATERAL (
        WITH RECURSIVE {queuesInState}
        SELECT x.id, s.state, c.cutoff
        FROM queues q
        CROSS JOIN LATERAL (
            SELECT now() - (
                SELECT r.keep FROM rules r
                WHERE r.state = s.state AND (r.queue = q.queue OR r.queue IS NULL)
                ORDER BY r.queue IS NULL
                LIMIT 1) AS cutoff
        ) c
        CROSS JOIN LATERAL (
            SELECT id FROM {schema}.jobs
            WHERE state = s.state AND state IN ('succeeded', 'failed', 'cancelled')
              AND queue = q.queue AND finished_at < c.cutoff AND NOT blocking
            ORDER BY finished_at
            LIMIT @limit
        ) x
        WHERE q.queue IS NOT NULL AND c.cutoff IS NOT NULL
    ) e
    WHERE (SELECT held FROM lock)
    LIMIT @limit
), doomed AS (
    -- rechecked on the latest row version once locked: a job retried meanwhile stays
    SELECT j.id
    FROM candidates c
    JOIN {schema}.jobs j ON j.id = c.id
    WHERE j.state = c.state AND j.finished_at < c.cutoff AND NOT j.blocking
    FOR UPDATE OF j SKIP LOCKED
), deleted AS (
    DELETE FROM {schema}.jobs j
    USING doomed d
    WHERE j.id = d.id
    RETURNING j.state
)
SELECT (SELECT held FROM lock),
    count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'failed'),
    count(*) FILTER (WHERE state = 'cancelled')
FROM deleted;

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
