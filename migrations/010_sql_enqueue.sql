-- Enqueue from SQL, and so from any language: enqueue() and enqueue_many() insert jobs in
-- the caller's transaction with the checks and the semantics of Go's relay.Enqueue and
-- relay.EnqueueMany. Go's enqueues and these functions share insert_jobs, which inserts
-- jobs already checked, settles unique keys and ordered queues, and wakes their queues.

-- An order key for a queue that is not ordered (or has no settings at all) is refused,
-- now with a hint that says how to declare it ordered from outside Go too.
CREATE OR REPLACE FUNCTION not_ordered(queue text) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'queue "%" is not ordered; declare it ordered (relay.SetQueue) before enqueueing with an order key', queue
        USING ERRCODE = 'RLY01', DETAIL = queue,
              HINT = format('Declare it ordered with `relay queue set %s --ordered` (or relay.SetQueue in Go), or enqueue without an order key.', queue);
END
$$;

-- Inserts jobs given as aligned arrays, one element per job, and sends one wakeup per
-- queue through wake(), which notifies only when it can wake something. Returns each
-- job's id in the order of the arrays, and whether it was a duplicate: a job with a
-- unique key (unique_keys[i]) held by a job in one of the stored states unique_states[i]
-- (comma-separated; pending and running always among them) is not inserted and gets the
-- holder's id; of jobs sharing a free key within the call, the first is inserted and the
-- others get its id. NULL run_at: now; NULL max_attempts: the kind's default, set at the
-- first claim; NULL timeout_ms: the kind's or the queue's. In an ordered queue a job
-- without an order key joins the queue-wide sequence ''; an order key for a queue that is
-- not ordered is refused (not_ordered).
--
-- It checks nothing else: Go checks every job before it calls this, and enqueue() and
-- enqueue_many() call it through enqueue_jobs, which checks.
CREATE FUNCTION insert_jobs(
    kinds text[], queues text[], args jsonb[], run_ats timestamptz[], max_attempts integer[],
    timeouts_ms integer[], priorities smallint[], order_keys text[], payloads bytea[],
    metadatas jsonb[], unique_keys text[], unique_states text[])
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
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
            INSERT INTO jobs (kind, queue, args, run_at, max_attempts, timeout_ms, priority, order_key, payload, metadata)
            SELECT j.kind, j.queue, j.args, coalesce(j.run_at, now()), j.max_attempts, j.timeout_ms, j.priority,
                CASE WHEN q.ordered THEN coalesce(j.order_key, '') WHEN j.order_key IS NOT NULL THEN not_ordered(j.queue) END,
                j.payload, j.metadata
            FROM unnest(insert_jobs.kinds, insert_jobs.queues, insert_jobs.args, insert_jobs.run_ats, insert_jobs.max_attempts,
                        insert_jobs.timeouts_ms, insert_jobs.priorities, insert_jobs.order_keys, insert_jobs.payloads,
                        insert_jobs.metadatas) WITH ORDINALITY
                AS j(kind, queue, args, run_at, max_attempts, timeout_ms, priority, order_key, payload, metadata, ord)
            LEFT JOIN queues q ON q.name = j.queue
            ORDER BY j.ord
            RETURNING id, queue, run_at, priority, kind
        ), notified AS (
            SELECT wake(channel, queue, min(run_at), max(priority), array_agg(DISTINCT kind))
            FROM job
            GROUP BY queue
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
                 ORDER BY h.state IN ('pending', 'running') DESC, h.id DESC
                 LIMIT 1) AS held
            FROM unnest(insert_jobs.kinds, insert_jobs.queues, insert_jobs.args, insert_jobs.run_ats, insert_jobs.max_attempts,
                        insert_jobs.timeouts_ms, insert_jobs.priorities, insert_jobs.order_keys, insert_jobs.payloads,
                        insert_jobs.metadatas, insert_jobs.unique_keys, insert_jobs.unique_states) WITH ORDINALITY
                AS j(kind, queue, args, run_at, max_attempts, timeout_ms, priority, order_key, payload, metadata,
                     unique_key, unique_states, ord)
            LEFT JOIN queues q ON q.name = j.queue
            WHERE todo IS NULL OR j.ord = ANY (todo)
        ), job AS (
            INSERT INTO jobs (kind, queue, args, run_at, max_attempts, timeout_ms, priority, order_key, payload, unique_key, metadata)
            SELECT kind, queue, args, coalesce(run_at, now()), max_attempts, timeout_ms, priority,
                CASE WHEN ordered THEN coalesce(order_key, '') WHEN order_key IS NOT NULL THEN not_ordered(queue) END,
                payload, unique_key, metadata
            FROM new
            WHERE held IS NULL
            ORDER BY ord
            ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('pending', 'running') DO NOTHING
            RETURNING id, queue, run_at, priority, unique_key, kind
        ), notified AS (
            SELECT wake(channel, queue, min(run_at), max(priority), array_agg(DISTINCT kind))
            FROM job
            GROUP BY queue
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
                AND h.unique_key = n.unique_key AND h.state IN ('pending', 'running')
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
