-- relay's whole current schema, for reading. Apply it with `relay migrate --apply` or
-- relay.Migrate, never from this file: those also record the applied versions and take the
-- migration lock. A test checks that the migrations yield exactly this schema.
--
-- Everything lives in one schema, "relay" by default; independent relay instances can
-- share a database in schemas of their own.

CREATE SCHEMA IF NOT EXISTS relay;
SET search_path TO relay;

-- Which migrations have been applied (written by the migrator).
CREATE TABLE schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- One row per job. A job is 'pending' until a client claims it; run_at decides whether it
-- is due now or scheduled for later (retries are pending jobs with a later run_at). A job
-- enqueued as a reservation (relay.Reserved) is 'held' until its producer commits it
-- (then pending) or its deadline, held_until, passes (then cancelled, reason 'expired').
CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text        NOT NULL CHECK (octet_length(kind) BETWEEN 1 AND 128),
    queue            text        NOT NULL CHECK (octet_length(queue) BETWEEN 1 AND 128),
    args             jsonb       NOT NULL,
    state            text        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'held')),
    attempt          integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),  -- attempts started so far
    max_attempts     integer     CHECK (max_attempts >= 1),  -- NULL: the kind's default, set at first claim
    created_at       timestamptz NOT NULL DEFAULT now(),
    run_at           timestamptz NOT NULL DEFAULT now(),  -- due time of the next (or current) attempt
    attempted_at     timestamptz,                         -- when the latest attempt was claimed
    attempted_by     text,                                -- the client that claimed it (holds the lease)
    finished_at      timestamptz,                         -- when it succeeded, failed or was cancelled
    attempts         jsonb       NOT NULL DEFAULT '[]',   -- every ended attempt but a success:
                                                          -- [{attempt, started_at, ended_at, client,
                                                          --   outcome, reason, error, stack,
                                                          --   data, data_error}]
    lease_expires_at timestamptz,                         -- a running job's lease runs out then
    timeout_ms       integer     CHECK (timeout_ms >= 0), -- NULL: the kind's or queue's; 0: none
    priority         smallint    NOT NULL DEFAULT 0       -- higher first; equal: first in, first out
                     CHECK (priority BETWEEN -32767 AND 32767),
    order_key        text        CHECK (octet_length(order_key) <= 256),  -- its sequence in an ordered
                                                          -- queue ('' when none given); else NULL
    blocking         boolean     NOT NULL DEFAULT false,  -- failed, and holding its ordered key
    unique_key       text        CHECK (octet_length(unique_key) <= 256), -- relay.Unique
    checkpoint       jsonb,                               -- progress saved by relay.Checkpoint
    output           jsonb,                               -- what a succeeded handler returned
    payload          bytea,                               -- raw []byte args (args is then null)
    schedule         text,                                -- the periodic schedule that enqueued it
    schedule_slot    timestamptz,                         -- and the slot it was enqueued for
    metadata         jsonb,                               -- a JSON object of strings set at enqueue
                                                          -- (relay.Metadata, enqueue middleware)
    held_until       timestamptz,                         -- a reservation's deadline; kept once it ends
    committed_at     timestamptz,                         -- when a reservation was committed
    backoff          jsonb                                -- the job's own retry policy (relay.Backoff):
                                                          -- {initial_ns, multiplier, max_ns, jitter}
);

-- The claim index: pending jobs in the order they are claimed, most urgent first. It stays
-- small however many finished jobs the table keeps. (-priority) lets one ascending row
-- comparison, (-priority, run_at, id) >= cursor, resume a scan where the last claim ended.
CREATE INDEX jobs_claim_idx ON jobs (queue, (-priority), run_at, id) WHERE state = 'pending';

-- The rescuer's index: running jobs by lease expiry. A limited queue's claim counts its
-- running jobs through it too: running jobs are few, and a key of (queue, …) would make
-- every claim compare queue names to insert its entries.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state = 'running';

-- The heads of ordered keys: the unfinished jobs of each key (held ones included: a held
-- job keeps its place), by state, oldest first.
CREATE INDEX jobs_order_idx ON jobs (queue, order_key, state, id)
    WHERE order_key IS NOT NULL AND (state IN ('pending', 'running', 'held') OR blocking);

-- At most one unfinished (or held) job per unique key; an enqueue that names finished
-- states also looks up the jobs with its key in those (jobs_unique_key_idx).
CREATE UNIQUE INDEX jobs_unique_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('pending', 'running', 'held');
CREATE INDEX jobs_unique_key_idx ON jobs (unique_key) WHERE unique_key IS NOT NULL;

-- The expirers' index: held jobs by deadline.
CREATE INDEX jobs_held_idx ON jobs (held_until) WHERE state = 'held';

-- Finished jobs, for listing and counting them (relay.ListJobs, relay.CountJobs): one
-- range per (state, queue), newest id last, with kind and created_at on each entry for the
-- filters. Only finished jobs: a job enters it once, when its final outcome is written.
CREATE INDEX jobs_finished_idx ON jobs (state, queue, id) INCLUDE (kind, created_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');

-- Finished jobs by when they finished, for pruning (Config.Retention): one range per
-- (state, queue), oldest first, whose head is what expires next.
CREATE INDEX jobs_expiry_idx ON jobs (state, queue, finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');

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

-- One row per client, upserted by its keep-alive tick (its heartbeat).
CREATE TABLE clients (
    id           text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    lease_ttl    interval    NOT NULL,
    queues       text[]      NOT NULL,
    kinds        text[]      NOT NULL,
    stopped_at   timestamptz,
    schedules    text[]      NOT NULL DEFAULT '{}'  -- the periodic schedules it has
);

-- Periodic schedules (relay.Schedule). Every client that has one may enqueue its slots;
-- the row, locked while one does, makes each slot enqueued once: next_slot only moves
-- forward, and a slot before it is never enqueued again, even once its job is deleted.
-- A schedule that no live client has (clients.schedules) is orphaned.
CREATE TABLE periodic (
    name       text PRIMARY KEY CHECK (octet_length(name) BETWEEN 1 AND 128),
    spec       text        NOT NULL,  -- 'cron <spec> <time zone>' or 'every <interval>'
    kind       text        NOT NULL,
    queue      text        NOT NULL,
    catch_up   text        NOT NULL,  -- what a client does with missed slots
    next_slot  timestamptz,           -- the next slot to enqueue; the ones before are done
    last_slot  timestamptz,           -- the latest slot enqueued
    last_job   bigint,                -- the job of last_slot (it may have been deleted since)
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()  -- when a client last registered it
);

-- Whether a client's queue list (names, and groups by prefix like 'tenant-*') covers queue.
CREATE FUNCTION serves(patterns text[], queue text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (
        SELECT FROM unnest(patterns) p
        WHERE p = queue OR (right(p, 1) = '*' AND starts_with(queue, left(p, -1))))
$$;

-- Clients and whether they are alive: a client is alive while its last heartbeat is
-- younger than its lease TTL, since past that its jobs are up for rescue.
CREATE VIEW client_status AS
SELECT id, started_at, heartbeat_at, lease_ttl, queues, kinds, stopped_at,
       stopped_at IS NULL AND heartbeat_at + lease_ttl > now() AS alive,
       (SELECT count(*) FROM jobs j WHERE j.state = 'running' AND j.attempted_by = c.id) AS running_jobs
FROM clients c;

-- Pending jobs that no live client can run: their kind has no handler on any client that
-- serves their queue. They wait, untouched, until such a client starts.
CREATE VIEW unhandled_jobs AS
SELECT j.queue, j.kind, count(*) AS jobs, min(j.created_at) AS oldest
FROM jobs j
WHERE j.state = 'pending'
  AND NOT EXISTS (
      SELECT FROM clients c
      WHERE c.stopped_at IS NULL AND c.heartbeat_at + c.lease_ttl > now()
        AND j.kind = ANY (c.kinds) AND serves(c.queues, j.queue))
GROUP BY j.queue, j.kind;

-- The NOTIFY payload that wakes a queue's dispatchers: 'w:<in>:<at>:<priority>:<queue>',
-- where <in> is how many microseconds until the job is due (0: due now), measured on the
-- database's clock so that clock skew between hosts can make a dispatcher neither early nor
-- spin, <at> is its run_at in microseconds since the Unix epoch, rounded down, and
-- <priority> its priority: dispatchers resume their claim scans from (priority, at).
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

-- One entry of a job's attempt history, as the outcome, rescue, cancel and expiry
-- statements append it to the attempts column: with the structured data of the handler's
-- error (relay.ErrorData), or why that data could not be recorded (data_error).
CREATE FUNCTION attempt_entry(
    attempt integer, started_at timestamptz, ended_at timestamptz, client text,
    outcome text, reason text, error text, stack text,
    data jsonb DEFAULT NULL, data_error text DEFAULT NULL
) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    -- data is added after the nulls are stripped: its own null values are the handler's
    SELECT jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
        'attempt', attempt, 'started_at', started_at, 'ended_at', ended_at, 'client', client,
        'outcome', outcome, 'reason', reason, 'error', error, 'stack', stack,
        'data_error', data_error))
        || CASE WHEN data IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('data', data) END)
$$;

-- Wakeups only when they can wake something (see migrations/006_wakeups.sql for the
-- protocol that loses none).
-- The dispatchers of every client, and whether each waits for a wakeup. A row is written
-- when a dispatcher starts (waiting) and when it turns busy or goes back to waiting; a
-- queue of a live client with no row counts as waiting. UNLOGGED: no WAL for these
-- frequent small writes, and a crash empties the table, which makes every producer notify:
-- the safe side.
CREATE UNLOGGED TABLE dispatchers (
    queue     text    NOT NULL,
    client_id text    NOT NULL,
    waiting   boolean NOT NULL DEFAULT true,
    PRIMARY KEY (queue, client_id)
);

-- The advisory lock key of queue's wakeups: (hash of the schema's channel, one of 1,024
-- buckets of queue names). Buckets bound the locks one transaction takes however many
-- queues it enqueues into; two queues that share one only make a dispatcher wait for a
-- producer of the other.
CREATE FUNCTION wake_lock(channel text, queue text) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[hashtext(channel), hashtext(queue) & 1023]
$$;

-- Sends the wakeup of a job of queue (its run_at and priority, as wakeup_payload takes
-- them) on channel if it can wake something, and reports whether it did. A client counts
-- as live for it until twice its lease TTL has passed since its last heartbeat: longer
-- than other clients wait to rescue its jobs, so that a client cut off for a while (whose
-- jobs were rescued, perhaps by itself) is still woken, while one that died stops costing
-- notifications soon after. kinds are the
-- kinds of the jobs it announces, or NULL for any (a job that ended and freed an ordered
-- key or a limited slot, which any job of the queue may take). Its search_path is the
-- schema it was created in, whatever the caller's.
CREATE FUNCTION wake(channel text, queue text, run_at timestamptz, priority integer, kinds text[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    lock integer[] := wake_lock(channel, queue);
BEGIN
    IF current_setting('transaction_isolation') = 'read committed' THEN
        PERFORM pg_advisory_xact_lock_shared(lock[1], lock[2]);
        IF NOT EXISTS (
            SELECT FROM clients c
            WHERE c.stopped_at IS NULL AND c.heartbeat_at + 2 * c.lease_ttl > clock_timestamp()
              AND (wake.kinds IS NULL OR c.kinds && wake.kinds)
              -- serves(c.queues, queue), written out: a function with a subquery is not
              -- inlined, and planning it on every call cost most of an enqueue's time
              AND (wake.queue = ANY (c.queues) OR EXISTS (
                  SELECT FROM unnest(c.queues) p
                  WHERE right(p, 1) = '*' AND starts_with(wake.queue, left(p, -1))))
              AND NOT EXISTS (
                  SELECT FROM dispatchers d
                  WHERE d.queue = wake.queue AND d.client_id = c.id AND NOT d.waiting)
        ) THEN
            RETURN false;
        END IF;
    END IF;
    PERFORM pg_notify(channel, wakeup_payload(queue, run_at, priority));
    RETURN true;
END
$$;
