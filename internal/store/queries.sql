-- The SQL of relay's hot paths, one statement per round trip. {schema} is replaced with
-- the quoted schema name when a Store is made; everything else is a bind parameter.
--
-- Every statement that makes a job pending sends a wakeup in the same transaction, built
-- by the wakeup_payload function of the schema (see notify.go for its format).

-- name: insert
WITH job AS (
    INSERT INTO {schema}.jobs (kind, queue, args, run_at, max_attempts, timeout_ms)
    VALUES ($1, $2, $3, coalesce($4, now()), $5, $7)
    RETURNING id, queue, run_at
), notified AS (
    SELECT pg_notify($6, {schema}.wakeup_payload(queue, run_at)) FROM job
)
SELECT id FROM job
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: insertMany
WITH job AS (
    INSERT INTO {schema}.jobs (kind, queue, args, run_at, max_attempts, timeout_ms)
    SELECT kind, queue, args, coalesce(run_at, now()), max_attempts, timeout_ms
    FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::integer[], $7::integer[])
        AS new(kind, queue, args, run_at, max_attempts, timeout_ms)
    RETURNING id, queue, run_at
), notified AS (
    SELECT pg_notify($6, {schema}.wakeup_payload(queue, min(run_at)))
    FROM job
    GROUP BY queue
)
SELECT id FROM job
WHERE (SELECT count(*) FROM notified) >= 0
ORDER BY id;

-- name: claim
-- Claims up to $3 due jobs of queue $1 whose kind is in $2, oldest first, and leases them
-- to client $4 for $7. A job enqueued without max_attempts takes its kind's default from
-- $8 (aligned with $2). The scan starts at the cursor ($5, $6): the index entries of jobs
-- already claimed stay in the index until VACUUM, and skipping thousands of them on every
-- claim would cost more than the claim itself. The last row (id NULL) carries the delay
-- until the queue's next scheduled job when fewer than $3 were due, so the dispatcher can
-- arm its timer without another round trip.
--
-- The claim commits asynchronously (synchronous_commit off for this statement's own
-- transaction), saving a WAL flush on the pickup path. That is safe: a claim lost in a
-- crash leaves the job pending, so it runs again (at least once), and any later outcome
-- commits synchronously, which flushes the claim's WAL before it.
WITH async AS (
    SELECT set_config('synchronous_commit', 'off', true)
), claimed AS (
    UPDATE {schema}.jobs j
    SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), attempted_by = $4,
        lease_expires_at = now() + $7::interval,
        max_attempts = coalesce(j.max_attempts,
            (SELECT k.max_attempts FROM unnest($2::text[], $8::integer[]) AS k(kind, max_attempts) WHERE k.kind = j.kind))
    FROM (
        SELECT id FROM {schema}.jobs
        WHERE queue = $1 AND state = 'pending' AND run_at <= now() AND kind = ANY($2::text[])
          AND (run_at, id) >= ($5::timestamptz, $6::bigint)
        ORDER BY run_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    WHERE j.id = due.id
    RETURNING j.id, j.kind, j.args, j.attempt, j.max_attempts, j.created_at, j.run_at, j.attempted_at, j.timeout_ms
)
SELECT id, kind, args, attempt, max_attempts, created_at, run_at, attempted_at, timeout_ms, NULL::bigint
FROM claimed
WHERE (SELECT count(*) FROM async) = 1
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    CASE WHEN (SELECT count(*) FROM claimed) < $3 THEN (
        SELECT ceil(extract(epoch FROM min(run_at) - clock_timestamp()) * 1000000)::bigint
        FROM {schema}.jobs
        WHERE queue = $1 AND state = 'pending' AND run_at > now() AND kind = ANY($2::text[])
    ) END;

-- name: writeOutcomes
-- Writes the outcomes of many attempts of client $9 at once. A job is touched only while
-- that same attempt still holds it (running, claimed by $9, same attempt number), so the
-- late outcome of a handler whose job was rescued, cancelled or re-claimed never overwrites
-- whatever owns the job now. Every attempt but a success is appended to the job's history.
-- Retried jobs wake their queue's dispatchers (on every client) at their new run_at.
WITH outcome AS (
    SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::timestamptz[],
                         $5::timestamptz[], $6::text[], $7::text[], $8::text[])
        AS o(id, attempt, state, ended_at, run_at, reason, error, stack)
), written AS (
    UPDATE {schema}.jobs j
    SET state = o.state,
        finished_at = CASE WHEN o.state = 'pending' THEN NULL ELSE o.ended_at END,
        run_at = coalesce(o.run_at, j.run_at),
        lease_expires_at = NULL,
        -- a snooze gives its attempt back
        attempt = CASE WHEN o.reason = 'snoozed' THEN j.attempt - 1 ELSE j.attempt END,
        attempts = CASE WHEN o.state = 'succeeded' THEN j.attempts ELSE j.attempts || {schema}.attempt_entry(
            j.attempt, j.attempted_at, o.ended_at, j.attempted_by, o.state, o.reason, o.error, o.stack) END
    FROM outcome o
    WHERE j.id = o.id AND j.state = 'running' AND j.attempted_by = $9 AND j.attempt = o.attempt
    RETURNING j.id, j.queue, j.state, j.run_at
), notified AS (
    SELECT pg_notify($10, {schema}.wakeup_payload(queue, min(run_at)))
    FROM written
    WHERE state = 'pending'
    GROUP BY queue
)
SELECT count(*) FROM written
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: renewLeases
-- The keep-alive tick of client $1: records its heartbeat and extends by $3 the leases of
-- the attempts it still holds ($2 ids, $4 attempt numbers). It returns the ids still its
-- own; a held job missing from them was rescued, cancelled or deleted. Rows locked by a
-- concurrent write (this client's own outcome batch, usually) are skipped rather than
-- waited for: they are about to stop running, and the next tick renews them if not.
-- Like a claim it commits asynchronously: a renewal lost in a crash only shortens a lease.
WITH async AS (
    SELECT set_config('synchronous_commit', 'off', true)
), heartbeat AS (
    INSERT INTO {schema}.clients AS c (id, lease_ttl, queues, kinds)
    VALUES ($1, $3::interval, $5::text[], $6::text[])
    ON CONFLICT (id) DO UPDATE SET
        heartbeat_at = now(), stopped_at = NULL,
        lease_ttl = EXCLUDED.lease_ttl, queues = EXCLUDED.queues, kinds = EXCLUDED.kinds,
        -- a client restarted under the same id starts a new life
        started_at = CASE WHEN c.stopped_at IS NULL THEN c.started_at ELSE now() END
    RETURNING 1
), held AS (
    SELECT j.id
    FROM {schema}.jobs j
    JOIN unnest($2::bigint[], $4::integer[]) AS h(id, attempt) ON j.id = h.id
    WHERE j.attempt = h.attempt AND j.state = 'running' AND j.attempted_by = $1
), renewed AS (
    UPDATE {schema}.jobs j
    SET lease_expires_at = now() + $3::interval
    FROM (
        SELECT id FROM {schema}.jobs
        WHERE id IN (SELECT id FROM held) AND state = 'running' AND attempted_by = $1
        FOR UPDATE SKIP LOCKED
    ) free
    WHERE j.id = free.id
    RETURNING j.id
)
SELECT id FROM held
WHERE (SELECT count(*) FROM async) = 1 AND (SELECT count(*) FROM renewed) >= 0;

-- name: stopClient
UPDATE {schema}.clients SET stopped_at = now(), heartbeat_at = now() WHERE id = $1;

-- name: rescue
-- Rescues up to $1 running jobs whose lease has expired: their client died or lost the
-- database. Each is retried at once, or failed when it has no attempts left, with reason
-- 'lost lease'. SKIP LOCKED lets every client run this at once: each expired job is
-- rescued by exactly one. The last row (id NULL) says when the next lease expires, so the
-- rescuer can sleep until then.
WITH lost AS (
    SELECT id FROM {schema}.jobs
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE {schema}.jobs j
    SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'failed' ELSE 'pending' END,
        run_at = CASE WHEN j.attempt >= j.max_attempts THEN j.run_at ELSE now() END,
        finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
        lease_expires_at = NULL,
        attempts = j.attempts || {schema}.attempt_entry(
            j.attempt, j.attempted_at, now(), j.attempted_by,
            CASE WHEN j.attempt >= j.max_attempts THEN 'failed' ELSE 'pending' END, 'lost lease',
            format('the lease of client %s expired at %s', j.attempted_by, j.lease_expires_at), NULL)
    FROM lost
    WHERE j.id = lost.id
    RETURNING j.id, j.queue, j.state, j.run_at
), notified AS (
    SELECT pg_notify($2, {schema}.wakeup_payload(queue, min(run_at)))
    FROM rescued
    WHERE state = 'pending'
    GROUP BY queue
)
SELECT id, NULL::bigint FROM rescued
WHERE (SELECT count(*) FROM notified) >= 0
UNION ALL
SELECT NULL, (
    SELECT ceil(extract(epoch FROM min(lease_expires_at) - clock_timestamp()) * 1000000)::bigint
    FROM {schema}.jobs
    WHERE state = 'running' AND lease_expires_at >= now()
);

-- name: cancel
-- Cancels job $1 if it has not finished, and tells the client running it (if any) to
-- cancel its handler. Returns the job's state before, or no row if there is no such job.
WITH target AS (
    SELECT id, state FROM {schema}.jobs WHERE id = $1 FOR UPDATE
), cancelled AS (
    UPDATE {schema}.jobs j
    SET state = 'cancelled', finished_at = now(), lease_expires_at = NULL,
        attempts = CASE WHEN t.state = 'running' THEN j.attempts || {schema}.attempt_entry(
            j.attempt, j.attempted_at, now(), j.attempted_by, 'cancelled', 'cancelled', NULL, NULL) ELSE j.attempts END
    FROM target t
    WHERE j.id = t.id AND t.state IN ('pending', 'running')
    RETURNING j.id, t.state AS was
), notified AS (
    SELECT pg_notify($2, 'c:' || id) FROM cancelled WHERE was = 'running'
)
SELECT state FROM target
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: retry
-- Puts failed or cancelled job $1 back to run now. A job that had used all its attempts
-- gets one more. Returns the job's state before, or no row if there is no such job.
WITH target AS (
    SELECT id, state FROM {schema}.jobs WHERE id = $1 FOR UPDATE
), retried AS (
    UPDATE {schema}.jobs j
    SET state = 'pending', run_at = now(), finished_at = NULL,
        -- NULL (never claimed) keeps deferring to the kind's default
        max_attempts = CASE WHEN j.max_attempts IS NULL THEN NULL ELSE greatest(j.max_attempts, j.attempt + 1) END
    FROM target t
    WHERE j.id = t.id AND t.state IN ('failed', 'cancelled')
    RETURNING j.queue, j.run_at
), notified AS (
    SELECT pg_notify($2, {schema}.wakeup_payload(queue, run_at)) FROM retried
)
SELECT state FROM target
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: getJob
SELECT id, kind, queue, args, state, attempt, max_attempts, created_at, run_at,
       attempted_at, attempted_by, finished_at, lease_expires_at, timeout_ms, attempts,
       run_at > now() AS scheduled
FROM {schema}.jobs
WHERE id = $1;
