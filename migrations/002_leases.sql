-- Leases, heartbeats and attempt history.
--
-- A running job holds a lease: attempted_by names the client that claimed it and
-- lease_expires_at says until when the claim holds unless renewed. Each client renews
-- the leases of all its running jobs in one statement per tick, and that tick is also
-- its heartbeat in the clients table. A running job whose lease has expired belongs to
-- a dead or partitioned client and is rescued by any other.

ALTER TABLE jobs ADD COLUMN lease_expires_at timestamptz;

-- Per-job handler timeout in milliseconds; NULL defers to the kind's or the queue's
-- setting, 0 means none.
ALTER TABLE jobs ADD COLUMN timeout_ms integer CHECK (timeout_ms >= 0);

-- NULL until the job is first claimed: then the handler's default fills it in, so that a
-- producer need not know each kind's retry policy.
ALTER TABLE jobs ALTER COLUMN max_attempts DROP NOT NULL;

-- Every ended attempt that did not succeed, oldest first, as
-- {attempt, started_at, ended_at, client, outcome, reason, error, stack}; the succeeded
-- attempt is the row's own attempted_at/attempted_by/finished_at.
ALTER TABLE jobs RENAME COLUMN errors TO attempts;

-- The rescuer's index: running jobs by lease expiry. Small: it holds running jobs only.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state = 'running';

-- One row per client, upserted by its keep-alive tick.
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
