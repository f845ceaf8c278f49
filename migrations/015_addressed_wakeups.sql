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

-- The wakeup of jobs of unknown number (relay's statements before this migration, and
-- insert_jobs, whose batches may hold many): every waiting client is woken, as before.
CREATE OR REPLACE FUNCTION wake(channel text, queue text, run_at timestamptz, priority integer, kinds text[])
RETURNS boolean
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT wake(channel, queue, run_at, priority, kinds, NULL)
$$;
