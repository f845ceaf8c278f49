-- The SQL of deleting jobs (relay.DeleteJob) and of the bulk actions on the jobs a listing
-- filter selects (relay.DeleteJobs, RetryJobs, CancelJobs). None of it is on a hot path.
--
-- A bulk action works through the jobs one page at a time, newest first: each page is
-- one statement, that lists the ids of the page ({listing}: list.sql's listing of the
-- filter, with @after and @limit), locks those still in the states the action applies to,
-- changes them, and says where the next page starts. A page is one short transaction, so
-- an action on millions of jobs never holds many locks for long.

-- name: deleteJob
-- Deletes job @id unless it is running, and returns its state before; no row if there is
-- no such job.
WITH target AS (
    SELECT id, state, blocking FROM {schema}.jobs WHERE id = @id FOR UPDATE
), {deleteTarget}
SELECT state FROM target
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: deleteTarget
-- The CTEs "deleted" and "notified" that delete the jobs of the CTE "target" (id, state,
-- blocking; rows locked) that are not running: a running job's handler would go on
-- without its row. A failed job that blocked its ordered key, or a held one, frees it, so
-- its queue is woken on the schema's channel.
deleted AS (
    DELETE FROM {schema}.jobs j
    USING target t
    WHERE j.id = t.id AND t.state <> 'running'
    RETURNING j.queue, t.blocking OR t.state = 'held' AS freed
), notified AS (
    SELECT pg_notify({channel}, {schema}.wakeup_payload(queue, now(), 32767)) FROM deleted WHERE freed GROUP BY queue
)

-- name: bulkLocked
-- The CTEs "page", the ids of one page of the listing, and "locked", those of its jobs
-- still in one of the stored states @stored once locked (a job that changed state since
-- the listing's snapshot is left alone). Locked in id order, so that two bulk actions
-- never deadlock on each other; found by primary key, from an array of the page's ids
-- (see listByState).
page AS MATERIALIZED (
    {listing}
), locked AS (
    SELECT j.id, j.state, j.blocking, j.unique_key
    FROM {schema}.jobs j
    WHERE j.id = ANY (ARRAY(SELECT id FROM page)) AND j.state = ANY (@stored::text[])
    ORDER BY j.id
    FOR UPDATE OF j
)

-- name: bulkCount
-- How many jobs the listing selects.
SELECT count(*) FROM (
    {listing}
) page;

-- name: bulkDelete
-- Deletes the page's jobs but running ones. Returns how many it deleted, the lowest id of
-- the page (the next page starts below it) and how many jobs the page listed.
WITH {bulkLocked}, target AS (
    SELECT * FROM locked
), {deleteTarget}
SELECT (SELECT count(*) FROM deleted), (SELECT min(id) FROM page), (SELECT count(*) FROM page)
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: bulkRetry
-- Retries the page's failed and cancelled jobs, as bulkDelete. A job whose unique key
-- another job holds now is left as it is (relay.Retry would refuse it), and so are all but
-- the newest of the page's jobs that share a key.
WITH {bulkLocked}, target AS (
    SELECT l.id, l.state FROM locked l
    WHERE l.unique_key IS NULL
       OR (l.id = (SELECT max(o.id) FROM locked o WHERE o.unique_key = l.unique_key)
           AND NOT EXISTS (
               SELECT FROM {schema}.jobs h WHERE h.unique_key = l.unique_key AND h.state IN ('pending', 'running', 'held')))
), {retryTarget}
SELECT (SELECT count(*) FROM retried), (SELECT min(id) FROM page), (SELECT count(*) FROM page)
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: bulkCancel
-- Cancels the page's pending, running and held jobs, as bulkDelete; their clients cancel the
-- handlers of running ones.
WITH {bulkLocked}, target AS (
    SELECT * FROM locked
), {cancelTarget}
SELECT (SELECT count(*) FROM cancelled), (SELECT min(id) FROM page), (SELECT count(*) FROM page)
WHERE (SELECT count(*) FROM notified) >= 0;
