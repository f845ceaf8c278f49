-- The SQL of the operators' dashboard (package relayui) that relay's public reads do not
-- cover: every queue with its settings, the clients, a queue's blocked keys and its recent
-- throughput. It only reads, and every statement is served by an index, however many
-- finished jobs the table keeps (see the README's "Dashboard" for timings at 10 million).
-- {schema} is the quoted schema name.

-- name: windowStart
-- A bound below the ids of the jobs created in the last @look_back seconds: the id of the
-- newest job created before then (0 if none), found by halving the range of ids, one probe
-- of the primary key per step (about 25 for millions of jobs). Ids follow creation order
-- closely (an id is taken during the enqueueing transaction, created_at is that
-- transaction's start), which is all a chart of the last hour needs. It walked the primary
-- key back from the newest job instead, reading every job of the window: behind 3,100,000
-- jobs created in the last two hours (1,000 jobs a second for under an hour), 400–550 ms at
-- every refresh of an open dashboard, against 0.4 ms this way. Each step keeps lo, a job
-- created before then (or 0), and hi, one created since (or past the newest), and looks at
-- the first job from their midpoint: it moves lo or hi to it, or hi to the midpoint if
-- there is none before hi.
(SELECT lo FROM (
    WITH RECURSIVE halve(lo, hi) AS (
        SELECT 0::bigint, (SELECT coalesce(max(id), 0) + 1 FROM {schema}.jobs)
      UNION ALL
        SELECT CASE WHEN p.created_at < now() - @look_back::float8 * interval '1 second' THEN p.id ELSE h.lo END,
               CASE WHEN p.id IS NULL THEN (h.lo + h.hi) / 2
                    WHEN p.created_at < now() - @look_back::float8 * interval '1 second' THEN h.hi
                    ELSE p.id END
        FROM halve h
        LEFT JOIN LATERAL (
            SELECT id, created_at FROM {schema}.jobs
            WHERE id >= (h.lo + h.hi) / 2 AND id < h.hi
            ORDER BY id
            LIMIT 1
        ) p ON true
        WHERE h.hi - h.lo > 1
    )
    SELECT lo FROM halve ORDER BY hi - lo LIMIT 1
) found)

-- name: queues
-- Every queue (or only queue @queue, if not NULL) that has settings, unfinished jobs or
-- blocked keys, or that finished jobs in the last @window seconds (as "recent" below reads
-- them): its settings, running and blocked jobs, the run_at of its oldest due job, and
-- how many jobs it finished in that window. Queues that only hold older finished jobs are
-- added by the caller from relay.CountJobs. {windowStart} takes @look_back = @window.
--   settings: the queues table (a row per queue that has any);
--   running: jobs_lease_idx (running jobs only); blocked: jobs_blocked_idx (blocking jobs only);
--   due: jobs_claim_idx (pending jobs only), by a loose scan of its (queue, priority)
--     groups: the first entry of each is the group's earliest run_at, so one probe per
--     group finds every queue's oldest due job, however many jobs are due. A pass over the
--     due jobs, as before, took 110–230 ms behind 1,100,000 of them at every refresh;

--   recent: the primary key from the newest job back to {windowStart}, at most @max_recent rows.
WITH RECURSIVE settings AS (
    SELECT name AS queue, ordered, on_failure, global_limit, paused_at FROM {schema}.queues
    WHERE (@queue::text IS NULL OR name = @queue)
), running AS (
    SELECT queue, count(*) AS n FROM {schema}.jobs
    WHERE state = 'running' AND (@queue::text IS NULL OR queue = @queue) GROUP BY queue
), blocked AS (
    SELECT queue, count(*) AS n FROM {schema}.jobs
    WHERE order_key IS NOT NULL AND blocking AND (@queue::text IS NULL OR queue = @queue) GROUP BY queue
), heads(queue, rank, run_at) AS (
    (SELECT queue, (-priority), run_at FROM {schema}.jobs
     WHERE state = 'pending' AND (@queue::text IS NULL OR queue = @queue)
     ORDER BY queue, (-priority), run_at, id
     LIMIT 1)
    UNION ALL
    SELECT n.queue, n.rank, n.run_at
    FROM heads h
    CROSS JOIN LATERAL (
        SELECT queue, (-priority) AS rank, run_at FROM {schema}.jobs
        WHERE state = 'pending' AND (queue, (-priority)) > (h.queue, h.rank) AND (@queue::text IS NULL OR queue = @queue)
        ORDER BY queue, (-priority), run_at, id
        LIMIT 1
    ) n
), due AS (
    SELECT queue, min(run_at) AS oldest FROM heads WHERE run_at <= now() GROUP BY queue
), recent AS (
    SELECT queue, count(*) AS n
    FROM (SELECT queue, state, finished_at FROM {schema}.jobs
          WHERE id >= {windowStart}
          ORDER BY id DESC
          LIMIT @max_recent) j
    WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at >= now() - @window::float8 * interval '1 second'
      AND (@queue::text IS NULL OR queue = @queue)
    GROUP BY queue
), names AS (
    SELECT queue FROM settings UNION SELECT queue FROM running UNION SELECT queue FROM blocked
    UNION SELECT queue FROM due UNION SELECT queue FROM recent
)
SELECT n.queue, coalesce(s.ordered, false), coalesce(s.on_failure, 'block'),
       coalesce(s.global_limit, 0), s.paused_at, coalesce(r.n, 0), coalesce(b.n, 0),
       d.oldest, extract(epoch FROM now() - d.oldest)::float8, coalesce(f.n, 0)
FROM names n
LEFT JOIN settings s USING (queue)
LEFT JOIN running r USING (queue)
LEFT JOIN blocked b USING (queue)
LEFT JOIN due d USING (queue)
LEFT JOIN recent f USING (queue)
ORDER BY n.queue;

-- name: queueNames
-- The name of every queue that has settings or holds jobs: loose scans of the claim index
-- (pending jobs) and of jobs_finished_idx (one per finished state, {queuesInState}), one
-- index probe per queue, the running jobs of jobs_lease_idx and the held ones of
-- jobs_held_idx.
WITH RECURSIVE pending AS (
    (SELECT queue FROM {schema}.jobs WHERE state = 'pending' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM {schema}.jobs WHERE state = 'pending' AND queue > p.queue ORDER BY queue LIMIT 1)
    FROM pending p
    WHERE p.queue IS NOT NULL
)
SELECT name FROM {schema}.queues
UNION
SELECT queue FROM pending WHERE queue IS NOT NULL
UNION
SELECT queue FROM {schema}.jobs WHERE state = 'running'
UNION
SELECT queue FROM {schema}.jobs WHERE state = 'held'
UNION
SELECT f.queue
FROM unnest('{succeeded,failed,cancelled}'::text[]) s(state)
CROSS JOIN LATERAL (
    WITH RECURSIVE {queuesInState}
    SELECT queue FROM queues WHERE queue IS NOT NULL
) f
ORDER BY 1;

-- name: throughput
-- The jobs of queue @queue that finished in the last @window seconds, in buckets of @step
-- seconds counted back from now (bucket 0 is the newest): how many ended in each finished
-- state, and the wait from due to start (attempted_at - run_at of the final attempt) and
-- the run time, at the median and the 95th percentile. One newest-first range of
-- jobs_finished_idx per finished state, down to the jobs created one window before the
-- window ({windowStart} with @look_back = 2 × @window), at most @max_per_state jobs per
-- state.
WITH window_start AS MATERIALIZED (
    SELECT {windowStart} AS id
), j AS (
    -- One branch per state, each naming its state: the planner then weighs each range by
    -- that state's own share of the table. Named through a parameter (unnest), every state
    -- looked as common as the commonest, and a state with few jobs in the window (failed,
    -- cancelled) was looked for by walking the primary key through the whole window.
    SELECT * FROM (
        SELECT state, finished_at, attempted_at, run_at FROM {schema}.jobs
        WHERE state = 'succeeded' AND queue = @queue AND id >= (SELECT id FROM window_start)
        ORDER BY id DESC
        LIMIT @max_per_state
    ) succeeded
    UNION ALL
    SELECT * FROM (
        SELECT state, finished_at, attempted_at, run_at FROM {schema}.jobs
        WHERE state = 'failed' AND queue = @queue AND id >= (SELECT id FROM window_start)
        ORDER BY id DESC
        LIMIT @max_per_state
    ) failed
    UNION ALL
    SELECT * FROM (
        SELECT state, finished_at, attempted_at, run_at FROM {schema}.jobs
        WHERE state = 'cancelled' AND queue = @queue AND id >= (SELECT id FROM window_start)
        ORDER BY id DESC
        LIMIT @max_per_state
    ) cancelled
), recent AS (
    SELECT * FROM j WHERE finished_at >= now() - @window::float8 * interval '1 second'
)
SELECT floor(extract(epoch FROM now() - finished_at) / @step::float8)::int AS bucket,
       count(*) FILTER (WHERE state = 'succeeded'),
       count(*) FILTER (WHERE state = 'failed'),
       count(*) FILTER (WHERE state = 'cancelled'),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM attempted_at - run_at)),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM attempted_at - run_at)),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - attempted_at)),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - attempted_at))
FROM recent
GROUP BY 1
ORDER BY 1;

-- name: blockedKeys
-- The blocked keys of ordered queue @queue, oldest first, at most @limit: the failed job holding
-- each, its last error, and how many jobs wait behind it. jobs_blocked_idx serves the
-- first, jobs_order_idx the count.
SELECT b.order_key, b.id, b.kind, b.finished_at, coalesce(b.attempts -> -1 ->> 'error', ''),
       (SELECT count(*) FROM {schema}.jobs w
        WHERE w.queue = b.queue AND w.order_key = b.order_key AND w.state = 'pending'
          AND w.order_key IS NOT NULL)
FROM {schema}.jobs b
WHERE b.queue = @queue AND b.order_key IS NOT NULL AND b.blocking
ORDER BY b.id
LIMIT @limit;

-- name: clients
-- The clients, live ones first, then by latest heartbeat, at most @limit (the view
-- client_status; its running_jobs reads jobs_lease_idx).
SELECT id, started_at, heartbeat_at, extract(epoch FROM lease_ttl)::float8, queues, kinds, stopped_at, alive, running_jobs
FROM {schema}.client_status
ORDER BY alive DESC, heartbeat_at DESC
LIMIT @limit;
