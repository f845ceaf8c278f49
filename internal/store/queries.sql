-- The SQL of relay's hot paths, one statement per round trip. {schema} is replaced with
-- the quoted schema name when a Store is made; everything else is a bind parameter.
--
-- Every statement that makes a job pending sends a wakeup in the same transaction, built
-- by the wakeup_payload function of the schema (see notify.go for its format).

-- name: insert
WITH job AS (
    INSERT INTO {schema}.jobs (kind, queue, args, run_at, max_attempts)
    VALUES ($1, $2, $3, coalesce($4, now()), $5)
    RETURNING id, queue, run_at
), notified AS (
    SELECT pg_notify($6, {schema}.wakeup_payload(queue, run_at)) FROM job
)
SELECT id FROM job
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: insertMany
WITH job AS (
    INSERT INTO {schema}.jobs (kind, queue, args, run_at, max_attempts)
    SELECT kind, queue, args, coalesce(run_at, now()), max_attempts
    FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::integer[])
        AS new(kind, queue, args, run_at, max_attempts)
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
-- Claims up to $3 due jobs of queue $1 whose kind is in $2, oldest first, and marks them
-- running for client $4. The scan starts at the cursor ($5, $6): the index entries of
-- jobs already claimed stay in the index until VACUUM, and skipping thousands of them on
-- every claim would cost more than the claim itself. The last row (id NULL) carries the delay until the queue's next
-- scheduled job when fewer than $3 were due, so the dispatcher can arm its timer without
-- another round trip.
--
-- The claim commits asynchronously (synchronous_commit off for this statement's own
-- transaction), saving a WAL flush on the pickup path. That is safe: a claim lost in a
-- crash leaves the job pending, so it runs again (at least once), and any later outcome
-- commits synchronously, which flushes the claim's WAL before it.
WITH async AS (
    SELECT set_config('synchronous_commit', 'off', true)
), claimed AS (
    UPDATE {schema}.jobs j
    SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), attempted_by = $4
    FROM (
        SELECT id FROM {schema}.jobs
        WHERE queue = $1 AND state = 'pending' AND run_at <= now() AND kind = ANY($2::text[])
          AND (run_at, id) >= ($5::timestamptz, $6::bigint)
        ORDER BY run_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    WHERE j.id = due.id
    RETURNING j.id, j.kind, j.args, j.attempt, j.max_attempts, j.created_at, j.run_at, j.attempted_at
)
SELECT id, kind, args, attempt, max_attempts, created_at, run_at, attempted_at, NULL::bigint
FROM claimed
WHERE (SELECT count(*) FROM async) = 1
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    CASE WHEN (SELECT count(*) FROM claimed) < $3 THEN (
        SELECT ceil(extract(epoch FROM min(run_at) - clock_timestamp()) * 1000000)::bigint
        FROM {schema}.jobs
        WHERE queue = $1 AND state = 'pending' AND run_at > now() AND kind = ANY($2::text[])
    ) END;

-- name: writeOutcomes
-- Writes the outcomes of many attempts at once. Only jobs still running are touched, so a
-- late outcome never overwrites a job that something else has since changed. Retried jobs
-- wake their queue's dispatchers (on every client) at their new run_at.
WITH outcome AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[])
        AS o(id, state, ended_at, run_at, error)
), written AS (
    UPDATE {schema}.jobs j
    SET state = o.state,
        finished_at = CASE WHEN o.state = 'pending' THEN NULL ELSE o.ended_at END,
        run_at = coalesce(o.run_at, j.run_at),
        errors = CASE WHEN o.error IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(
            jsonb_build_object('attempt', j.attempt, 'at', o.ended_at, 'error', o.error)) END
    FROM outcome o
    WHERE j.id = o.id AND j.state = 'running'
    RETURNING j.id, j.queue, j.state, j.run_at
), notified AS (
    SELECT pg_notify($6, {schema}.wakeup_payload(queue, min(run_at)))
    FROM written
    WHERE state = 'pending'
    GROUP BY queue
)
SELECT count(*) FROM written
WHERE (SELECT count(*) FROM notified) >= 0;
