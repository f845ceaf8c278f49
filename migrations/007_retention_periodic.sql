-- Retention (pruning finished jobs and dead clients) and periodic schedules.

-- Finished jobs by state, queue and the time they finished: a client's pruner deletes,
-- for each state and queue, the jobs that finished before their retention's cutoff, one
-- index range each, however many younger jobs the table keeps. (jobs_finished_idx is in
-- id order, and a job's id says when it was created, not when it finished.)
--
-- Built in the migration's transaction, so writes to jobs wait while it is built (about a
-- second per million finished jobs). On a large table, build it beforehand without
-- blocking writes, with this statement's index as CREATE INDEX CONCURRENTLY: this one then
-- finds it and does nothing.
CREATE INDEX IF NOT EXISTS jobs_expiry_idx ON jobs (state, queue, finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');

-- The periodic schedule that enqueued a job (relay.Schedule), and the slot it was
-- enqueued for; NULL for every other job.
ALTER TABLE jobs ADD COLUMN schedule text;
ALTER TABLE jobs ADD COLUMN schedule_slot timestamptz;

-- The periodic schedules, as the clients that have them registered them. Every client
-- that has a schedule may enqueue its slots; the row, locked while one does, makes each
-- slot enqueued once: next_slot only moves forward, and a slot before it is never enqueued
-- again, even once its job has been deleted.
CREATE TABLE periodic (
    name       text PRIMARY KEY CHECK (octet_length(name) BETWEEN 1 AND 128),
    spec       text        NOT NULL,  -- 'cron <spec> <time zone>' or 'every <interval>'
    kind       text        NOT NULL,
    queue      text        NOT NULL,
    catch_up   text        NOT NULL,  -- what a client does with missed slots
    next_slot  timestamptz,           -- the next slot to enqueue; the ones before are done
    last_slot  timestamptz,           -- the latest slot enqueued
    last_job   bigint,                -- the job of last_slot (it may have been deleted since)
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()  -- when a client last registered it
);

-- The schedules a client has, as its heartbeat reports them: a schedule that no live
-- client has is orphaned, and no longer enqueued.
ALTER TABLE clients ADD COLUMN schedules text[] NOT NULL DEFAULT '{}';
