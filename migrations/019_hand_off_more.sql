-- Up to 8 hand-offs a client has not acknowledged, instead of one.
--
-- Migration 016 handed a client no job while it had not acknowledged the last one handed
-- to it, so that a client that does not hear its hand-offs strands one job. But a client
-- that hears them acknowledges each only as its job starts, a round trip after the commit,
-- and where jobs come faster than that (a producer committing one a millisecond, or
-- several producers) most of them found the client's last hand-off unacknowledged, woke
-- the queue instead, and waited for a claim: the enqueue workload's idle pickup p50 was
-- 0.3–0.7 ms where a hand-off takes 0.05–0.1. With up to 8, a client that does not hear
-- strands 8 jobs (rescued once it is found dead, as before), and one that hears is handed
-- nearly every job enqueued while it waits. More (16) was measured worse: handed jobs one
-- at a time, on a saturated machine, took longer than claims that take several at once.

CREATE OR REPLACE FUNCTION hand_off(channel text, job bigint, queue text, run_at timestamptz, priority integer, kind text)
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
        -- Not to a client that has 8 hand-offs unacknowledged: one whose listener is away,
        -- or cut off from it by the network, would leave each job handed to it waiting (a
        -- client that hears them acknowledges each as it starts), so it strands no more.
        target := (SELECT w.id FROM unnest(waiting) w(id)
                   WHERE (SELECT count(*) FROM (SELECT FROM jobs f
                                                WHERE f.state = 'running' AND f.lease_expires_at IS NULL AND f.attempted_by = w.id
                                                LIMIT 8) unacknowledged) < 8
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
