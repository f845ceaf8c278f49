-- Listing and counting jobs (relay.ListJobs, relay.CountJobs) over millions of finished jobs.
--
-- Unfinished jobs already have small indexes of their own (jobs_claim_idx for pending,
-- jobs_lease_idx for running); finished jobs are the bulk of the table and had none. This
-- index holds only them, so a job enters it once, when its final outcome is written, and
-- claims and retries never touch it. Each (state, queue) is one range, newest id last: a
-- page of a state and queue is one backward range scan, a page of a state across queues
-- one such scan per queue, and counts by state and queue an index-only scan. kind and
-- created_at ride along so that the kind and time filters are checked on the entry, not
-- on the table row.
--
-- Built in the migration's transaction, so writes to jobs wait while it is built (about a
-- second per million finished jobs). On a large table, build it beforehand without
-- blocking writes, with this statement's index as CREATE INDEX CONCURRENTLY: this one then
-- finds it and does nothing.
CREATE INDEX IF NOT EXISTS jobs_finished_idx ON jobs (state, queue, id) INCLUDE (kind, created_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
