-- Two-phase reservations, typed error data and per-job retry policies.
--
-- A reservation (relay.Reserved) is a job inserted 'held': it exists and keeps its place —
-- its ordered key's later jobs wait behind it, its unique key is taken — but no claim takes
-- it (the claim index holds pending jobs only) until its producer commits it
-- (relay.CommitJobs, which makes it pending), or its deadline passes and a client's expirer
-- cancels it with reason 'expired'.
--
-- Run in the migration's transaction, the new check and the two rebuilt partial indexes
-- each read the whole table once (about a second per million jobs, writes to jobs waiting
-- meanwhile). Clients older than this migration ignore held jobs: in an ordered queue they
-- would run the jobs behind a held one. Upgrade every client before reserving.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'held'));

-- The deadline of a reservation: set when a job is inserted held, moved by
-- relay.ExtendReservation, and kept afterwards, so that a job that was reserved stays
-- recognisable. NULL for every other job.
ALTER TABLE jobs ADD COLUMN held_until timestamptz;
-- When a reservation was committed; NULL while held, and for a reservation that never was.
ALTER TABLE jobs ADD COLUMN committed_at timestamptz;

-- The job's own retry policy (relay.Backoff as an enqueue option), used instead of its
-- kind's: {"initial_ns", "multiplier", "max_ns", "jitter"}. NULL for most jobs.
ALTER TABLE jobs ADD COLUMN backoff jsonb;

-- A held job keeps its ordered key and its unique key: both partial indexes of unfinished
-- jobs now hold held jobs too.
DROP INDEX jobs_order_idx;
CREATE INDEX jobs_order_idx ON jobs (queue, order_key, state, id)
    WHERE order_key IS NOT NULL AND (state IN ('pending', 'running', 'held') OR blocking);
DROP INDEX jobs_unique_idx;
CREATE UNIQUE INDEX jobs_unique_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('pending', 'running', 'held');

-- The expirers' index: held jobs by deadline. Small: it holds held jobs only.
CREATE INDEX jobs_held_idx ON jobs (held_until) WHERE state = 'held';

-- An attempt's history entry may carry the structured data of the handler's error
-- (relay.ErrorData), or say why that data could not be recorded (data_error). The two new
-- arguments default to NULL, so that calls written for the old function still resolve.
DROP FUNCTION attempt_entry(integer, timestamptz, timestamptz, text, text, text, text, text);
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
