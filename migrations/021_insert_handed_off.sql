-- A job handed off by its insert: inserted running, not inserted pending and then updated.
--
-- hand_off (migration 016) runs after the insert, in its RETURNING: it picks a waiting
-- client and updates the new row to running, leased to it. That update writes a second
-- version of the row, and a new entry in each of the jobs table's indexes, since state is
-- in their predicates: most of what a hand-off costs the producer's statement. Its two
-- halves are now functions of their own, so that a statement can pick the client before it
-- inserts, and insert the job running:
--   - hand_off_target picks the client, or returns NULL;
--   - send_hand_off sends a job leased to a client its hand-off.
-- hand_off is those two around its update, as before, for statements that insert first
-- (relay's producers before this migration, and relay's own while no client waited at the
-- queue's last enqueue: see insertHandedOff in internal/store/queries.sql).

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

CREATE OR REPLACE FUNCTION hand_off(channel text, job bigint, queue text, run_at timestamptz, priority integer, kind text)
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
