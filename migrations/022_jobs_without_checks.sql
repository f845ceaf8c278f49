-- The jobs table without CHECK constraints.
--
-- PostgreSQL reads a table's CHECK constraints from their stored text and plans them
-- again at every INSERT and UPDATE statement, however many rows it writes: for the nine
-- of jobs, 6.7 KB of node text parsed and nine expressions prepared, each time. That was
-- 7 % of the server's CPU in the latency workload at 1,000 jobs/s (perf: ExecConstraints,
-- most of it stringToNode), and with pgbench a one-row insert into a copy of jobs with
-- them committed about 20 % fewer transactions a second than into one without (15–30 %
-- over six rounds). Every enqueue, hand-off, claim, acknowledgement and outcome batch
-- paid it.
--
-- They guarded nothing that is not guarded before: relay's Go API refuses every one of
-- these values before it sends anything, the SQL functions enqueue() and enqueue_many()
-- check the same limits with errors that say which (job_problem, migration 010), and
-- every other write of jobs is relay's own SQL. A row written to the table directly,
-- bypassing both, is not checked any more; the README says not to. NOT NULL stays: it
-- costs nothing to check.
--
-- Dropping a constraint changes only the catalog and reads no row: it needs the table's
-- ACCESS EXCLUSIVE lock, and holds it for a moment once it has it (relay.Migrate waits
-- for a lock at most a second at a time, so as not to hold up every statement on jobs
-- behind a long transaction).
ALTER TABLE jobs
    DROP CONSTRAINT IF EXISTS jobs_kind_check,
    DROP CONSTRAINT IF EXISTS jobs_queue_check,
    DROP CONSTRAINT IF EXISTS jobs_state_check,
    DROP CONSTRAINT IF EXISTS jobs_attempt_check,
    DROP CONSTRAINT IF EXISTS jobs_max_attempts_check,
    DROP CONSTRAINT IF EXISTS jobs_timeout_ms_check,
    DROP CONSTRAINT IF EXISTS jobs_priority_check,
    DROP CONSTRAINT IF EXISTS jobs_order_key_check,
    DROP CONSTRAINT IF EXISTS jobs_unique_key_check;
