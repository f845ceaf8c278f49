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
-- is due now or scheduled for later (retries are pending jobs with a later run_at).
CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text        NOT NULL CHECK (octet_length(kind) BETWEEN 1 AND 128),
    queue            text        NOT NULL CHECK (octet_length(queue) BETWEEN 1 AND 128),
    args             jsonb       NOT NULL,
    state            text        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt          integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),  -- attempts started so far
    max_attempts     integer     CHECK (max_attempts >= 1),  -- NULL: the kind's default, set at first claim
    created_at       timestamptz NOT NULL DEFAULT now(),
    run_at           timestamptz NOT NULL DEFAULT now(),  -- due time of the next (or current) attempt
    attempted_at     timestamptz,                         -- when the latest attempt was claimed
    attempted_by     text,                                -- the client that claimed it (holds the lease)
    finished_at      timestamptz,                         -- when it succeeded, failed or was cancelled
    attempts         jsonb       NOT NULL DEFAULT '[]',   -- every ended attempt but a success:
                                                          -- [{attempt, started_at, ended_at, client,
                                                          --   outcome, reason, error, stack}]
    lease_expires_at timestamptz,                         -- a running job's lease runs out then
    timeout_ms       integer     CHECK (timeout_ms >= 0)  -- NULL: the kind's or queue's; 0: none
);

-- The claim index: pending jobs in the order they are claimed. It stays small however
-- many finished jobs the table keeps.
CREATE INDEX jobs_claim_idx ON jobs (queue, run_at, id) WHERE state = 'pending';

-- The rescuer's index: running jobs by lease expiry.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state = 'running';

-- One row per client, upserted by its keep-alive tick (its heartbeat).
CREATE TABLE clients (
    id           text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    lease_ttl    interval    NOT NULL,
    queues       text[]      NOT NULL,
    kinds        text[]      NOT NULL,
    stopped_at   timestamptz
);

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
        AND j.kind = ANY (c.kinds) AND j.queue = ANY (c.queues))
GROUP BY j.queue, j.kind;

-- The NOTIFY payload that wakes a queue's dispatchers: 'w:<in>:<at>:<queue>', where <in> is
-- how many microseconds until the job is due (0: due now), measured on the database's
-- clock so that clock skew between hosts can make a dispatcher neither early nor spin, and
-- <at> is its run_at in microseconds since the Unix epoch, rounded down: dispatchers resume
-- their claim scans from there.
CREATE FUNCTION wakeup_payload(queue text, run_at timestamptz) RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT 'w:'
        || CASE WHEN run_at <= now() THEN 0
                ELSE ceil(extract(epoch FROM run_at - clock_timestamp()) * 1000000)::bigint END
        || ':' || floor(extract(epoch FROM run_at) * 1000000)::bigint
        || ':' || queue
$$;

-- One entry of a job's attempt history, as the outcome, rescue and cancel statements append
-- it to the attempts column.
CREATE FUNCTION attempt_entry(
    attempt integer, started_at timestamptz, ended_at timestamptz, client text,
    outcome text, reason text, error text, stack text
) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
        'attempt', attempt, 'started_at', started_at, 'ended_at', ended_at, 'client', client,
        'outcome', outcome, 'reason', reason, 'error', error, 'stack', stack)))
$$;
