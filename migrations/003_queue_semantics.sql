-- Queue semantics: priorities, ordered keys, unique jobs, and per-queue settings
-- (ordering, blocking on failure, a cluster-wide limit, pause) shared by every client.

-- Higher runs first; equal priorities stay first in, first out.
ALTER TABLE jobs ADD COLUMN priority smallint NOT NULL DEFAULT 0
    CHECK (priority BETWEEN -32767 AND 32767);

-- The sequence a job of an ordered queue belongs to; NULL in queues that are not ordered.
-- Jobs of one key start one at a time, in id order.
ALTER TABLE jobs ADD COLUMN order_key text CHECK (octet_length(order_key) <= 256);

-- A failed job of an ordered queue that blocks on failure: it holds its key, and the jobs
-- behind it wait, until an operator retries or cancels it.
ALTER TABLE jobs ADD COLUMN blocking boolean NOT NULL DEFAULT false;

-- A unique job's key: no two jobs with one key are ever pending or running at once, and
-- an enqueue that names finished states also finds the jobs with its key in those.
ALTER TABLE jobs ADD COLUMN unique_key text CHECK (octet_length(unique_key) <= 256);

-- The claim index now orders by priority first. (-priority) lets one ascending row
-- comparison, (-priority, run_at, id) >= cursor, resume the scan where the last claim ended.
DROP INDEX jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON jobs (queue, (-priority), run_at, id) WHERE state = 'pending';

-- The heads of ordered keys: the unfinished jobs of each key, by state, oldest first.
CREATE INDEX jobs_order_idx ON jobs (queue, order_key, state, id)
    WHERE order_key IS NOT NULL AND (state IN ('pending', 'running') OR blocking);

-- At most one unfinished job per unique key, and every job with a key, by key.
CREATE UNIQUE INDEX jobs_unique_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('pending', 'running');
CREATE INDEX jobs_unique_key_idx ON jobs (unique_key) WHERE unique_key IS NOT NULL;

-- Settings of the queues that have any; a queue without a row is plain: not ordered, no
-- cluster-wide limit, not paused. Clients are told of changes by a 'q:<queue>' NOTIFY.
CREATE TABLE queues (
    name         text PRIMARY KEY CHECK (octet_length(name) BETWEEN 1 AND 128),
    ordered      boolean     NOT NULL DEFAULT false,
    -- what an ordered key does when its head fails for good: 'block' until an operator
    -- retries or cancels the failed job, or 'move on' to the next job
    on_failure   text        NOT NULL DEFAULT 'block' CHECK (on_failure IN ('block', 'move on')),
    global_limit integer     CHECK (global_limit >= 1),  -- running jobs across all clients
    paused_at    timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Wakeups now carry the most urgent priority too: 'w:<in>:<at>:<priority>:<queue>'.
DROP FUNCTION wakeup_payload(text, timestamptz);
CREATE FUNCTION wakeup_payload(queue text, run_at timestamptz, priority integer) RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT 'w:'
        || CASE WHEN run_at <= now() THEN 0
                ELSE ceil(extract(epoch FROM run_at - clock_timestamp()) * 1000000)::bigint END
        || ':' || floor(extract(epoch FROM run_at) * 1000000)::bigint
        || ':' || priority
        || ':' || queue
$$;

-- Raised by an enqueue that gives an order key for a queue that is not ordered: such a job
-- would run unordered, which is never what its producer meant.
-- VOLATILE, so that the planner never folds a call with constant arguments, and raises,
-- in a CASE branch the row does not take.
CREATE FUNCTION not_ordered(queue text) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'queue "%" is not ordered; declare it ordered (relay.SetQueue) before enqueueing with an order key', queue
        USING ERRCODE = 'RLY01', DETAIL = queue;
END
$$;

-- Clients may serve groups of queues by prefix ('tenant-*'): a job is handled if any
-- live client's queue list names its queue or a group containing it.
CREATE FUNCTION serves(patterns text[], queue text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (
        SELECT FROM unnest(patterns) p
        WHERE p = queue OR (right(p, 1) = '*' AND starts_with(queue, left(p, -1))))
$$;

CREATE OR REPLACE VIEW unhandled_jobs AS
SELECT j.queue, j.kind, count(*) AS jobs, min(j.created_at) AS oldest
FROM jobs j
WHERE j.state = 'pending'
  AND NOT EXISTS (
      SELECT FROM clients c
      WHERE c.stopped_at IS NULL AND c.heartbeat_at + c.lease_ttl > now()
        AND j.kind = ANY (c.kinds) AND serves(c.queues, j.queue))
GROUP BY j.queue, j.kind;
