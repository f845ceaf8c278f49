-- Wakeups that cost a producer nothing while every dispatcher of its queue is busy.
--
-- Migration 006 made an enqueue notify only when a dispatcher of its queue waits, but
-- finding that out was a query on clients and dispatchers in every enqueue, about a fifth
-- of the enqueue's server time. Now a client also says it in the lock manager, which
-- every session sees at once, without a snapshot: while any of its dispatchers of a queue
-- may wait for a wakeup, the client holds a shared session-level advisory lock, the
-- queue's wait lock, on a connection of its own; a client that serves groups of queues
-- holds the wait lock of '*' instead, for its whole life. A producer tries each of the
-- two locks exclusively, and lets go at once: when both are free, no dispatcher can be
-- waiting, and the enqueue skips the rest of wake(). Otherwise wake() asks the tables, as
-- before, which also knows the kinds each client handles and the queues of its groups.
--
-- The protocol of migration 006 still loses no wakeup, with one change: the lock that
-- marks a producer still to commit is no longer the queue's wakeup lock (wake_lock, an
-- advisory lock every producer took and released: two more operations on one hot lock in
-- every enqueue), but the RowExclusiveLock on the jobs table that its INSERT or UPDATE
-- holds anyway, taken before the statement's snapshot. A dispatcher takes its wait lock
-- before it commits "waiting", and then waits for every transaction that holds that lock;
-- a producer looks at the wait locks, and at the tables, after it took it. So a producer
-- that found them free has ended before the dispatcher's next claim. A client that dies
-- releases its locks with its connection: producers stop asking for it at once.
--
-- Clients of earlier versions hold no wait locks and wait for wake_lock's holders (the
-- function stays for them): until every client runs this version, enqueues may not wake
-- them, and their jobs start at their next poll.

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

CREATE OR REPLACE FUNCTION wake(channel text, queue text, run_at timestamptz, priority integer, kinds text[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    IF wake_needless(channel, queue) THEN
        RETURN false;
    END IF;
    IF current_setting('transaction_isolation') = 'read committed' AND NOT EXISTS (
        SELECT FROM clients c
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
    ) THEN
        RETURN false;
    END IF;
    PERFORM pg_notify(channel, wakeup_payload(queue, run_at, priority));
    RETURN true;
END
$$;
