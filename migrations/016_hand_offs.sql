-- Hand-offs: a job enqueued while a client waits for work is leased to that client by the
-- producer's own statement, and the wakeup carries the job, so that the client starts it
-- without a claim.
--
-- An idle pickup was two process wake-ups after the commit: the listener's backend, to
-- deliver the notification, then the one that ran the client's claim, plus the claim
-- itself (0.77–0.91 ms at p50 in the latency workload). With a hand-off it is the first
-- alone (0.10–0.15 ms). The producer pays for it with the claim's work, in the statement
-- that inserts the job: an update of the row by its key and the notification's payload.
--
-- hand_off stands in for wake() where Go enqueues one job (relay.Enqueue and EnqueueJob,
-- unique jobs included; EnqueueMany and the SQL functions wake as before). It hands the
-- job off only when all of these hold,
-- and otherwise sends the wakeup as wake() does:
-- - the job is due now, in a queue that is neither ordered, limited nor paused (their
--   claims decide which job may start);
-- - the transaction runs at READ COMMITTED (a snapshot taken at REPEATABLE READ may not
--   see a client that has just started to wait);
-- - it is the transaction's first hand-off: a transaction that enqueues many jobs one at a
--   time commits them all at once, and a waiting client would be handed them all, so the
--   rest wake it as before and it claims them (relay.handed_off, a setting local to the
--   transaction, says so);
-- - a live client that runs hand-offs (clients.hands_off: version 016 and later, not
--   PollOnly) waits on the queue and handles the job's kind: it holds its client lock,
--   its listener's connection holds its listening lock (so it hears the hand-off), its
--   heartbeat is current, and it has no busy dispatcher of the queue;
-- - the job, written out as the payload, fits in a notification (under 8,000 bytes).
--
-- The job is then running, its attempt counted, leased to that client with no expiry
-- yet (lease_expires_at NULL): the producer's transaction may commit long after this
-- statement, and a lease that ran from it could expire before the client has even heard
-- of the job. The client acknowledges the hand-off as it starts the job, which gives the
-- job a lease like a claim's. Until then:
-- - no other job is handed off to that client: one that does not hear its hand-offs (its
--   listener away, or the client cut off by the network while its session lives on)
--   strands one job, not every job enqueued meanwhile;
-- - a client that cannot take the job (every worker busy, or stopping) gives it back at
--   once, uncounted and pending, and wakes the queue as wake() does;
-- - a client whose listener was away when the job committed takes it when it LISTENs
--   again;
-- - the rescuers retry it once its client is no longer alive (stopped, its heartbeat out
--   of date, or its client lock free), as they retry an expired lease, but uncounted if
--   the client stopped cleanly, which it does only once every job it started has ended.

-- Whether the client runs hand-offs, and the default max attempts of each of its kinds
-- (aligned with kinds), which a handed-off job takes as a claim would give it.
ALTER TABLE clients
    ADD COLUMN hands_off boolean NOT NULL DEFAULT false,
    ADD COLUMN kind_attempts integer[];

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
-- if it runs hand-offs. PL/pgSQL, so that its plan is kept from call to call.
CREATE FUNCTION waiting_clients(queue text, kinds text[], handing_off boolean) RETURNS text[]
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
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

-- wake() with its query of waiting clients in waiting_clients, which hand_off shares.
CREATE OR REPLACE FUNCTION wake(channel text, queue text, run_at timestamptz, priority integer, kinds text[], jobs bigint)
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

-- Hands job (just inserted, of queue, due at run_at, with priority and kind) off to a
-- waiting client, or else sends the wakeup wake() sends. Returns whether it notified.
CREATE FUNCTION hand_off(channel text, job bigint, queue text, run_at timestamptz, priority integer, kind text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    waiting text[]; -- the live clients that run hand-offs and may wait, in random order
    target  text;
    payload text;
BEGIN
    IF wake_needless(channel, queue) THEN
        RETURN false;
    END IF;
    IF run_at <= now() AND current_setting('transaction_isolation') = 'read committed'
       AND current_setting('relay.handed_off', true) IS DISTINCT FROM 'on'
       AND NOT EXISTS (SELECT FROM queues q WHERE q.name = hand_off.queue
                       AND (q.ordered OR q.global_limit IS NOT NULL OR q.paused_at IS NOT NULL)) THEN
        waiting := waiting_clients(queue, ARRAY[kind], true);
        -- Not to a client that has not acknowledged its last hand-off yet: one whose
        -- listener is away, or cut off from it by the network, would leave each job handed
        -- to it waiting, and a client that hears them acknowledges each at once.
        target := (SELECT w.id FROM unnest(waiting) w(id)
                   WHERE NOT EXISTS (SELECT FROM jobs f
                                     WHERE f.state = 'running' AND f.lease_expires_at IS NULL AND f.attempted_by = w.id)
                     AND client_alive(channel, w.id) AND client_listening(channel, w.id)
                   LIMIT 1);
    END IF;
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
        -- times in microseconds since the Unix epoch, whatever the session's time zone
        RETURNING json_build_object(
            'id', j.id, 'kind', j.kind, 'queue', j.queue, 'args', j.args, 'attempt', j.attempt,
            'max_attempts', j.max_attempts, 'created_at', floor(extract(epoch FROM j.created_at) * 1000000)::bigint,
            'run_at', floor(extract(epoch FROM j.run_at) * 1000000)::bigint,
            'attempted_at', floor(extract(epoch FROM j.attempted_at) * 1000000)::bigint,
            'timeout_ms', j.timeout_ms, 'priority', j.priority,
            'payload', encode(j.payload, 'base64'), 'metadata', j.metadata, 'backoff', j.backoff,
            'schedule', j.schedule, 'schedule_slot', floor(extract(epoch FROM j.schedule_slot) * 1000000)::bigint)::text
        INTO payload;
        IF octet_length(payload) < 7900 THEN
            PERFORM set_config('relay.handed_off', 'on', true);
            PERFORM pg_notify(client_channel(channel, target), 'h:' || payload);
            RETURN true;
        ELSIF payload IS NOT NULL THEN
            -- Escaped characters made it too large after all: pending again, as it was.
            UPDATE jobs j SET state = 'pending', attempt = j.attempt - 1, attempted_at = NULL, attempted_by = NULL
            WHERE j.id = job;
        END IF;
    END IF;
    RETURN wake(channel, queue, run_at, priority, ARRAY[kind], 1);
END
$$;
