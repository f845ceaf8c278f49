-- Addressed wakeups only to clients that hear them.
--
-- wake() addressed a job's wakeup to live clients, those that hold their client lock (migration
-- 015). A client holds that lock on the connection of its wait locks, not on its listener's:
-- while its listener reconnects (the server restarted, or killed the listener's backend), the
-- client is alive but hears nothing, and a wakeup addressed to it was lost. Its backup's
-- wakeup then started the job, 25 ms later; with every client's listener reconnecting at once
-- (a storm of killed connections), jobs waited for the clients' catch-up claims. hand_off has
-- asked for the listening lock too since migration 016; wake() now does the same. When fewer
-- clients than needed hear, it wakes every client on the schema's channel, as before.
--
-- A client of an earlier version takes no listening lock: it is no longer addressed, and is
-- woken on the schema's channel, which it also LISTENs on.

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
            -- tried in order, and no more than needed; only clients that hear: alive, and
            -- their listener's connection holding its listening lock
            woken := ARRAY(SELECT id FROM unnest(waiting) id
                           WHERE client_alive(channel, id) AND client_listening(channel, id) LIMIT jobs + 1);
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
