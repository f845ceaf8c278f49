-- Wakeups addressed to as few waiting clients as the jobs need, instead of to all.
--
-- A wakeup on the schema's channel reaches every client, and each claims: when the workers
-- keep up with the jobs, so that every client waits, a job cost a claim per client, all but
-- one finding nothing (5.6 claims a job with 10 worker processes, in the README). Now each
-- client also LISTENs on a channel of its own (client_channel), and a job wakes only as
-- many waiting clients as there are jobs, each on its own channel, plus one more as their
-- backup, which claims a moment later (relay's dispatcher.Backup), in case a woken client
-- cannot take its job: it died, its listener is reconnecting, or its workers are all taken.
--
-- Only clients known to be alive are addressed: each holds its client lock (client_lock),
-- exclusively, on the connection that holds its wait locks, and a producer tries it. A
-- client that died lets go of it with its connection, at once, while its row in clients
-- still looks live for twice its lease. When fewer live clients wait than the jobs need
-- plus the backup, the wakeup goes on the schema's channel to all, as before. So does a
-- wakeup at REPEATABLE READ or SERIALIZABLE, whose snapshot may not see a client that has
-- just started to wait. Clients of earlier versions hold no client lock and LISTEN on no
-- channel of their own: they are never addressed, and hear only the wakeups sent to all
-- (the jobs addressed to others start as promptly).

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
        waiting := ARRAY(
            SELECT c.id FROM clients c
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
            ORDER BY random());
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

-- The wakeup of jobs of unknown number (the statements of relay's versions before
-- migration 015): every waiting client is woken.
CREATE OR REPLACE FUNCTION wake(channel text, queue text, run_at timestamptz, priority integer, kinds text[])
RETURNS boolean
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT wake(channel, queue, run_at, priority, kinds, NULL)
$$;

-- insert_jobs (Go's batches, and the SQL functions enqueue() and enqueue_many(), for every
-- language) counts its jobs per queue, so that a batch smaller than the clients that wait
-- wakes only as many, and a single job from SQL is addressed like one from Go. Only its
-- two calls of wake change.
CREATE OR REPLACE FUNCTION insert_jobs(
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
