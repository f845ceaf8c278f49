-- Hand-offs planned once per connection, not at every enqueue.
--
-- hand_off picked its client with a query of unnest(waiting), the array of waiting
-- clients. PL/pgSQL runs such a query as a prepared statement whose parameter is the
-- array, and PostgreSQL plans a prepared statement for its values at its first five runs
-- and then keeps the generic plan only if it estimates it no costlier. Planned for a
-- parameter, unnest is estimated at 100 rows, against the array's real length when planned
-- for its value, so the generic plan always looked costlier and the query was planned
-- afresh at every call: 0.18 ms of the 0.64 the producer's statement took in the latency
-- workload (pg_stat_statements with track = all: 5,001 plans in 5,000 calls). A loop over
-- the array runs one query per client with a scalar parameter, whose generic plan
-- PostgreSQL keeps after five runs. The loop stops at the first client that qualifies, as
-- LIMIT 1 did, and tries the clients in the same order.
--
-- waiting_clients, which hand_off and wake() call, was planned afresh at every call too
-- wherever its plan for the values at hand, in which handing_off and kinds fold away,
-- looked cheaper than the generic one (in the tests, not in the bench): it now runs its
-- generic plan from its first call. (wake() picks the clients it addresses with a query of
-- unnest too, but under LIMIT jobs + 1, whose generic plan PostgreSQL keeps.)

CREATE OR REPLACE FUNCTION waiting_clients(queue text, kinds text[], handing_off boolean) RETURNS text[]
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

CREATE OR REPLACE FUNCTION hand_off(channel text, job bigint, queue text, run_at timestamptz, priority integer, kind text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    waiting text[]; -- the live clients that run hand-offs and may wait, in random order
    client  text;
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
        -- A loop over the clients, not a query of unnest(waiting) (migration 020): planned
        -- for a parameter, unnest is estimated at 100 rows, so PostgreSQL found the generic
        -- plan costlier than one made for the array at hand and planned that query afresh at
        -- every hand-off, 0.18 ms of the producer's statement.
        FOREACH client IN ARRAY waiting LOOP
            IF (SELECT count(*) FROM (SELECT FROM jobs f
                                      WHERE f.state = 'running' AND f.lease_expires_at IS NULL AND f.attempted_by = client
                                      LIMIT 8) unacknowledged) < 8
               AND client_alive(channel, client) AND client_listening(channel, client) THEN
                target := client;
                EXIT;
            END IF;
        END LOOP;
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
