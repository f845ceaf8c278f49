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
-- The table has no CHECK constraints (migration 022): PostgreSQL parses and plans them
-- again at every statement that writes it, and relay's API and SQL functions check every
-- value, with the limits noted by each column, before writing it. Write jobs through them.
CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text        NOT NULL,                -- 1–128 bytes
    queue            text        NOT NULL,                -- 1–128 bytes
    args             jsonb       NOT NULL,
    state            text        NOT NULL DEFAULT 'pending', -- pending, running, succeeded,
                                                          -- failed, cancelled or held
    attempt          integer     NOT NULL DEFAULT 0,      -- attempts started so far
    max_attempts     integer,                             -- ≥ 1; NULL: the kind's default, set at first claim
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
    timeout_ms       integer,                             -- NULL: the kind's or queue's; 0: none
    priority         smallint    NOT NULL DEFAULT 0,      -- −32767…32767, higher first; equal: first
                                                          -- in, first out
    order_key        text,                                -- ≤ 256 bytes: its sequence in an ordered
                                                          -- queue ('' when none given); else NULL
    blocking         boolean     NOT NULL DEFAULT false,  -- failed, and holding its ordered key
    unique_key       text,                                -- relay.Unique (≤ 256 bytes)
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

-- The jobs that block their ordered key, by queue and key: few, whatever the backlog (the
-- dashboard, GetQueue and the blocked keys' listing read them).
CREATE INDEX jobs_blocked_idx ON jobs (queue, order_key, id) WHERE blocking;

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
    schedules    text[]      NOT NULL DEFAULT '{}', -- the periodic schedules it has
    hands_off    boolean     NOT NULL DEFAULT false, -- it runs hand-offs (see hand_off)
    kind_attempts integer[]  -- the default max attempts of each of its kinds, aligned with kinds
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

-- Raised by an enqueue that gives an order key for a queue that is not ordered (or has no
-- settings at all): such a job would run unordered, which is never what its producer meant.
-- VOLATILE, so that the planner never folds a call with constant arguments, and raises,
-- in a CASE branch the row does not take.
CREATE FUNCTION not_ordered(queue text) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'queue "%" is not ordered; declare it ordered (relay.SetQueue) before enqueueing with an order key', queue
        USING ERRCODE = 'RLY01', DETAIL = queue,
              HINT = format('Declare it ordered with `relay queue set %s --ordered` (or relay.SetQueue in Go), or enqueue without an order key.', queue);
END
$$;

-- Which queues are ordered, as a function the planner folds into relay.Enqueue's insert
-- (see migrations/017_ordered_queues.sql): its body lists them as a constant, rewritten by
-- a trigger on queues whenever they change; above 100, it looks the queue up instead.
CREATE FUNCTION queue_ordered(queue text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$SELECT queue = ANY ('{}'::text[])$$;

-- Rewrites queue_ordered from queues, if the ordered queues are not what it lists. Runs as
-- its owner, who owns queue_ordered: a role that may change queues but does not own the
-- schema's functions may still set a queue ordered.
CREATE FUNCTION write_queue_ordered() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    schema  text := current_schema();
    ordered text[];
    written text; -- queue_ordered's body as it is
    body    text;
    lang    text;
BEGIN
    -- Read and compare; a statement that leaves the ordered queues as they were (a pause, a
    -- limit) stops there, and waits for no one. To write, read again under a lock: of two
    -- transactions that replace one function at once the second fails, and waiting lets it
    -- read what the first committed. One statement reads both, with one snapshot. That
    -- snapshot must be new: at REPEATABLE READ or SERIALIZABLE it was taken when the
    -- transaction began, and would drop a change committed since, so a change of the
    -- ordered queues is refused there.
    FOR locked IN 0 .. 1 LOOP
        -- Qualified, so that a temporary table of the caller's cannot stand in for queues.
        EXECUTE format('SELECT array_agg(name ORDER BY name) FILTER (WHERE ordered),
                               (SELECT p.prosrc FROM pg_catalog.pg_proc p WHERE p.oid = %L::regprocedure)
                        FROM %I.queues', format('%I.queue_ordered(text)', schema), schema)
        INTO ordered, written;
        IF cardinality(ordered) > 100 THEN
            body := format('BEGIN RETURN coalesce((SELECT q.ordered FROM %I.queues q WHERE q.name = queue), false); END', schema);
            lang := 'plpgsql STABLE';
        ELSE
            body := format('SELECT queue = ANY (%L::text[])', coalesce(ordered, '{}'));
            lang := 'sql IMMUTABLE';
        END IF;
        IF body = written THEN
            RETURN;
        ELSIF current_setting('transaction_isolation') <> 'read committed' THEN
            RAISE EXCEPTION 'relay: the ordered queues can change only in a READ COMMITTED transaction, not %',
                upper(current_setting('transaction_isolation'))
                USING ERRCODE = '0A000',
                      HINT = 'Set the queue in a transaction of its own (relay.SetQueue with the pool), or at READ COMMITTED.';
        ELSIF locked = 0 THEN
            PERFORM pg_advisory_xact_lock(hashtext(schema || ':queue_ordered'), 0);
        ELSE
            EXECUTE format('CREATE OR REPLACE FUNCTION %I.queue_ordered(queue text) RETURNS boolean LANGUAGE %s PARALLEL SAFE AS %L',
                           schema, lang, body);
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION queues_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM write_queue_ordered();
    RETURN NULL;
END
$$;

CREATE TRIGGER queue_ordered AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON queues
FOR EACH STATEMENT EXECUTE FUNCTION queues_changed();

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

-- Appends entry (an attempt_entry) to a job's attempt history, which keeps its last 100
-- entries (see migrations/018_attempt_history.sql).
CREATE FUNCTION append_attempt(history jsonb, entry jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_array_length(history) < 100 THEN history
                ELSE jsonb_path_query_array(history, '$[last - 98 to last]') END || entry
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

-- The advisory lock key of queue's wakeups before migration 012: (hash of the schema's
-- channel, one of 1,024 buckets of queue names). Producers no longer take it; it stays for
-- clients of earlier versions, which wait for its holders.
CREATE FUNCTION wake_lock(channel text, queue text) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[hashtext(channel), hashtext(queue) & 1023]
$$;

-- Wait locks (see migrations/012_wait_locks.sql): while any of a client's dispatchers of
-- a queue may wait for a wakeup, the client holds the queue's wait lock (shared, session
-- level) on a connection of its own; a client that serves groups holds that of '*'. A
-- producer that finds both free skips the tables. A dispatcher that starts to wait waits
-- for the transactions that write to the jobs table, among which are the producers that
-- may have looked before.
-- The wait lock of queue ('*': of every queue, held by clients that serve groups):
-- (hash of the schema's channel and ':waiting', hash of the queue's name). wake_needless
-- writes the same keys out, as it must not call functions of the schema.
CREATE FUNCTION wait_lock(channel text, queue text) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[hashtext(channel || ':waiting'), hashtext(queue)]
$$;

-- Whether a job of queue can wake nothing: no client holds the wait lock of queue, nor
-- that of '*'. The caller has written the job (and so holds the jobs table's
-- RowExclusiveLock, which a dispatcher that starts to wait waits for). At REPEATABLE READ
-- or SERIALIZABLE it is false: wake() then always notifies. It is plain SQL over built-in
-- functions, so the planner inlines it into the statement that calls it, whatever the
-- caller's search_path.
CREATE FUNCTION wake_needless(channel text, queue text) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT CASE
        WHEN current_setting('transaction_isolation') <> 'read committed' THEN false
        WHEN NOT pg_try_advisory_lock(hashtext(channel || ':waiting'), hashtext(queue)) THEN false
        WHEN NOT pg_advisory_unlock(hashtext(channel || ':waiting'), hashtext(queue)) THEN false
        WHEN NOT pg_try_advisory_lock(hashtext(channel || ':waiting'), hashtext('*')) THEN false
        ELSE pg_advisory_unlock(hashtext(channel || ':waiting'), hashtext('*'))
    END
$$;

-- Addressed wakeups (see migrations/015_addressed_wakeups.sql): a job wakes as many
-- waiting clients as there are jobs, on their own channels, and one more as their backup;
-- every waiting client, on the schema's channel, when fewer are known to be alive.
-- The channel of client id's addressed wakeups: short enough for a channel name, whatever
-- the length of the schema's channel and of the id.
CREATE FUNCTION client_channel(channel text, id text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'relay-client:' || md5(channel || ':' || id)
$$;

-- The key of client id's client lock: (hash of the schema's channel and ':client', hash of
-- the id).
CREATE FUNCTION client_lock(channel text, id text) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[hashtext(channel || ':client'), hashtext(id)]
$$;

-- Whether client id holds its client lock: its connection is open. A shared try conflicts
-- only with the client's exclusive hold, and is let go at once.
CREATE FUNCTION client_alive(channel text, id text) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT CASE
        WHEN pg_try_advisory_lock_shared(hashtext(channel || ':client'), hashtext(id))
        THEN NOT pg_advisory_unlock_shared(hashtext(channel || ':client'), hashtext(id))
        ELSE true
    END
$$;

-- The key of client id's listening lock: (hash of the schema's channel and ':listening',
-- hash of the id). The connection the client's listener LISTENs on holds it (shared,
-- session level) for as long as it lives, so that it ends with that connection: a
-- restarted server, a killed backend.
CREATE FUNCTION listening_lock(channel text, id text) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[hashtext(channel || ':listening'), hashtext(id)]
$$;

-- Whether client id's listener LISTENs: some session holds its listening lock. An exclusive
-- try conflicts with any holder, and is let go at once.
CREATE FUNCTION client_listening(channel text, id text) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT CASE
        WHEN pg_try_advisory_lock(hashtext(channel || ':listening'), hashtext(id))
        THEN NOT pg_advisory_unlock(hashtext(channel || ':listening'), hashtext(id))
        ELSE true
    END
$$;

-- The live clients that may wait for a job of queue, in random order: those that serve the
-- queue, handle one of kinds (NULL: any) and have no dispatcher of the queue working through
-- a backlog. A client counts as live until twice its lease TTL has passed since its last
-- heartbeat (see wake); for a hand-off (handing_off), only until its lease TTL has, and only
-- if it runs hand-offs. PL/pgSQL, so that its plan is kept from call to call, and that
-- plan the generic one (migration 020): planned for its values, where handing_off and
-- kinds fold away, the query looked cheaper than its generic plan, and PostgreSQL planned
-- it afresh at every enqueue. Its tables hold a row per client, and per client and queue:
-- whatever their size when the plan is made, no plan of it is costly.
CREATE FUNCTION waiting_clients(queue text, kinds text[], handing_off boolean) RETURNS text[]
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN ARRAY(
        SELECT c.id FROM clients c
        WHERE c.stopped_at IS NULL
          AND c.heartbeat_at + CASE WHEN handing_off THEN 1 ELSE 2 END * c.lease_ttl > clock_timestamp()
          AND (NOT handing_off OR c.hands_off)
          AND (waiting_clients.kinds IS NULL OR c.kinds && waiting_clients.kinds)
          -- serves(c.queues, queue), written out: a function with a subquery is not
          -- inlined, and planning it on every call cost most of an enqueue's time
          AND (waiting_clients.queue = ANY (c.queues) OR EXISTS (
              SELECT FROM unnest(c.queues) p
              WHERE right(p, 1) = '*' AND starts_with(waiting_clients.queue, left(p, -1))))
          AND NOT EXISTS (
              SELECT FROM dispatchers d
              WHERE d.queue = waiting_clients.queue AND d.client_id = c.id AND NOT d.waiting)
        ORDER BY random());
END
$$;

-- Sends the wakeup of jobs jobs of queue (the earliest run_at and the highest priority
-- among them, as wakeup_payload takes them) if it can wake something, and reports whether
-- it did. Nothing waits when wake_needless says so; otherwise the tables tell which live
-- clients may wait: a client that serves the queue and handles one of kinds (NULL: any,
-- for a job that ended and freed an ordered key or a limited slot), with no dispatcher of
-- the queue working through a backlog. A client counts as live until twice its lease TTL
-- has passed since its last heartbeat: longer than other clients wait to rescue its jobs,
-- so that a client cut off for a while is still woken, while one that died stops costing
-- wakeups soon after. Of those, jobs clients picked at random are woken on their own
-- channels and one more is their backup (see above). Every client is woken on channel
-- when that many are not known to be alive, when jobs is NULL (unknown), and when kinds is
-- NULL: a job that ended and freed an ordered key or a limited slot may let a job of any
-- kind start. Its search_path is the schema it was created in, whatever the caller's.
CREATE FUNCTION wake(channel text, queue text, run_at timestamptz, priority integer, kinds text[], jobs bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    waiting text[]; -- the live clients that may wait, in random order
    woken   text[]; -- those addressed: jobs of them, then the backup
    payload text;
BEGIN
    IF wake_needless(channel, queue) THEN
        RETURN false;
    END IF;
    IF current_setting('transaction_isolation') = 'read committed' THEN
        waiting := waiting_clients(queue, kinds, false);
        IF cardinality(waiting) = 0 THEN
            RETURN false;
        END IF;
        -- Without kinds, the job that may be taken is not known: a waiting client that
        -- serves the queue may not handle it.
        IF jobs < cardinality(waiting) AND kinds IS NOT NULL THEN
            -- tried in order, and no more than needed
            woken := ARRAY(SELECT id FROM unnest(waiting) id WHERE client_alive(channel, id) LIMIT jobs + 1);
        END IF;
    END IF;
    payload := wakeup_payload(queue, run_at, priority);
    IF cardinality(woken) = jobs + 1 THEN
        FOR i IN 1 .. jobs LOOP
            PERFORM pg_notify(client_channel(channel, woken[i]), payload);
        END LOOP;
        -- the backup's: 'b:' instead of 'w:'
        PERFORM pg_notify(client_channel(channel, woken[jobs + 1]), 'b' || substr(payload, 2));
    ELSE
        PERFORM pg_notify(channel, payload);
    END IF;
    RETURN true;
END
$$;

-- Hand-offs (see migrations/016_hand_offs.sql): a job enqueued alone while a client waits
-- for work is leased to that client by the enqueue itself, and the wakeup carries the job.
-- relay's producers insert it running when a client waited at the queue's last enqueue
-- (migration 021: hand_off_target, then send_hand_off); otherwise, and for producers of
-- earlier versions, the insert calls hand_off.

-- The client to hand a job of queue (of kind, due at run_at) off to, or
-- NULL: a waiting client that runs hand-offs, whose listener listens, with fewer than 8
-- hand-offs unacknowledged (migration 019), if the job may be handed off at all. It may
-- not when it is not due yet, at REPEATABLE READ or SERIALIZABLE (no fresh snapshot of
-- who waits), when its transaction has handed a job off already (only the first is), and
-- in a queue that is ordered, limited or paused (whose jobs wait for their turn).
CREATE FUNCTION hand_off_target(channel text, queue text, run_at timestamptz, kind text)
RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    client text;
BEGIN
    IF run_at > now() OR current_setting('transaction_isolation') <> 'read committed'
       OR current_setting('relay.handed_off', true) IS NOT DISTINCT FROM 'on'
       OR EXISTS (SELECT FROM queues q WHERE q.name = hand_off_target.queue
                  AND (q.ordered OR q.global_limit IS NOT NULL OR q.paused_at IS NOT NULL)) THEN
        RETURN NULL;
    END IF;
    -- Not to a client that has 8 hand-offs unacknowledged: one whose listener is away, or
    -- cut off from it by the network, would leave each job handed to it waiting (a client
    -- that hears them acknowledges each as it starts), so it strands no more. A loop over
    -- the clients, not a query of unnest(), for its plan (migration 020).
    FOREACH client IN ARRAY waiting_clients(queue, ARRAY[kind], true) LOOP
        IF (SELECT count(*) FROM (SELECT FROM jobs f
                                  WHERE f.state = 'running' AND f.lease_expires_at IS NULL AND f.attempted_by = client
                                  LIMIT 8) unacknowledged) < 8
           AND client_alive(channel, client) AND client_listening(channel, client) THEN
            RETURN client;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- Sends job, just leased to the client job.attempted_by without a lease, its hand-off: the
-- job itself, on the client's channel. A job too large for a notification is made pending
-- again (its max_attempts, if it took the client's default, stays that), and its queue
-- woken as wake() wakes it instead. Returns whether it notified.
CREATE FUNCTION send_hand_off(channel text, job jobs) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    payload text;
BEGIN
    -- times in microseconds since the Unix epoch, whatever the session's time zone
    payload := json_build_object(
        'id', job.id, 'kind', job.kind, 'queue', job.queue, 'args', job.args, 'attempt', job.attempt,
        'max_attempts', job.max_attempts, 'created_at', floor(extract(epoch FROM job.created_at) * 1000000)::bigint,
        'run_at', floor(extract(epoch FROM job.run_at) * 1000000)::bigint,
        'attempted_at', floor(extract(epoch FROM job.attempted_at) * 1000000)::bigint,
        'timeout_ms', job.timeout_ms, 'priority', job.priority,
        'payload', encode(job.payload, 'base64'), 'metadata', job.metadata, 'backoff', job.backoff,
        'schedule', job.schedule, 'schedule_slot', floor(extract(epoch FROM job.schedule_slot) * 1000000)::bigint)::text;
    IF octet_length(payload) < 7900 THEN
        PERFORM set_config('relay.handed_off', 'on', true);
        PERFORM pg_notify(client_channel(channel, job.attempted_by), 'h:' || payload);
        RETURN true;
    END IF;
    UPDATE jobs j SET state = 'pending', attempt = j.attempt - 1, attempted_at = NULL, attempted_by = NULL
    WHERE j.id = job.id;
    RETURN wake(channel, job.queue, job.run_at, job.priority, ARRAY[job.kind], 1);
END
$$;

-- Hands job (just inserted, of queue, due at run_at, with priority and kind) off to the
-- client hand_off_target picks, or else sends the wakeup wake() sends. Returns whether it
-- notified.
CREATE FUNCTION hand_off(channel text, job bigint, queue text, run_at timestamptz, priority integer, kind text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    target text;
    handed jobs;
BEGIN
    IF wake_needless(channel, queue) THEN
        RETURN false;
    END IF;
    target := hand_off_target(channel, queue, run_at, kind);
    -- Most of a job's size is in these columns: one that cannot fit is not handed off.
    IF target IS NOT NULL AND (
        SELECT coalesce(octet_length(j.args::text), 0) + coalesce(octet_length(j.payload), 0) * 4 / 3
               + coalesce(octet_length(j.metadata::text), 0) + coalesce(octet_length(j.backoff::text), 0)
               + octet_length(j.kind) + octet_length(j.queue) + coalesce(octet_length(j.schedule), 0)
        FROM jobs j WHERE j.id = job) < 6500 THEN
        UPDATE jobs j
        SET state = 'running', attempt = j.attempt + 1, attempted_at = clock_timestamp(), attempted_by = target,
            max_attempts = coalesce(j.max_attempts,
                (SELECT c.kind_attempts[array_position(c.kinds, j.kind)] FROM clients c WHERE c.id = target))
        WHERE j.id = job AND j.state = 'pending'
        RETURNING j.* INTO handed;
        IF FOUND THEN
            RETURN send_hand_off(channel, handed);
        END IF;
    END IF;
    RETURN wake(channel, queue, run_at, priority, ARRAY[kind], 1);
END
$$;

-- The wakeup of jobs of unknown number (the statements of relay's versions before
-- migration 015): every waiting client is woken.
CREATE FUNCTION wake(channel text, queue text, run_at timestamptz, priority integer, kinds text[])
RETURNS boolean
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT wake(channel, queue, run_at, priority, kinds, NULL)
$$;

-- Enqueueing from SQL, and so from any language (see migrations/010_sql_enqueue.sql):
-- enqueue() and enqueue_many() check jobs as relay.Enqueue does in Go, and insert them
-- with insert_jobs, which Go's enqueues call too.

-- Tells every client's expirer of the earliest deadline of the reservations a statement
-- inserted ('r:<µs since the epoch>' on channel): an expirer sleeps until the earliest
-- deadline it knows of, and an earlier one must wake it. Returns true.
CREATE FUNCTION announce_held(channel text, deadline timestamptz) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT pg_notify(channel, 'r:' || floor(extract(epoch FROM deadline) * 1000000)::bigint) IS NULL
$$;

-- Inserts jobs given as aligned arrays, one element per job, and sends one wakeup per
-- queue through wake(), which notifies only when it can wake something. Returns each
-- job's id in the order of the arrays, and whether it was a duplicate: a job with a
-- unique key (unique_keys[i]) held by a job in one of the stored states unique_states[i]
-- (comma-separated; pending, running and held always among them) is not inserted and gets the
-- holder's id; of jobs sharing a free key within the call, the first is inserted and the
-- others get its id. NULL run_at: now; NULL max_attempts: the kind's default, set at the
-- first claim; NULL timeout_ms: the kind's or the queue's. In an ordered queue a job
-- without an order key joins the queue-wide sequence ''; an order key for a queue that is
-- not ordered is refused (not_ordered).
--
-- It checks nothing else: Go checks every job before it calls this, and enqueue() and
-- enqueue_many() call it through enqueue_jobs, which checks. holds and backoffs (migration
-- 011): a job reserved for that long (relay.Reserved), or with its own retry policy; NULL
-- arrays when no job of the batch is.
CREATE FUNCTION insert_jobs(
    kinds text[], queues text[], args jsonb[], run_ats timestamptz[], max_attempts integer[],
    timeouts_ms integer[], priorities smallint[], order_keys text[], payloads bytea[],
    metadatas jsonb[], unique_keys text[], unique_states text[],
    holds interval[] DEFAULT NULL, backoffs jsonb[] DEFAULT NULL)
RETURNS TABLE (id bigint, duplicate boolean)
-- Planned without sequential scans or JIT (migration 014): PL/pgSQL keeps a generic plan
-- of each statement, and one made on a table of a few jobs would read the whole table for
-- every unique key once it held thousands.
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT SET enable_seqscan = off SET jit = off AS $$
#variable_conflict use_column
DECLARE
    channel text := 'relay:' || current_schema();
    njobs integer := cardinality(insert_jobs.kinds);
    ids bigint[];
    dups boolean[];
    todo bigint[];  -- the jobs whose key's holder this transaction could not see yet
BEGIN
    IF insert_jobs.unique_keys IS NULL THEN
        -- The common case, and a much cheaper statement: nothing to look up or skip.
        RETURN QUERY
        WITH job AS (
            INSERT INTO jobs (kind, queue, args, run_at, max_attempts, timeout_ms, priority, order_key, payload, metadata,
                              state, held_until, backoff)
            SELECT j.kind, j.queue, j.args, coalesce(j.run_at, now()), j.max_attempts, j.timeout_ms, j.priority,
                CASE WHEN q.ordered THEN coalesce(j.order_key, '') WHEN j.order_key IS NOT NULL THEN not_ordered(j.queue) END,
                j.payload, j.metadata,
                CASE WHEN j.hold IS NULL THEN 'pending' ELSE 'held' END, clock_timestamp() + j.hold, j.backoff
            FROM unnest(insert_jobs.kinds, insert_jobs.queues, insert_jobs.args, insert_jobs.run_ats, insert_jobs.max_attempts,
                        insert_jobs.timeouts_ms, insert_jobs.priorities, insert_jobs.order_keys, insert_jobs.payloads,
                        insert_jobs.metadatas, insert_jobs.holds, insert_jobs.backoffs) WITH ORDINALITY
                AS j(kind, queue, args, run_at, max_attempts, timeout_ms, priority, order_key, payload, metadata, hold, backoff, ord)
            LEFT JOIN queues q ON q.name = j.queue
            ORDER BY j.ord
            RETURNING id, queue, run_at, priority, kind, held_until
        ), notified AS (
            SELECT wake(channel, queue, min(run_at), max(priority), array_agg(DISTINCT kind), count(*))
            FROM job
            WHERE held_until IS NULL
            GROUP BY queue
            UNION ALL
            SELECT announce_held(channel, min(held_until)) FROM job HAVING min(held_until) IS NOT NULL
        )
        -- ids are drawn in insertion order, which is the order of the arrays
        SELECT job.id, false FROM job
        WHERE (SELECT count(*) FROM notified) >= 0
        ORDER BY job.id;
        RETURN;
    END IF;

    -- A job whose key is held by a job that committed after the statement's snapshot was
    -- taken gets no id: the statement runs again for those jobs only, and each run takes a
    -- newer snapshot (at READ COMMITTED), so a second run all but always sees the holder —
    -- or finds the key free again, and inserts the job.
    FOR pass IN 1 .. 5 LOOP
        WITH new AS (
            SELECT j.*, q.ordered,
                (SELECT h.id FROM jobs h
                 WHERE j.unique_key IS NOT NULL AND h.unique_key = j.unique_key
                   AND h.state = ANY (string_to_array(j.unique_states, ','))
                 ORDER BY h.state IN ('pending', 'running', 'held') DESC, h.id DESC
                 LIMIT 1) AS held
            FROM unnest(insert_jobs.kinds, insert_jobs.queues, insert_jobs.args, insert_jobs.run_ats, insert_jobs.max_attempts,
                        insert_jobs.timeouts_ms, insert_jobs.priorities, insert_jobs.order_keys, insert_jobs.payloads,
                        insert_jobs.metadatas, insert_jobs.unique_keys, insert_jobs.unique_states,
                        insert_jobs.holds, insert_jobs.backoffs) WITH ORDINALITY
                AS j(kind, queue, args, run_at, max_attempts, timeout_ms, priority, order_key, payload, metadata,
                     unique_key, unique_states, hold, backoff, ord)
            LEFT JOIN queues q ON q.name = j.queue
            WHERE todo IS NULL OR j.ord = ANY (todo)
        ), job AS (
            INSERT INTO jobs (kind, queue, args, run_at, max_attempts, timeout_ms, priority, order_key, payload, unique_key, metadata,
                              state, held_until, backoff)
            SELECT kind, queue, args, coalesce(run_at, now()), max_attempts, timeout_ms, priority,
                CASE WHEN ordered THEN coalesce(order_key, '') WHEN order_key IS NOT NULL THEN not_ordered(queue) END,
                payload, unique_key, metadata,
                CASE WHEN hold IS NULL THEN 'pending' ELSE 'held' END, clock_timestamp() + hold, backoff
            FROM new
            WHERE held IS NULL
            ORDER BY ord
            ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('pending', 'running', 'held') DO NOTHING
            RETURNING id, queue, run_at, priority, unique_key, kind, held_until
        ), notified AS (
            SELECT wake(channel, queue, min(run_at), max(priority), array_agg(DISTINCT kind), count(*))
            FROM job
            WHERE held_until IS NULL
            GROUP BY queue
            UNION ALL
            SELECT announce_held(channel, min(held_until)) FROM job HAVING min(held_until) IS NOT NULL
        ), keyless AS (
            -- ids are drawn in insertion order, so the n-th inserted job without a unique
            -- key is the n-th such job of the input
            SELECT id, row_number() OVER (ORDER BY id) AS rn FROM job WHERE unique_key IS NULL
        ), keyed AS (
            SELECT unique_key, id,
                (SELECT min(ord) FROM new WHERE new.unique_key = job.unique_key AND new.held IS NULL) AS first
            FROM job WHERE unique_key IS NOT NULL
        ), result AS (
            SELECT n.ord, coalesce(n.held, l.id, k.id, h.id) AS id,
                NOT coalesce(l.id IS NOT NULL OR n.ord = k.first, false) AS duplicate
            FROM (SELECT ord, unique_key, held, row_number() OVER (PARTITION BY unique_key IS NULL ORDER BY ord) AS rn FROM new) n
            LEFT JOIN keyless l ON n.unique_key IS NULL AND l.rn = n.rn
            LEFT JOIN keyed k ON n.held IS NULL AND k.unique_key = n.unique_key
            LEFT JOIN jobs h
                ON n.unique_key IS NOT NULL AND n.held IS NULL AND k.id IS NULL
                AND h.unique_key = n.unique_key AND h.state IN ('pending', 'running', 'held')
            WHERE (SELECT count(*) FROM notified) >= 0
        )
        SELECT array_agg(coalesce(ids[o.i], r.id) ORDER BY o.i), array_agg(coalesce(dups[o.i], r.duplicate) ORDER BY o.i)
        INTO ids, dups
        FROM generate_series(1, njobs) o(i) LEFT JOIN result r ON r.ord = o.i;

        todo := array_positions(ids, NULL);
        IF cardinality(todo) = 0 THEN
            RETURN QUERY SELECT * FROM unnest(ids, dups);
            RETURN;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'insert job: unique key "%" is held by a job this transaction cannot see; retry', insert_jobs.unique_keys[todo[1]]
        USING ERRCODE = '40001';
END
$$;

-- Why a job given to enqueue() or enqueue_many() cannot be inserted, as relay.Enqueue's
-- checks say it in Go — {SQLSTATE, message, hint} — or NULL if it can. args_size and
-- metadata_size are the bytes of args and metadata as JSON text; run_at is the time the
-- job was asked to run, from run_at or run_in. A single expression without subqueries,
-- so that it is inlined into the query that checks a whole batch.
CREATE FUNCTION job_problem(
    kind text, queue text, args jsonb, args_size bigint, run_at timestamptz, run_at_given timestamptz,
    run_in interval, priority bigint, max_attempts bigint, timeout interval, order_key text,
    unique_key text, unique_states text, metadata jsonb, metadata_size bigint,
    max_args_size bigint, max_metadata_size bigint)
RETURNS text[]
LANGUAGE sql STABLE AS $$
SELECT CASE
    WHEN kind IS NULL THEN ARRAY['22004', 'relay: invalid job: kind is NULL',
        'Give the name of the kind of job, as its handler is registered (relay.NewKind in Go).']
    WHEN kind = '' THEN ARRAY['22023', 'relay: invalid job: kind is empty',
        'Give the name of the kind of job, as its handler is registered (relay.NewKind in Go).']
    WHEN octet_length(kind) > 128 THEN ARRAY['22023',
        format('relay: invalid job: kind "%s"… is %s bytes long, the limit is 128', left(kind, 20), octet_length(kind)), NULL]
    WHEN queue = '' THEN ARRAY['22023', 'relay: invalid job: queue is empty', 'Leave queue out for "default".']
    WHEN octet_length(queue) > 128 THEN ARRAY['22023',
        format('relay: invalid job: queue "%s"… is %s bytes long, the limit is 128', left(queue, 20), octet_length(queue)), NULL]
    WHEN max_attempts NOT BETWEEN 1 AND 2147483647 THEN ARRAY['22023',
        format('relay: invalid job: max_attempts must be between 1 and 2147483647, got %s', max_attempts),
        'Leave max_attempts out (NULL) for the default of the kind''s handler.']
    WHEN run_at_given IS NOT NULL AND run_in IS NOT NULL THEN ARRAY['22023',
        'relay: invalid job: both run_at and run_in are given', 'Give one of them: run_at a time, run_in a delay from now.']
    WHEN run_at > '294247-01-10 04:00:54.775807+00' THEN ARRAY['22023',
        format('relay: invalid job: %s is outside the times relay can store (%s to %s)',
            CASE WHEN run_in IS NULL THEN 'run_at ' || run_at ELSE format('run_in %s (run_at %s)', run_in, run_at) END,
            '4714-11-24 00:00:00+00 BC', '294247-01-10 04:00:54.775807+00'), NULL]
    WHEN timeout < '0' OR timeout > '576 hours' THEN ARRAY['22023',
        format('relay: invalid job: timeout must be between 0 (none) and 576:00:00, got %s', timeout),
        'Leave timeout out (NULL) for the timeout of the kind or the queue.']
    WHEN priority NOT BETWEEN -32767 AND 32767 THEN ARRAY['22023',
        format('relay: invalid job: priority must be between -32767 and 32767, got %s', priority), NULL]
    WHEN octet_length(order_key) > 256 THEN ARRAY['22023',
        format('relay: invalid job: the order_key is %s bytes long, the limit is 256', octet_length(order_key)), NULL]
    WHEN unique_key = '' THEN ARRAY['22023', 'relay: invalid job: unique_key is empty',
        'Give a non-empty key, or leave unique_key out for a job that is not unique.']
    WHEN unique_key IS NULL AND unique_states IS NOT NULL THEN ARRAY['22023',
        'relay: invalid job: unique_states is given without a unique_key', 'Give the unique_key the states are for.']
    WHEN octet_length(unique_key) > 256 THEN ARRAY['22023',
        format('relay: invalid job: the unique_key is %s bytes long, the limit is 256', octet_length(unique_key)), NULL]
    WHEN unique_states IS NOT NULL
         AND NOT string_to_array(unique_states, ',') <@ '{pending,scheduled,running,succeeded,failed,cancelled}' THEN ARRAY['22023',
        format('relay: invalid job: unique_states: "%s" is not a job state',
            (array_remove(array_remove(array_remove(array_remove(array_remove(array_remove(string_to_array(unique_states, ','),
                'pending'), 'scheduled'), 'running'), 'succeeded'), 'failed'), 'cancelled'))[1]),
        'The states are pending, scheduled, running, succeeded, failed and cancelled; a unique job''s key is held by a pending or running job in any case.']
    WHEN args IS NULL THEN ARRAY['22004', format('relay: invalid job: the args of kind "%s" are NULL', kind),
        'Give the args as JSON: ''{}'' for none, ''null'' for a JSON null.']
    WHEN args_size > max_args_size THEN ARRAY['54000',
        format('relay: value too large: args of kind "%s": %s bytes, over the limit of %s set by max_args_size (default 1048576); raise the limit, or store the data elsewhere and pass a reference',
            kind, args_size, max_args_size), NULL]
    WHEN jsonb_typeof(metadata) <> 'object' OR metadata @? '$.* ? (@.type() != "string")' THEN ARRAY['22023',
        format('relay: invalid job: the metadata of kind "%s" must be a JSON object of strings, got %s', kind, left(metadata::text, 100)),
        'Give metadata as an object of string values, such as {"tenant": "acme"}.']
    WHEN metadata_size > max_metadata_size THEN ARRAY['54000',
        format('relay: value too large: metadata of kind "%s": %s bytes, over the limit of %s set by max_metadata_size (default 65536); raise the limit, or store the data elsewhere and pass a reference',
            kind, metadata_size, max_metadata_size), NULL]
END
$$;

-- enqueue() and both enqueue_many(): checks the jobs, given as aligned arrays (NULL for
-- an array of defaults), and inserts them with insert_jobs. unique_states holds each
-- job's states, comma-separated. single: the job of enqueue(), whose errors need no
-- number.
CREATE FUNCTION enqueue_jobs(
    kinds text[], args jsonb[], queues text[], run_ats timestamptz[], run_ins interval[], priorities bigint[],
    max_attempts bigint[], timeouts interval[], order_keys text[], unique_keys text[], unique_states text[],
    metadatas jsonb[], max_args_size bigint, max_metadata_size bigint, single boolean)
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    n integer := cardinality(kinds);
    bad record;
    lens integer[] := ARRAY[cardinality(args), cardinality(queues), cardinality(run_ats), cardinality(run_ins),
        cardinality(priorities), cardinality(max_attempts), cardinality(timeouts), cardinality(order_keys),
        cardinality(unique_keys), cardinality(unique_states), cardinality(metadatas)];
    names text[] := ARRAY['args', 'queues', 'run_ats', 'run_ins', 'priorities', 'max_attempts', 'timeouts',
        'order_keys', 'unique_keys', 'unique_states', 'metadatas'];
    j_kinds text[]; j_queues text[]; j_args jsonb[]; j_run_ats timestamptz[]; j_max_attempts integer[];
    j_timeouts integer[]; j_priorities smallint[]; j_order_keys text[]; j_metadatas jsonb[];
    j_unique_keys text[]; j_unique_states text[];
BEGIN
    IF max_args_size IS NULL OR max_args_size < 1 THEN
        RAISE EXCEPTION 'relay: invalid job: max_args_size must be at least 1, got %', coalesce(max_args_size::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Leave it out for the default, 1048576 (1 MiB).';
    END IF;
    IF max_metadata_size IS NULL OR max_metadata_size < 1 THEN
        RAISE EXCEPTION 'relay: invalid job: max_metadata_size must be at least 1, got %', coalesce(max_metadata_size::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Leave it out for the default, 65536 (64 KiB).';
    END IF;
    IF kinds IS NULL THEN
        RAISE EXCEPTION 'relay: invalid job: kinds is NULL' USING ERRCODE = '22004',
            HINT = 'Give one kind per job, and args and every other array aligned with it.';
    END IF;
    IF args IS NULL THEN
        RAISE EXCEPTION 'relay: invalid job: args is NULL' USING ERRCODE = '22004',
            HINT = 'Give one JSON value per job (''{}'' for none), aligned with kinds.';
    END IF;
    FOR i IN 1 .. cardinality(lens) LOOP
        IF lens[i] <> n THEN
            RAISE EXCEPTION 'relay: invalid job: % has % elements and kinds %', names[i], lens[i], n USING ERRCODE = '22023',
                HINT = 'Give every array one element per job, in the same order, or leave it out (NULL) for the defaults.';
        END IF;
    END LOOP;
    IF n = 0 THEN
        RETURN;
    END IF;

    -- One pass over the jobs: the first that cannot be inserted, if any, or else every
    -- job as insert_jobs takes it.
    SELECT j.ord, j.kind, j.problem INTO bad
    FROM (
        SELECT c.ord, c.kind, job_problem(c.kind, c.queue, c.args, octet_length(c.args::text), c.run_at, c.run_at_given, c.run_in,
                c.priority, c.max_attempts, c.timeout, c.order_key, c.unique_key, c.unique_states, c.metadata,
                octet_length(c.metadata::text), max_args_size, max_metadata_size) AS problem
        FROM (
            SELECT u.*, coalesce(u.run_at_given, clock_timestamp() + u.run_in) AS run_at, coalesce(u.queue_given, 'default') AS queue
            FROM unnest(kinds, args, queues, run_ats, run_ins, priorities, max_attempts, timeouts, order_keys, unique_keys,
                        unique_states, metadatas) WITH ORDINALITY
                AS u(kind, args, queue_given, run_at_given, run_in, priority, max_attempts, timeout, order_key, unique_key,
                     unique_states, metadata, ord)
        ) c
    ) j
    WHERE j.problem IS NOT NULL
    ORDER BY j.ord
    LIMIT 1;
    IF FOUND THEN
        bad.problem[2] := CASE WHEN single THEN bad.problem[2]
                               ELSE format('job %s of %s (kind "%s"): %s', bad.ord, n, bad.kind, bad.problem[2]) END;
        IF bad.problem[3] IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = bad.problem[1], MESSAGE = bad.problem[2];
        END IF;
        RAISE EXCEPTION USING ERRCODE = bad.problem[1], MESSAGE = bad.problem[2], HINT = bad.problem[3];
    END IF;

    SELECT array_agg(u.kind ORDER BY u.ord), array_agg(coalesce(u.queue, 'default') ORDER BY u.ord),
        array_agg(u.args ORDER BY u.ord),
        -- a time before the first PostgreSQL stores (-infinity) means now, like any past time
        array_agg(CASE WHEN u.run_at = '-infinity' THEN '4714-11-24 00:00:00+00 BC'
                       ELSE coalesce(u.run_at, clock_timestamp() + u.run_in) END ORDER BY u.ord),
        array_agg(u.max_attempts ORDER BY u.ord),
        -- whole milliseconds, rounded up: a sub-millisecond timeout must not become "none"
        array_agg(ceil(extract(epoch FROM u.timeout) * 1000) ORDER BY u.ord),
        array_agg(coalesce(u.priority, 0) ORDER BY u.ord), array_agg(u.order_key ORDER BY u.ord),
        array_agg(nullif(u.metadata, '{}') ORDER BY u.ord),
        array_agg(u.unique_key ORDER BY u.ord),
        array_agg(CASE WHEN u.unique_key IS NOT NULL THEN concat_ws(',', 'pending', 'running', u.unique_states) END ORDER BY u.ord)
    INTO j_kinds, j_queues, j_args, j_run_ats, j_max_attempts, j_timeouts, j_priorities, j_order_keys, j_metadatas,
        j_unique_keys, j_unique_states
    FROM unnest(kinds, args, queues, run_ats, run_ins, priorities, max_attempts, timeouts, order_keys, unique_keys,
                unique_states, metadatas) WITH ORDINALITY
        AS u(kind, args, queue, run_at, run_in, priority, max_attempts, timeout, order_key, unique_key, unique_states, metadata, ord);
    IF array_remove(j_unique_keys, NULL) = '{}' THEN
        j_unique_keys := NULL; -- no unique job: insert_jobs' cheaper statement
        j_unique_states := NULL;
    END IF;
    RETURN QUERY SELECT * FROM insert_jobs(j_kinds, j_queues, j_args, j_run_ats, j_max_attempts, j_timeouts, j_priorities,
        j_order_keys, array_fill(NULL::bytea, ARRAY[n]), j_metadatas, j_unique_keys, j_unique_states);
END
$$;

-- Enqueues a job of kind with args (jsonb) in the caller's transaction, as relay.Enqueue
-- does in Go: the job, and the wakeup of a worker, take effect when the transaction
-- commits. Every argument but kind may be left out; named notation reads best:
--
--   SELECT * FROM relay.enqueue('email', '{"to": "ada@example.com"}', queue => 'mail', run_in => '5 minutes');
--
-- Returns the job's id and whether it was a duplicate: with unique_key, when a job holds
-- the key (pending, scheduled or running, or in one of unique_states), nothing is
-- inserted and that job's id is returned. An invalid job raises an error (SQLSTATE 22023,
-- 22004 for a NULL, 54000 for args or metadata over their size limit, RLY01 for an
-- order key in a queue that is not ordered) and inserts nothing.
CREATE FUNCTION enqueue(
    kind              text,
    args              jsonb       DEFAULT '{}',
    queue             text        DEFAULT 'default',
    run_at            timestamptz DEFAULT NULL,  -- not before this time (a past time means now)
    run_in            interval    DEFAULT NULL,  -- or: not before this long from now
    priority          bigint      DEFAULT 0,     -- higher first, -32767 to 32767
    max_attempts      bigint      DEFAULT NULL,  -- NULL: the kind's default
    timeout           interval    DEFAULT NULL,  -- NULL: the kind's or queue's; 0: none
    order_key         text        DEFAULT NULL,  -- its sequence in an ordered queue
    unique_key        text        DEFAULT NULL,  -- insert only if no job holds this key
    unique_states     text[]      DEFAULT NULL,  -- finished states that hold the key too
    metadata          jsonb       DEFAULT NULL,  -- a JSON object of strings
    max_args_size     bigint      DEFAULT 1048576,
    max_metadata_size bigint      DEFAULT 65536,
    OUT id bigint, OUT duplicate boolean)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    SELECT j.id, j.duplicate INTO id, duplicate
    FROM enqueue_jobs(ARRAY[kind], ARRAY[args], ARRAY[queue], ARRAY[run_at], ARRAY[run_in], ARRAY[priority],
        ARRAY[max_attempts], ARRAY[timeout], ARRAY[order_key], ARRAY[unique_key],
        ARRAY[array_to_string(unique_states, ',')], ARRAY[metadata], max_args_size, max_metadata_size, true) j;
END
$$;

-- Enqueues many jobs with one statement, as relay.EnqueueMany does in Go: kinds and args
-- hold one element per job, and every other array, if given, as many (a NULL element
-- takes the default of enqueue()); unique_states apply to every job with a unique key.
-- Returns one row per job, in the order of the arrays. If any job is invalid, none is
-- inserted.
CREATE FUNCTION enqueue_many(
    kinds             text[],
    args              jsonb[],
    queues            text[]        DEFAULT NULL,
    run_ats           timestamptz[] DEFAULT NULL,
    run_ins           interval[]    DEFAULT NULL,
    priorities        bigint[]      DEFAULT NULL,
    max_attempts      bigint[]      DEFAULT NULL,
    timeouts          interval[]    DEFAULT NULL,
    order_keys        text[]        DEFAULT NULL,
    unique_keys       text[]        DEFAULT NULL,
    unique_states     text[]        DEFAULT NULL,
    metadatas         jsonb[]       DEFAULT NULL,
    max_args_size     bigint        DEFAULT 1048576,
    max_metadata_size bigint        DEFAULT 65536)
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    RETURN QUERY SELECT * FROM enqueue_jobs(kinds, args, queues, run_ats, run_ins, priorities, max_attempts, timeouts,
        order_keys, unique_keys,
        CASE WHEN unique_states IS NULL THEN NULL
             WHEN unique_keys IS NULL THEN array_fill(array_to_string(unique_states, ','), ARRAY[cardinality(kinds)])
             ELSE ARRAY(SELECT CASE WHEN k IS NOT NULL THEN array_to_string(unique_states, ',') END
                        FROM unnest(unique_keys) WITH ORDINALITY u(k, o) ORDER BY o) END,
        metadatas, max_args_size, max_metadata_size, false);
END
$$;

-- Enqueues many jobs given as a JSON array of objects, one per job, whose keys are the
-- arguments of enqueue(): kind, and optionally args, queue, run_at, run_in, priority,
-- max_attempts, timeout, order_key, unique_key, unique_states (an array) and metadata.
-- Times and intervals are strings PostgreSQL reads ("2030-01-01T00:00:00Z", "5 minutes").
CREATE FUNCTION enqueue_many(specs jsonb, max_args_size bigint DEFAULT 1048576, max_metadata_size bigint DEFAULT 65536)
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    bad record;
    strings constant text[] := '{kind,queue,run_at,run_in,timeout,order_key,unique_key}';
    numbers constant text[] := '{priority,max_attempts}';
BEGIN
    IF jsonb_typeof(specs) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'relay: invalid job: specs must be a JSON array of objects, one per job, not %', coalesce(jsonb_typeof(specs), 'NULL')
            USING ERRCODE = '22023', HINT = 'For example [{"kind": "email", "args": {"to": "ada@example.com"}}].';
    END IF;
    IF jsonb_array_length(specs) = 0 THEN
        RETURN;
    END IF;
    SELECT s.ord, s.spec, e.key, e.value INTO bad
    FROM jsonb_array_elements(specs) WITH ORDINALITY s(spec, ord)
    LEFT JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(s.spec) = 'object' THEN s.spec END) e ON true
    WHERE jsonb_typeof(s.spec) <> 'object'
       OR e.key NOT IN ('kind', 'args', 'queue', 'run_at', 'run_in', 'priority', 'max_attempts', 'timeout', 'order_key',
                        'unique_key', 'unique_states', 'metadata')
       OR (e.key = ANY (strings) AND jsonb_typeof(e.value) NOT IN ('string', 'null'))
       OR (e.key = ANY (numbers) AND jsonb_typeof(e.value) NOT IN ('number', 'null'))
       OR (e.key = ANY (numbers) AND jsonb_typeof(e.value) = 'number'
           AND (e.value::numeric % 1 <> 0 OR abs(e.value::numeric) > 9223372036854775807))
       OR (e.key = 'unique_states' AND jsonb_typeof(e.value) <> 'null'
           AND (jsonb_typeof(e.value) <> 'array' OR e.value @? '$[*] ? (@.type() != "string")'))
    ORDER BY s.ord
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'relay: invalid job: job % of %: %', bad.ord, jsonb_array_length(specs), CASE
            WHEN jsonb_typeof(bad.spec) <> 'object' THEN format('is a JSON %s, not an object', jsonb_typeof(bad.spec))
            WHEN bad.key = ANY (strings) THEN format('"%s" must be a string, got %s', bad.key, bad.value)
            WHEN bad.key = ANY (numbers) THEN format('"%s" must be a whole number, got %s', bad.key, bad.value)
            WHEN bad.key = 'unique_states' THEN format('"unique_states" must be an array of strings, got %s', bad.value)
            ELSE format('"%s" is not an argument of enqueue', bad.key) END
            USING ERRCODE = '22023',
            HINT = 'A job is an object with the keys kind, args, queue, run_at, run_in, priority, max_attempts, timeout, order_key, unique_key, unique_states and metadata; all but kind may be left out.';
    END IF;
    RETURN QUERY SELECT e.*
    FROM (
        SELECT array_agg(s.spec->>'kind' ORDER BY s.ord) AS kinds,
            array_agg(coalesce(s.spec->'args', '{}') ORDER BY s.ord) AS args,
            array_agg(s.spec->>'queue' ORDER BY s.ord) AS queues,
            array_agg((s.spec->>'run_at')::timestamptz ORDER BY s.ord) AS run_ats,
            array_agg((s.spec->>'run_in')::interval ORDER BY s.ord) AS run_ins,
            array_agg((s.spec->>'priority')::numeric::bigint ORDER BY s.ord) AS priorities,
            array_agg((s.spec->>'max_attempts')::numeric::bigint ORDER BY s.ord) AS max_attempts,
            array_agg((s.spec->>'timeout')::interval ORDER BY s.ord) AS timeouts,
            array_agg(s.spec->>'order_key' ORDER BY s.ord) AS order_keys,
            array_agg(s.spec->>'unique_key' ORDER BY s.ord) AS unique_keys,
            array_agg((SELECT string_agg(x, ',') FROM jsonb_array_elements_text(s.spec->'unique_states') x) ORDER BY s.ord) AS unique_states,
            array_agg(nullif(s.spec->'metadata', 'null') ORDER BY s.ord) AS metadatas
        FROM jsonb_array_elements(specs) WITH ORDINALITY s(spec, ord)
    ) a
    CROSS JOIN LATERAL enqueue_jobs(a.kinds, a.args, a.queues, a.run_ats, a.run_ins, a.priorities, a.max_attempts, a.timeouts,
        a.order_keys, a.unique_keys, a.unique_states, a.metadatas, enqueue_many.max_args_size, enqueue_many.max_metadata_size, false) e;
END
$$;
