-- Reservations (migration 009) in insert_jobs (migration 010), which Go's batches and the
-- SQL enqueue share: its two new arguments, holds and backoffs (aligned with the others,
-- or NULL when no job of the batch is reserved or has its own retry policy), insert a job
-- held for that long, announced to the expirers, or with its own backoff policy; and a
-- held job keeps its unique key, as in Go's own statements. Calls written for 010's
-- insert_jobs (enqueue_jobs) resolve to the new one unchanged: the new arguments default
-- to NULL.

-- Tells every client's expirer, in an 'r:<µs since the epoch>' control message on
-- channel, of deadline, the earliest of the reservations a statement inserted: an expirer
-- sleeps until the earliest deadline it knows of, and an earlier one must wake it.
-- Returns true, for a CTE that must run.
CREATE FUNCTION announce_held(channel text, deadline timestamptz) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT pg_notify(channel, 'r:' || floor(extract(epoch FROM deadline) * 1000000)::bigint) IS NULL
$$;

DROP FUNCTION insert_jobs(text[], text[], jsonb[], timestamptz[], integer[], integer[], smallint[], text[], bytea[],
    jsonb[], text[], text[]);

-- Inserts jobs given as aligned arrays (see migration 010), reservations and jobs with
-- their own retry policies among them.
CREATE FUNCTION insert_jobs(
    kinds text[], queues text[], args jsonb[], run_ats timestamptz[], max_attempts integer[],
    timeouts_ms integer[], priorities smallint[], order_keys text[], payloads bytea[],
    metadatas jsonb[], unique_keys text[], unique_states text[],
    holds interval[] DEFAULT NULL, backoffs jsonb[] DEFAULT NULL)
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
            SELECT wake(channel, queue, min(run_at), max(priority), array_agg(DISTINCT kind))
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
            SELECT wake(channel, queue, min(run_at), max(priority), array_agg(DISTINCT kind))
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
