-- Wakeups only when they can wake something.
--
-- PostgreSQL serializes the commits of every transaction that called pg_notify, database
-- wide (a lock held from PreCommit_Notify until the commit is flushed). An enqueue that
-- always notified capped a whole application at about 1,400 enqueueing transactions per
-- second, however many connections it had. Producers now ask wake() instead, which sends
-- the NOTIFY only when a live client has a dispatcher of the queue waiting for one (or no
-- dispatcher for it yet: a queue of a group). A dispatcher busy with a backlog claims again
-- without being told, and finds the job then.
--
-- The lost wakeup — a producer that saw a dispatcher busy, while that dispatcher had just
-- made its last empty claim and was going to sleep — is closed by a lock and an order:
--   - a producer takes a shared transaction-level advisory lock on the queue (a key of the
--     schema's channel and one of 1,024 buckets of queue names) before it looks, and holds
--     it until its transaction ends; it looks with a fresh snapshot (a statement of this
--     VOLATILE function), so it sees a dispatcher's "waiting" committed after its own
--     statement began;
--   - a dispatcher that was busy first commits "waiting", then waits until every
--     transaction that held the lock at that moment has ended (it reads their virtual
--     transaction ids from pg_locks and waits for them, so new producers never wait for
--     it, nor it for them), and only then claims once more before it sleeps.
-- A producer that looked before "waiting" committed has committed (or rolled back) by the
-- time of that last claim, which sees its job; one that looked after it saw "waiting" and
-- notifies. Transactions at REPEATABLE READ or SERIALIZABLE cannot take a fresh snapshot,
-- so their enqueues always notify.

-- The dispatchers of every client, and whether each waits for a wakeup. A row is written
-- when a dispatcher starts (waiting) and when it turns busy or goes back to waiting; a
-- queue of a live client with no row counts as waiting. UNLOGGED: no WAL for these
-- frequent small writes, and a crash empties the table, which makes every producer notify:
-- the safe side.
CREATE UNLOGGED TABLE dispatchers (
    queue     text    NOT NULL,
    client_id text    NOT NULL,
    waiting   boolean NOT NULL DEFAULT true,
    PRIMARY KEY (queue, client_id)
);

-- The advisory lock key of queue's wakeups: (hash of the schema's channel, one of 1,024
-- buckets of queue names). Buckets bound the locks one transaction takes however many
-- queues it enqueues into; two queues that share one only make a dispatcher wait for a
-- producer of the other.
CREATE FUNCTION wake_lock(channel text, queue text) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[hashtext(channel), hashtext(queue) & 1023]
$$;

-- Sends the wakeup of a job of queue (its run_at and priority, as wakeup_payload takes
-- them) on channel if it can wake something, and reports whether it did. A client counts
-- as live for it until twice its lease TTL has passed since its last heartbeat: longer
-- than other clients wait to rescue its jobs, so that a client cut off for a while (whose
-- jobs were rescued, perhaps by itself) is still woken, while one that died stops costing
-- notifications soon after. kinds are the
-- kinds of the jobs it announces, or NULL for any (a job that ended and freed an ordered
-- key or a limited slot, which any job of the queue may take). Its search_path is the
-- schema it was created in, whatever the caller's.
CREATE FUNCTION wake(channel text, queue text, run_at timestamptz, priority integer, kinds text[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    lock integer[] := wake_lock(channel, queue);
BEGIN
    IF current_setting('transaction_isolation') = 'read committed' THEN
        PERFORM pg_advisory_xact_lock_shared(lock[1], lock[2]);
        IF NOT EXISTS (
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
    END IF;
    PERFORM pg_notify(channel, wakeup_payload(queue, run_at, priority));
    RETURN true;
END
$$;
