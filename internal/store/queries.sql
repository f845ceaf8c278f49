-- The SQL of relay's hot paths, one statement per round trip. {schema} is replaced with
-- the quoted schema name when a Store is made, and {channel} with its wakeup channel as a
-- string literal (a constant, which the planner folds into whatever it is hashed or
-- concatenated in); everything else is a bind parameter, named (@kind) after the field of
-- the statement's parameter struct that passes it (params.go).
--
-- Every statement that makes a job pending (or frees an ordered key or a limited slot)
-- asks the schema's wake function, in the same transaction, to send a wakeup: it does only
-- when a dispatcher of the queue waits for one (see migration 006 for the protocol, and
-- notify.go for the payload's format). Control messages (cancel, queue settings, the
-- deadlines of reservations) are always sent.

-- name: insert
-- Inserts one job (@run_at NULL for now; @payload the raw args, or NULL; @metadata a JSON
-- object, or NULL; @backoff its own retry policy, or NULL) and wakes its queue; returns
-- its id, and whether a NOTIFY was sent. In an ordered queue a job without a key joins the
-- queue-wide sequence ''; a key given for a queue that is not ordered is refused. The
-- wakeup is an expression of RETURNING, evaluated once for the one row: no CTE to scan and
-- no join, which with pgbench at 32 connections made the statement 10–15 % slower than a
-- plain INSERT of its row. Whether the queue is ordered comes from queue_ordered (migration
-- 017), which the planner inlines as a comparison with a constant list: a subquery of
-- queues cost another 5 %.
-- PostgreSQL builds a statement's expressions anew at every execution, which for one row
-- is most of its cost: a reservation has a statement of its own (insertHeld), so that
-- this one has no branch for it, and the channel is a literal, whose hashes in
-- wake_needless the planner folds into constants. Together they made the transaction
-- 6–8 % faster (pgbench, 32 connections).
INSERT INTO {schema}.jobs (kind, queue, args, run_at, timeout_ms, priority, order_key, payload, metadata, backoff, max_attempts)
VALUES ({newJob}, @max_attempts)
RETURNING id, {wakeJob};

-- name: insertHandedOff
-- insert, for a job likely to be handed off: relay sends it when the queue's last enqueue
-- in this process notified, and insert otherwise (Store.Insert). It picks the client
-- first and inserts the job running, leased to it (migration 021), where insert's
-- hand_off updates the new row, writing it and its index entries twice: with one
-- producer at 1,000 jobs/s, 7–9 % more transactions a second. It costs more than insert
-- when nothing waits (a CTE and five scalar subqueries), hence the choice. No wakeup is
-- lost: a job leased to a client is not pending, and no dispatcher need claim it; when
-- no client was picked, RETURNING asks wake_needless again once the row exists, under
-- the jobs table's RowExclusiveLock (which a dispatcher that starts to wait waits for),
-- as insert does. @fits is false for a job too large to be handed off (Go's estimate).
-- Returns the id and whether it notified, as insert does.
WITH h AS (
    SELECT CASE WHEN NOT @fits OR {schema}.wake_needless({channel}, @queue) THEN NULL
                ELSE {schema}.hand_off_target({channel}, @queue, coalesce(@run_at, now()), @kind) END AS target
)
INSERT INTO {schema}.jobs AS j (kind, queue, args, run_at, timeout_ms, priority, order_key, payload, metadata, backoff, max_attempts,
                               state, attempt, attempted_at, attempted_by)
VALUES ({newJob},
    coalesce(@max_attempts, (SELECT c.kind_attempts[array_position(c.kinds, @kind)] FROM {schema}.clients c, h WHERE c.id = h.target)),
    CASE WHEN (SELECT target FROM h) IS NULL THEN 'pending' ELSE 'running' END,
    CASE WHEN (SELECT target FROM h) IS NULL THEN 0 ELSE 1 END,
    CASE WHEN (SELECT target FROM h) IS NOT NULL THEN clock_timestamp() END,
    (SELECT target FROM h))
RETURNING id, CASE WHEN attempted_by IS NOT NULL THEN {schema}.send_hand_off({channel}, j)
                   WHEN {schema}.wake_needless({channel}, queue) THEN false
                   ELSE {schema}.wake({channel}, queue, run_at, priority, ARRAY[kind], 1) END;

-- name: insertHeld
-- insert, for a reservation (relay.Reserved): the job is held for @hold, and announced to
-- the expirers instead of the dispatchers.
INSERT INTO {schema}.jobs (kind, queue, args, run_at, timeout_ms, priority, order_key, payload, metadata, backoff, max_attempts,
                          state, held_until)
VALUES ({newJob}, @max_attempts, 'held', clock_timestamp() + @hold::interval)
RETURNING id, {schema}.announce_held({channel}, held_until);

-- name: newJob
-- The values of a job of insert, insertHandedOff and insertHeld, in the order of their
-- columns, but for max_attempts, which each gives after them.
@kind, @queue, @args, coalesce(@run_at, now()), @timeout_ms, @priority,
    CASE WHEN {schema}.queue_ordered(@queue) THEN coalesce(@order_key, '')
         WHEN @order_key IS NOT NULL THEN {schema}.not_ordered(@queue) END,
    @payload, @metadata::jsonb, @backoff::jsonb

-- name: insertUnique
-- insert, for a job with a unique key (@unique_key): when a job with the key is in one of
-- the states @unique_in (pending and running, and any finished states the producer named),
-- nothing is inserted and that job's id is returned with inserted = false. The unique index
-- on unfinished jobs settles races between enqueues; no row at all means the job holding
-- the key committed after this statement's snapshot was taken: run it again.
WITH held AS (
    SELECT id FROM {schema}.jobs
    WHERE unique_key = @unique_key AND state = ANY (@unique_in::text[])
    ORDER BY state IN ('pending', 'running', 'held') DESC, id DESC
    LIMIT 1
), job AS (
    INSERT INTO {schema}.jobs (kind, queue, args, run_at, max_attempts, timeout_ms, priority, order_key, payload, unique_key, metadata,
                              state, held_until, backoff)
    SELECT @kind, @queue, @args, coalesce(@run_at, now()), @max_attempts, @timeout_ms, @priority,
        CASE WHEN {schema}.queue_ordered(@queue) THEN coalesce(@order_key, '') WHEN @order_key IS NOT NULL THEN {schema}.not_ordered(@queue) END,
        @payload, @unique_key, @metadata::jsonb,
        CASE WHEN @hold::interval IS NULL THEN 'pending' ELSE 'held' END, clock_timestamp() + @hold::interval, @backoff::jsonb
    WHERE NOT EXISTS (SELECT FROM held)
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('pending', 'running', 'held') DO NOTHING
    RETURNING id, queue, run_at, priority, kind, held_until
), notified AS (
    SELECT {wakeJob} FROM job WHERE held_until IS NULL
    UNION ALL
    {announceHeld}
)
SELECT id, true FROM job
WHERE (SELECT count(*) FROM notified) >= 0
UNION ALL
SELECT id, false FROM held
UNION ALL
SELECT id, false FROM {schema}.jobs
WHERE NOT EXISTS (SELECT FROM job) AND NOT EXISTS (SELECT FROM held)
  AND unique_key = @unique_key AND state IN ('pending', 'running', 'held');

-- name: insertJobs
-- insert for many jobs, given as aligned arrays (@kinds, @queues, …), with one wakeup per
-- queue: the schema's insert_jobs (migration 010), which the SQL functions enqueue() and
-- enqueue_many() call too, so that batches from every producer share one implementation
-- of unique jobs, ordered queues and wakeups. (One job has statements of its own above:
-- through insert_jobs it cost the database 50 % more CPU, about 35 µs; see the README.) Each job's id comes back in the order of the arrays, with whether
-- it was a duplicate of a job holding its unique key. @unique_keys NULL: no job is unique,
-- and insert_jobs runs a much cheaper statement; else @unique_states holds each unique
-- job's states, comma-separated. @holds and @backoffs are NULL arrays when no job of the
-- batch is reserved or has its own retry policy (migration 011).
SELECT id, duplicate FROM {schema}.insert_jobs(@kinds::text[], @queues::text[], @args::jsonb[], @run_ats::timestamptz[],
    @max_attempts::integer[], @timeouts_ms::integer[], @priorities::smallint[], @order_keys::text[], @payloads::bytea[],
    @metadatas::jsonb[], @unique_keys::text[], @unique_states::text[], @holds::interval[], @backoffs::jsonb[]);

-- name: wakes
-- Whether a job that has just ended (a row of the statement's RETURNING, with its queue,
-- state and order_key) wakes its queue's dispatchers: it was retried (pending again), or
-- it frees an ordered key or a slot of a limited queue. Used by every statement that
-- ends running jobs: outcomes, rescue, CompleteTx. Cancel wakes always.
(state = 'pending' OR order_key IS NOT NULL
 OR queue IN (SELECT name FROM {schema}.queues WHERE global_limit IS NOT NULL))

-- name: wokenKinds
-- The kinds wake() is given for a queue's rows that wake (see wakes; grouped by queue),
-- for the clients it may address (migration 015): theirs when each is a job retried in a
-- plain queue, and NULL (any) when one frees an ordered key or a limited slot, which a job
-- of any kind may take.
CASE WHEN bool_and(order_key IS NULL) AND queue NOT IN (SELECT name FROM {schema}.queues WHERE global_limit IS NOT NULL)
     THEN array_agg(DISTINCT kind) END

-- name: wakeJob
-- The wakeup of the one job of an insert (a row of the CTE "job", or of RETURNING), with
-- wake_needless written into the statement, where the planner inlines it: while every
-- dispatcher of the queue is busy, the enqueue then pays two tries of a lock instead of a
-- PL/pgSQL call. Otherwise hand_off hands the job off to a waiting client (migration 016)
-- or sends the wakeup wake() sends.
CASE WHEN {schema}.wake_needless({channel}, queue) THEN false
     ELSE {schema}.hand_off({channel}, id, queue, run_at, priority, kind) END

-- name: announceHeld
-- Tells every client's expirer, in a 'r:<µs since the epoch>' control message, the
-- earliest deadline of the reservations among the rows of the CTE "job" (with their
-- held_until; NULL for a job that is not held), if there are any: an expirer sleeps until
-- the earliest deadline it knows of, and an earlier one must wake it. A boolean, as wake().
SELECT {schema}.announce_held({channel}, min(held_until))
FROM job
HAVING min(held_until) IS NOT NULL

-- name: blocksOnFailure
-- Whether the queue of job j blocks an ordered key on a head that failed for good.
coalesce((SELECT q.on_failure = 'block' FROM {schema}.queues q WHERE q.name = j.queue), false)

-- name: claimed
-- The end of both claims (claim, claimGated), once each has picked its due jobs: leases
-- them to client @client for @lease, fills in max_attempts from the kinds' defaults
-- (@attempts, aligned with @kinds), and returns them, then the trailing row (id NULL) with
-- the delay until the queue's next scheduled job and the queue's settings. Each job comes
-- with what its handler sees of it, its metadata included, and its own retry policy.
-- clock_timestamp(), not now(): a gated claim's transaction began before its wait for the
-- queue's lock, and the lease must not be shortened by that wait.
--
-- The jobs are found by "ctid = ANY" of an array of the addresses due locked, not by a
-- join with "due": the planner cannot know how many rows due holds (its LIMIT is an
-- expression) and guesses a tenth of the due jobs. Once the table had statistics, it then
-- read the whole primary key for a merge join (8-12 ms per claim of 100 jobs behind 50,000
-- due ones) or hashed a sequential scan of the table (about 100 ms behind 300,000). An
-- address is one page read per job, whatever the table's size, and it cannot have changed:
-- due holds each row locked. With sequential scans off (genericPlan, lockQueue), no plan
-- made on a small table can read the whole table instead.
claimed AS (
    UPDATE {schema}.jobs j
    SET state = 'running', attempt = j.attempt + 1, attempted_at = clock_timestamp(), attempted_by = @client,
        lease_expires_at = clock_timestamp() + @lease::interval,
        max_attempts = coalesce(j.max_attempts, (@attempts::integer[])[array_position(@kinds::text[], j.kind)])
    WHERE j.ctid = ANY (ARRAY(SELECT tid FROM due))
    RETURNING j.id, j.kind, j.args, j.attempt, j.max_attempts, j.created_at, j.run_at, j.attempted_at, j.timeout_ms, j.priority,
        j.checkpoint, j.payload, j.metadata, j.backoff, j.schedule, j.schedule_slot
)
SELECT id, kind, args, attempt, max_attempts, created_at, run_at, attempted_at, timeout_ms, priority, checkpoint, payload, metadata,
       backoff, schedule, schedule_slot, NULL::bigint, NULL::boolean, NULL::boolean, NULL::boolean
FROM claimed
WHERE (SELECT count(*) FROM async) = 1
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    CASE WHEN (SELECT count(*) FROM claimed) < @limit THEN (
        -- The earliest future run_at of each priority level, found level by level along
        -- the claim index: min(run_at) over the queue would walk every due job of a
        -- backlog, and a claim cut short by other clients' locks asks for it.
        WITH RECURSIVE levels AS (
            (SELECT (-priority) AS rank FROM {schema}.jobs
             WHERE queue = @queue AND state = 'pending' ORDER BY (-priority) LIMIT 1)
            UNION ALL
            SELECT (SELECT (-j.priority) FROM {schema}.jobs j
                    WHERE j.queue = @queue AND j.state = 'pending' AND (-j.priority) > l.rank
                    ORDER BY (-j.priority) LIMIT 1)
            FROM levels l WHERE l.rank IS NOT NULL
        )
        SELECT ceil(extract(epoch FROM min(next.run_at) - clock_timestamp()) * 1000000)::bigint
        FROM levels l, LATERAL (
            SELECT j.run_at FROM {schema}.jobs j
            WHERE j.queue = @queue AND j.state = 'pending' AND (-j.priority) = l.rank
              AND j.run_at > now() AND j.kind = ANY(@kinds::text[])
            ORDER BY j.run_at LIMIT 1
        ) next
        WHERE l.rank IS NOT NULL
    ) END,
    s.ordered, s.global_limit IS NOT NULL, s.paused
FROM settings s;

-- name: planByIndex
-- Sent just before a statement that finds its jobs by key (a job's id, a unique key) and
-- may run in the caller's transaction, in the same batch: as genericPlan, so that the plan a
-- prepared statement keeps, made on a table of a few jobs, does not scan the whole table
-- once it holds thousands (CompleteTx, a checkpoint, a unique enqueue: each would then cost
-- a scan of the table until autovacuum next analyzed it). And with its generic plan from
-- the first run: such a statement reaches its few rows by key whatever the values, but
-- PostgreSQL may estimate its generic plan costlier than one made for the values (on a
-- table never analyzed, a unique enqueue was planned afresh at every call, 1–2.5 ms each,
-- more than it took to run). The caller's own settings are kept in relay.plan_settings,
-- for restorePlan.
SELECT set_config('relay.plan_settings', current_setting('enable_seqscan') || ' ' || current_setting('jit')
                  || ' ' || current_setting('plan_cache_mode'), true),
       set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true),
       set_config('plan_cache_mode', 'force_generic_plan', true);

-- name: restorePlan
-- Sent just after the statement that planByIndex preceded, in the same batch: the rest of
-- the caller's transaction runs with its own settings.
SELECT set_config('enable_seqscan', split_part(current_setting('relay.plan_settings'), ' ', 1), true),
       set_config('jit', split_part(current_setting('relay.plan_settings'), ' ', 2), true),
       set_config('plan_cache_mode', split_part(current_setting('relay.plan_settings'), ' ', 3), true);

-- name: planWithoutJIT
-- Sent just before a statement that counts or lists over many jobs (CountJobs, the
-- dashboard's queues and throughput, listings, queue depths), in the same batch: it is
-- planned for the values at hand (as planEachTime would make it, which a batch cannot) and
-- run without JIT. Behind 2,000,000 finished jobs PostgreSQL compiled CountJobs with LLVM at
-- every call, 350 ms of its 640, and the dashboard's statements 10–20 ms each: their cost
-- estimates are far above jit_above_cost, while what they compute (counts, a few rows) is
-- not worth compiling. The caller's own settings are kept in relay.plan_settings.
SELECT set_config('relay.plan_settings', current_setting('jit') || ' ' || current_setting('plan_cache_mode'), true),
       set_config('jit', 'off', true), set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: restoreJIT
-- Sent just after the statement that planWithoutJIT preceded, in the same batch.
SELECT set_config('jit', split_part(current_setting('relay.plan_settings'), ' ', 1), true),
       set_config('plan_cache_mode', split_part(current_setting('relay.plan_settings'), ' ', 2), true);

-- name: claim
-- Claims up to @limit due jobs of plain queue @queue whose kind is in @kinds, most urgent
-- first, and leases them to client @client for @lease. A job enqueued without max_attempts
-- takes its kind's default from @attempts (aligned with @kinds). The scan starts at the
-- cursor (@from_rank = -priority, @from_run_at, @from_id): the index entries of jobs
-- already claimed stay in the index until VACUUM, and skipping thousands of them on every
-- claim would cost more than the claim itself. Jobs of a higher priority than the cursor's
-- are looked for too (ahead), and come first. The last row (id NULL) carries the delay
-- until the queue's next scheduled job when fewer than @limit were due, so the dispatcher
-- can arm its timer without another round trip, and the queue's settings: a queue that is
-- ordered, limited or paused is claimed from only by claimGated, so that a dispatcher whose
-- settings are stale claims nothing.
--
-- The claim commits asynchronously (synchronous_commit off for this statement's own
-- transaction), saving a WAL flush on the pickup path. That is safe: a claim lost in a
-- crash leaves the job pending, so it runs again (at least once), and any later outcome
-- commits synchronously, which flushes the claim's WAL before it.
--
-- It runs with its generic plan from the first (genericPlan, sent before it). The scans
-- also take @kinds and the first LIMIT through subqueries, which hide their values from the
-- planner, so that a plan made for the values at hand is that same plan: behind an analyzed
-- backlog such a plan looked the cheaper (it knows how short the array and how small the
-- limit are), and before the subqueries and genericPlan PostgreSQL planned every claim
-- afresh, 0.6–0.8 ms each, a third of a claim of 100 jobs behind 300,000.
WITH async AS (
    SELECT set_config('synchronous_commit', 'off', true)
), settings AS (
    SELECT coalesce(bool_or(ordered), false) AS ordered, min(global_limit) AS global_limit,
           coalesce(bool_or(paused_at IS NOT NULL), false) AS paused
    FROM {schema}.queues WHERE name = @queue
), ahead AS (
    -- Due jobs of a higher priority than the cursor's, which the cursor has passed. Their
    -- enqueues may not have woken this dispatcher (it was busy: see wake, migration 006),
    -- so no notification moved the cursor back for them, yet they come first. Usually there
    -- are none, and this is one probe of the claim index.
    SELECT ctid AS tid FROM {schema}.jobs
    WHERE queue = @queue AND state = 'pending' AND run_at <= now() AND kind = ANY((SELECT @kinds::text[])::text[])
      AND (-priority) < @from_rank::smallint
      AND (SELECT NOT (ordered OR global_limit IS NOT NULL OR paused) FROM settings)
    ORDER BY (-priority), run_at, id
    LIMIT (SELECT @limit::integer)
    FOR UPDATE SKIP LOCKED
), onward AS (
    SELECT ctid AS tid FROM {schema}.jobs
    WHERE queue = @queue AND state = 'pending' AND run_at <= now() AND kind = ANY((SELECT @kinds::text[])::text[])
      AND ((-priority), run_at, id) >= (@from_rank::smallint, @from_run_at::timestamptz, @from_id::bigint)
      AND (SELECT NOT (ordered OR global_limit IS NOT NULL OR paused) FROM settings)
    ORDER BY (-priority), run_at, id
    LIMIT @limit - (SELECT count(*) FROM ahead)
    FOR UPDATE SKIP LOCKED
), due AS (
    SELECT tid FROM ahead
    UNION ALL
    SELECT tid FROM onward
), busy AS (
    -- The dispatcher works through a backlog and claims again without a wakeup: enqueues
    -- into the queue need not notify it (see wake, migration 006). Executed whether or not
    -- the statement reads it, as a data-modifying CTE is.
    INSERT INTO {schema}.dispatchers AS d (queue, client_id, waiting)
    SELECT @queue, @client, false
    WHERE @busy
    ON CONFLICT (queue, client_id) DO UPDATE SET waiting = false WHERE d.waiting
), {claimed}

-- name: lockQueue
-- Serialises the claims of one gated queue across all clients until the end of the
-- transaction, so that the next statement's snapshot sees every claim made before it.
-- It also chooses how claimGated, next in the transaction, is planned. Once the jobs
-- table has statistics, PostgreSQL estimates claimGated's generic plan far costlier than
-- its plans for the values given, and so planned every claim afresh: 1.4–2.2 ms of
-- planning, most of a claim, for what is the same plan (the claim's CTEs fix its
-- shape). It keeps the generic plan, but for a claim that looks for strays (@strays:
-- once a second per client, for ten minutes after a change of the queue's settings),
-- where how to read the queue's unfinished jobs depends on how many it has. And it turns
-- sequential scans and JIT off, as genericPlan does for the plain claim, for the same reasons.
SELECT pg_advisory_xact_lock(hashtext('relay.claim'), hashtext(@lock_key)),
       set_config('plan_cache_mode', CASE WHEN @strays THEN 'force_custom_plan' ELSE 'force_generic_plan' END, true),
       set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true);

-- name: claimGated
-- claim, without a cursor, for a queue that is ordered or has a cluster-wide limit. It runs
-- after lockQueue in the same transaction: each claim of the queue then sees the jobs every earlier one
-- started, which is what makes the limit and one-at-a-time per key hold across clients.
-- An ordered queue claims only the heads of its keys: the oldest pending job of a key
-- with no job running and no blocking failed job, nor held one, before it (a held job keeps
-- its place until it is committed or expires). The keys are walked one index
-- probe each, so a claim costs O(keys with unfinished jobs), however deep each key's
-- backlog; the heads found are then taken in priority and run_at order, so no key starves.
WITH RECURSIVE async AS (
    SELECT set_config('synchronous_commit', 'off', true)
), settings AS (
    SELECT coalesce(bool_or(ordered), false) AS ordered, min(global_limit) AS global_limit,
           coalesce(bool_or(paused_at IS NOT NULL), false) AS paused,
           coalesce(bool_or(updated_at > now() - interval '10 minutes'), false) AS changed
    FROM {schema}.queues WHERE name = @queue
), strays AS (
    -- A job whose enqueue transaction was open while the queue became ordered was inserted
    -- without a key, and the alignment of SetQueue could not see it. For a while after a
    -- change of settings, claims (@strays: one a second per client) give such jobs the
    -- queue-wide key: a scan of the queue's unfinished jobs, paid only then. The keys walk
    -- below sees them at the next claim. The states are an OR, not IN: PostgreSQL then
    -- reads the two partial indexes of pending and held jobs; with IN it could use
    -- neither, and read the whole table.
    UPDATE {schema}.jobs SET order_key = ''
    WHERE @strays AND (SELECT ordered AND changed FROM settings)
      AND queue = @queue AND (state = 'pending' OR state = 'held') AND order_key IS NULL
    RETURNING id
), room AS (
    SELECT CASE WHEN s.paused THEN 0
                WHEN s.global_limit IS NULL THEN @limit
                ELSE least(@limit, greatest(0, s.global_limit - (
                    SELECT count(*) FROM {schema}.jobs WHERE queue = @queue AND state = 'running')))
           END AS n
    FROM settings s
    WHERE (SELECT count(*) FROM strays) >= 0
), keys AS (
    SELECT (SELECT min(order_key) FROM {schema}.jobs
            WHERE queue = @queue AND order_key IS NOT NULL AND (state IN ('pending', 'running', 'held') OR blocking)) AS k
    WHERE (SELECT ordered FROM settings)
    UNION ALL
    SELECT (SELECT min(order_key) FROM {schema}.jobs
            WHERE queue = @queue AND order_key > keys.k AND (state IN ('pending', 'running', 'held') OR blocking))
    FROM keys
    WHERE keys.k IS NOT NULL
), heads AS MATERIALIZED (
    SELECT h.id, h.tid, h.priority, h.run_at, h.kind
    FROM keys
    CROSS JOIN LATERAL (
        SELECT id, ctid AS tid, priority, run_at, kind FROM {schema}.jobs
        WHERE queue = @queue AND order_key = keys.k AND state = 'pending'
        ORDER BY id
        LIMIT 1
    ) h
    WHERE keys.k IS NOT NULL
      -- Nothing of the key runs, and no blocking failed job nor held one is before the
      -- head. Each is a probe of the key's own entries in jobs_order_idx, written as a
      -- scalar subquery so that it stays one: as NOT EXISTS, PostgreSQL made anti-joins of
      -- them that read every failed job the queue had kept (28 ms a claim behind 200,000),
      -- or, on a table never analyzed, the queue's whole backlog (32 ms behind 300,000).
      -- Failed and held sort before pending: one range of the index holds both kinds of
      -- blocker (a failed job is in the index only while it blocks).
      AND (SELECT 1 FROM {schema}.jobs r
           WHERE r.queue = @queue AND r.order_key = keys.k AND r.state = 'running' LIMIT 1) IS NULL
      AND coalesce((SELECT min(b.id) FROM {schema}.jobs b
                    WHERE b.queue = @queue AND b.order_key = keys.k AND b.state < 'pending'
                      AND (b.state = 'held' OR (b.state = 'failed' AND b.blocking))) > h.id, true)
), chosen AS MATERIALIZED (
    -- The jobs to claim, picked before any row is locked, so that the claim below is
    -- driven by these few ids (a primary key lookup each): never by a scan of the queue's
    -- pending jobs, however the planner misjudges a backlog its statistics have not seen.
    SELECT tid FROM (
        SELECT id, tid, priority, run_at FROM heads
        WHERE run_at <= now() AND kind = ANY(@kinds::text[])
        UNION ALL
        (SELECT id, ctid, priority, run_at FROM {schema}.jobs
         WHERE NOT (SELECT ordered FROM settings)
           AND queue = @queue AND state = 'pending' AND run_at <= now() AND kind = ANY(@kinds::text[])
         ORDER BY (-priority), run_at, id
         LIMIT @limit)
    ) candidates
    ORDER BY (-priority), run_at, id
    LIMIT (SELECT n FROM room)
), due AS (
    SELECT j.tid
    FROM chosen
    CROSS JOIN LATERAL (
        -- rechecked on the latest row version once locked: a job claimed meanwhile is skipped
        SELECT ctid AS tid FROM {schema}.jobs
        WHERE ctid = chosen.tid AND state = 'pending' AND run_at <= now()
        FOR UPDATE SKIP LOCKED
    ) j
), {claimed}

-- name: genericPlan
-- Sent just before a claim, a lease renewal, writeOutcomes and ackHandOffs, in the same
-- batch and so the same implicit transaction: the statement runs with its generic plan
-- from its first run on a connection, made without sequential scans, and without JIT.
--
-- The generic plan: PostgreSQL's own choice (plan_cache_mode auto) plans a prepared
-- statement for its values at its first five runs on each connection, and then for as long
-- as it estimates the generic plan costlier. It planned each outcome batch afresh: on 20,000
-- jobs, a batch of 1 outcome took 0.62 ms that way against 0.31 with the generic plan, of
-- 200 3.8 ms against 2.8, of 1,000 31 ms against 17; a client whose jobs take a while
-- writes batches of one or two. It planned every renewal afresh too, and every claim on a
-- new connection five times: on a fresh connection the second to sixth claims took 3.1,
-- 1.1, 1.0, 0.9 and 0.9 ms, against 0.2–0.5 with the generic plan, which matters when every
-- connection is new at once (a database back after an outage, or connections killed).
--
-- Without sequential scans: the generic plan is made at the first run, from the table's
-- size then, and kept. Made on an empty table (a new deployment, a client that starts
-- idle), it took the claimed jobs with a scan of the whole table, which a burst of 50,000
-- jobs made 22 ms a claim of 100 instead of 1.5, until autovacuum next analyzed the table.
-- Where a small table leaves no other way than a sequential scan, the planner adds 10^10 to
-- its cost, far above jit_above_cost: so JIT is turned off too, or PostgreSQL compiles the
-- statement, about 0.5 s on every run.
SELECT set_config('plan_cache_mode', 'force_generic_plan', true),
       set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true);

-- name: writeOutcomes
-- Writes the outcomes of many attempts of client @client at once (@outputs: each success's
-- output, or NULL; a NULL array when none has one; @datas and @data_errors likewise: the
-- data of a failure's error, or why it could not be recorded), and returns the outcomes it
-- left out (id and attempt), usually none: a busy client writes thousands a second, and
-- returning each written one would send back rows that only confirm the batch. A job is
-- touched only while that same attempt still holds
-- it (running, claimed by @client, same attempt number), so the late outcome of a handler
-- whose job was rescued, cancelled or re-claimed never overwrites whatever owns the job
-- now. Every attempt but a success is appended to the job's history. Retried jobs wake
-- their queue's dispatchers (on every client) at their new run_at; so does every job that
-- ends in an ordered or limited queue, since it frees its key or a slot. A job of an
-- ordered queue that blocks on failure keeps its key when it fails for good.
--
-- The plan must find the rows by primary key, however stale the statistics: the only
-- condition on the jobs table alone is "id = ANY", and the held attempt is matched against
-- columns of the materialized outcome rows, not constants. Written as "j.state = 'running'
-- AND j.attempted_by = @client", statistics taken while this client ran nothing made plans
-- that read the client's running jobs first and scanned the whole batch again for each
-- (~1 ms per job of a 1,000-job batch); without "id = ANY", plans that hashed a scan of
-- the whole table (~12 µs per job at 50,000 jobs, more as it grows).
WITH outcome AS MATERIALIZED (
    SELECT *, 'running'::text AS held_state, @client::text AS held_by
    FROM unnest(@ids::bigint[], @attempts::integer[], @states::text[], @ended_ats::timestamptz[],
                @run_ats::timestamptz[], @reasons::text[], @errors::text[], @stacks::text[], @outputs::jsonb[],
                @datas::jsonb[], @data_errors::text[], @uncounted::boolean[])
        AS o(id, attempt, state, ended_at, run_at, reason, error, stack, output, data, data_error, uncounted)
), written AS (
    UPDATE {schema}.jobs j
    SET state = o.state,
        finished_at = CASE WHEN o.state = 'pending' THEN NULL ELSE o.ended_at END,
        run_at = coalesce(o.run_at, j.run_at),
        lease_expires_at = NULL,
        output = coalesce(o.output, j.output),
        -- a snooze gives its attempt back; an attempt that does not count (an infrastructure
        -- fault) gets the job one more, so that attempt numbers stay unique — but for a job
        -- that has the most an integer holds already (relay.MaxAttempts(math.MaxInt32)): one
        -- more would fail the whole batch, again at every retry
        attempt = CASE WHEN o.reason = 'snoozed' THEN j.attempt - 1 ELSE j.attempt END,
        max_attempts = CASE WHEN o.uncounted AND j.max_attempts < 2147483647 THEN j.max_attempts + 1 ELSE j.max_attempts END,
        attempts = CASE WHEN o.state = 'succeeded' THEN j.attempts ELSE {schema}.append_attempt(j.attempts, {schema}.attempt_entry(
            j.attempt, j.attempted_at, o.ended_at, j.attempted_by, o.state, o.reason, o.error, o.stack, o.data, o.data_error)) END,
        blocking = o.state = 'failed' AND j.order_key IS NOT NULL AND {blocksOnFailure}
    FROM outcome o
    WHERE j.id = ANY (@ids::bigint[])
      AND j.id = o.id AND j.attempt = o.attempt AND j.state = o.held_state AND j.attempted_by = o.held_by
    RETURNING j.id, o.attempt AS held_attempt, j.queue, j.state, j.run_at, j.priority, j.order_key, j.kind
), notified AS (
    SELECT {schema}.wake({channel}, queue, min(run_at), max(priority), {wokenKinds}, count(*))
    FROM written
    WHERE {wakes}
    GROUP BY queue
)
-- When every outcome was written (the count is a one-time filter), nothing is compared.
SELECT o.id, o.attempt FROM outcome o
WHERE (SELECT count(*) FROM notified) >= 0
  AND (SELECT count(*) FROM written) < cardinality(@ids::bigint[])
  AND NOT EXISTS (SELECT FROM written w WHERE w.id = o.id AND w.held_attempt = o.attempt);

-- name: renewLeases
-- The keep-alive tick of client @client: records its heartbeat (with what it serves and
-- the periodic schedules it has, @schedules) and extends by @ttl the
-- leases of the attempts it still holds (@ids, with their @attempts). It returns the ids
-- still its own, each with whether its lease was extended, and those cancelled while the
-- attempt ran (relay.Cancel, whose wakeup may not have reached the client); a held job
-- missing from them was rescued or deleted. Rows locked by a concurrent write are skipped rather than
-- waited for, so that one busy row never delays every lease: usually the lock is this
-- client's own outcome batch, and the job is about to stop running; if it is a handler's
-- transaction (Checkpoint, CompleteTx), renewLocked extends that lease on its own. Like a
-- claim it commits asynchronously: a renewal lost in a crash only shortens a lease. A last
-- row (id NULL) says whether the client's previous heartbeat had lapsed (or it had
-- stopped): other clients took it for dead meanwhile, and enqueues did not wake it.
WITH async AS (
    SELECT set_config('synchronous_commit', 'off', true)
), previous AS (
    SELECT heartbeat_at + lease_ttl <= now() OR stopped_at IS NOT NULL AS lapsed
    FROM {schema}.clients WHERE id = @client
), heartbeat AS (
    INSERT INTO {schema}.clients AS c (id, lease_ttl, queues, kinds, schedules, hands_off, kind_attempts)
    VALUES (@client, @ttl::interval, @queues::text[], @kinds::text[], coalesce(@schedules::text[], '{}'), @hands_off,
            @kind_attempts::integer[])
    ON CONFLICT (id) DO UPDATE SET
        heartbeat_at = now(), stopped_at = NULL,
        lease_ttl = EXCLUDED.lease_ttl, queues = EXCLUDED.queues, kinds = EXCLUDED.kinds, schedules = EXCLUDED.schedules,
        hands_off = EXCLUDED.hands_off, kind_attempts = EXCLUDED.kind_attempts,
        -- a client restarted under the same id starts a new life
        started_at = CASE WHEN c.stopped_at IS NULL THEN c.started_at ELSE now() END
    RETURNING 1
), attempts AS MATERIALIZED (
    -- matched by columns, not constants, for the reason given at writeOutcomes
    SELECT *, 'running'::text AS held_state, 'cancelled'::text AS cancelled_state, @client::text AS held_by,
           jsonb_build_object('attempt', attempt, 'client', @client::text, 'outcome', 'cancelled') AS cancelled_entry
    FROM unnest(@ids::bigint[], @attempts::integer[]) AS h(id, attempt)
), held AS (
    -- A cancelled job is reported only if the cancel ended this attempt (its last history
    -- entry), not if it was cancelled after a rescue took the job from this attempt.
    SELECT j.id, j.state = h.cancelled_state AS cancelled
    FROM attempts h
    JOIN {schema}.jobs j
      ON j.id = h.id AND j.attempt = h.attempt AND j.attempted_by = h.held_by
     AND (j.state = h.held_state OR j.state = h.cancelled_state AND j.attempts -> -1 @> h.cancelled_entry)
    WHERE j.id = ANY (@ids::bigint[])
), renewed AS (
    UPDATE {schema}.jobs j
    SET lease_expires_at = now() + @ttl::interval
    FROM (
        SELECT f.id
        FROM attempts h
        JOIN {schema}.jobs f
          ON f.id = h.id AND f.attempt = h.attempt AND f.state = h.held_state AND f.attempted_by = h.held_by
        WHERE f.id = ANY (@ids::bigint[])
        FOR UPDATE OF f SKIP LOCKED
    ) free
    WHERE j.id = free.id
    RETURNING j.id
)
SELECT id, id IN (SELECT id FROM renewed), cancelled FROM held
WHERE (SELECT count(*) FROM async) = 1
UNION ALL
SELECT NULL, coalesce((SELECT lapsed FROM previous), false), false;

-- name: renewLocked
-- Extends by @ttl the lease of attempt @attempt of client @client on job @id, waiting for
-- the row if a transaction holds it (the caller bounds the wait with lock_timeout). No row:
-- the attempt no longer holds the job.
UPDATE {schema}.jobs SET lease_expires_at = now() + @ttl::interval
WHERE id = @id AND state = 'running' AND attempted_by = @client AND attempt = @attempt
RETURNING id;

-- name: refuseHandOffs
-- Client @client is handed off no more jobs (migration 016): its listener does not hear.
UPDATE {schema}.clients SET hands_off = false WHERE id = @client;

-- name: ackHandOffs
-- Acknowledges the hand-offs to client @client (migration 016) of jobs @ids as attempts
-- @attempts: the client has heard them and starts them, and each gets a lease, as a claim
-- gives. A job that is no longer the client's hand-off (given back, rescued, cancelled) is
-- left as it is. As in writeOutcomes, the only condition on the jobs table alone is
-- "id = ANY", so that the plan reaches the jobs by their key.
--
-- Like a claim it commits asynchronously, saving a WAL flush while producers may be
-- waiting for the client to have fewer than 8 hand-offs unacknowledged (see hand_off): an
-- acknowledgement lost in a crash leaves the job unacknowledged, and the client's next
-- renewal gives it its lease (a look after the listener reconnects finds it too, and
-- skips it, as the client still runs it).
--
-- Sent after genericPlan: planned for its values, PostgreSQL planned it afresh at a quarter
-- of its runs.
--
-- A row another transaction holds is skipped, not waited for: the handler's own
-- transaction (CompleteTx, Checkpoint) may hold it for long, and the job's outcome waits
-- for its acknowledgement. The client's renewals, which wait for such a transaction on
-- their own (renewLocked), give the job its lease instead.
WITH async AS (
    SELECT set_config('synchronous_commit', 'off', true)
), held AS MATERIALIZED (
    SELECT *, 'running'::text AS held_state, @client::text AS held_by, NULL::timestamptz AS no_lease
    FROM unnest(@ids::bigint[], @attempts::integer[]) AS h(id, attempt)
), free AS (
    SELECT f.id
    FROM held h
    JOIN {schema}.jobs f
      ON f.id = h.id AND f.attempt = h.attempt AND f.state = h.held_state AND f.attempted_by = h.held_by
     AND f.lease_expires_at IS NOT DISTINCT FROM h.no_lease
    WHERE f.id = ANY (@ids::bigint[])
    FOR UPDATE OF f SKIP LOCKED
)
UPDATE {schema}.jobs j SET lease_expires_at = now() + @ttl::interval
FROM free
WHERE j.id = free.id AND (SELECT count(*) FROM async) = 1;

-- name: releaseHandOff
-- Gives back job @id, handed off to client @client (migration 016) as attempt @attempt,
-- which the client cannot start (every worker busy, or stopping): pending again, its
-- attempt uncounted, and its queue woken as by an enqueue, not handed off again (a client
-- whose workers are all busy would be handed it back). Its lease may have been set already:
-- by the look for hand-offs not heard. No row: the job is no longer the client's (rescued,
-- cancelled, deleted).
UPDATE {schema}.jobs j
SET state = 'pending', attempt = j.attempt - 1, attempted_at = NULL, attempted_by = NULL, lease_expires_at = NULL
WHERE j.id = @id AND j.attempt = @attempt AND j.attempted_by = @client AND j.state = 'running'
RETURNING {schema}.wake({channel}, j.queue, j.run_at, j.priority, ARRAY[j.kind], 1);

-- name: handedOff
-- Takes the jobs handed off to client @client (migration 016) that it has not
-- acknowledged: those whose wakeup it may not have heard, its listener being away when they
-- committed. Each is acknowledged (given a lease of @ttl) and returned as a claim returns
-- it. A row locked by another write (a give-back, a cancel) is skipped, not waited for:
-- after the wait, the recheck would lock the row's new version, a pending job, and the
-- claim its give-back wakes would skip it.
UPDATE {schema}.jobs j SET lease_expires_at = now() + @ttl::interval
FROM (SELECT id FROM {schema}.jobs
      WHERE state = 'running' AND lease_expires_at IS NULL AND attempted_by = @client
      FOR UPDATE SKIP LOCKED) handed
WHERE j.id = handed.id
RETURNING j.id, kind, args, attempt, max_attempts, created_at, run_at, attempted_at, timeout_ms, priority, checkpoint, payload,
          metadata, backoff, schedule, schedule_slot, queue;

-- name: giveBackHandOffs
-- Gives back, as client @client stops, the jobs handed off to it that it has not
-- acknowledged and does not run (@running: the jobs whose handlers it still runs): their
-- wakeups were not heard. Each is pending again with its attempt uncounted, as
-- releaseHandOff leaves one, and its queue woken (not handed off: the client is marked
-- stopped). Rows locked by another write are skipped, as in handedOff. Returns how many.
WITH given AS (
    UPDATE {schema}.jobs j
    SET state = 'pending', attempt = j.attempt - 1, attempted_at = NULL, attempted_by = NULL
    FROM (SELECT id FROM {schema}.jobs
          WHERE state = 'running' AND lease_expires_at IS NULL AND attempted_by = @client
            AND id <> ALL (@running::bigint[])
          FOR UPDATE SKIP LOCKED) handed
    WHERE j.id = handed.id
    RETURNING j.queue, j.run_at, j.priority, j.kind
), woken AS (
    SELECT {schema}.wake({channel}, queue, min(run_at), max(priority), array_agg(DISTINCT kind), count(*))
    FROM given GROUP BY queue
)
SELECT count(*) FROM given WHERE (SELECT count(*) FROM woken) >= 0;

-- name: stopClient
-- Marks client @client stopped, and forgets its dispatchers: enqueues no longer wake it.
WITH forgotten AS (
    DELETE FROM {schema}.dispatchers WHERE client_id = @client
)
UPDATE {schema}.clients SET stopped_at = now(), heartbeat_at = now() WHERE id = @client;

-- name: forgetDispatchers
-- Forgets client @client's dispatchers: those left by an earlier life under the same id, at
-- start (every dispatcher of a starting client waits for work), or the one of @queue that
-- has retired (@queue NULL: all). A live client's queue with no row counts as waiting.
DELETE FROM {schema}.dispatchers WHERE client_id = @client AND (@queue::text IS NULL OR queue = @queue);

-- name: holdListening
-- Takes client @client's listening lock (migration 016) on the connection its listener
-- LISTENs on: producers hand the client jobs only while it is held.
SELECT pg_advisory_lock_shared(k[1], k[2]) FROM {schema}.listening_lock({channel}, @client) k;

-- name: probe
-- Sends @payload on the schema's channel: the listener's check that notifications reach it.
SELECT pg_notify({channel}, @payload);

-- name: dispatchersPoll
-- Records that client @client's dispatchers of @queues never wait for a wakeup: the client
-- has no listener (Config.PollOnly) and claims every poll interval, so enqueues need not
-- notify for its sake (see wake, migration 006).
INSERT INTO {schema}.dispatchers AS d (queue, client_id, waiting)
SELECT queue, @client, false FROM unnest(@queues::text[]) AS queue
ON CONFLICT (queue, client_id) DO UPDATE SET waiting = false WHERE d.waiting;

-- name: dispatcherWaits
-- Records that the dispatcher of @queue on client @client, busy until now, waits for a
-- wakeup. It commits on its own, before the dispatcher waits for the producers that may
-- have seen it busy (see migration 006).
UPDATE {schema}.dispatchers SET waiting = true
WHERE queue = @queue AND client_id = @client AND NOT waiting;

-- name: holdWaitLocks
-- Takes the wait locks of @queues ('*': of every queue) for this session, shared (see
-- migration 012): producers into those queues then ask the tables whether to notify. A
-- producer holds a wait lock exclusively only while it tries it, so this waits at most
-- that long (the caller bounds it).
SELECT count(pg_advisory_lock_shared(k[1], k[2]))
FROM unnest(@queues::text[]) q, {schema}.wait_lock({channel}, q) k;

-- name: takeClientLock
-- Tries to take client @client's client lock for this session, exclusively (see migration
-- 015): producers then address wakeups to it. Another session holds it while a client of
-- the same ID runs, or while this client's earlier connection has not ended on the server.
SELECT pg_try_advisory_lock(k[1], k[2]) FROM {schema}.client_lock({channel}, @client) k;

-- name: releaseWaitLocks
-- Releases this session's wait locks of @queues, taken by holdWaitLocks.
SELECT count(pg_advisory_unlock_shared(k[1], k[2]))
FROM unnest(@queues::text[]) q, {schema}.wait_lock({channel}, q) k;

-- name: writers
-- The transactions that write to the jobs table now, by virtual transaction id: every
-- INSERT, UPDATE and DELETE takes its RowExclusiveLock before the statement's snapshot
-- and holds it to the end of its transaction, so among them is every producer that may
-- have looked at the wait locks and the tables before now and is still to commit (see
-- migration 012).
SELECT coalesce(array_agg(DISTINCT virtualtransaction), '{}')
FROM pg_locks
WHERE locktype = 'relation' AND mode = 'RowExclusiveLock' AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND relation = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = @schema AND c.relname = 'jobs');

-- name: stillRunning
-- Which of the transactions @vxids (virtual transaction ids) are still running: each holds
-- the lock of its own id until it ends.
SELECT coalesce(array_agg(virtualxid), '{}')
FROM pg_locks
WHERE locktype = 'virtualxid' AND virtualxid = ANY (@vxids::text[]);

-- name: rescue
-- Rescues up to @limit running jobs whose lease has expired: their client died or lost the
-- database. Each is retried at once, or failed when it has no attempts left, with reason
-- 'lost lease'. SKIP LOCKED lets every client run this at once: each expired job is
-- rescued by exactly one. The last row (id NULL) says when the next lease expires, so the
-- rescuer can sleep until then. Like an outcome, a rescue frees ordered keys and limited
-- slots, and wakes their queues. Each rescued job comes with what its client's events and
-- logs say of the lost attempt: kind, queue, attempt, its state now, when it started and
-- when it was due.
--
-- It also retries jobs handed off (migration 016) to a client that is no longer alive
-- before it acknowledged them (lease_expires_at NULL): stopped, its heartbeat out of date,
-- or its client lock free for a hand-off older than the client's lease TTL. A free lock
-- alone is not enough: the connection that holds it can be killed and made again while
-- the client lives on and runs the job (a storm of killed connections rescued such jobs,
-- and ran them twice), so a hand-off has the patience a lease has. One that stopped
-- cleanly never started them (it stops once every job it started has ended), so their
-- attempt is given back; a client that died may have.
WITH expired AS (
    SELECT id, run_at FROM {schema}.jobs
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT @limit
    FOR UPDATE SKIP LOCKED
), orphaned AS (
    SELECT j.id, j.run_at FROM {schema}.jobs j
    WHERE j.state = 'running' AND j.lease_expires_at IS NULL
      AND NOT EXISTS (
          SELECT FROM {schema}.clients c
          WHERE c.id = j.attempted_by AND c.stopped_at IS NULL AND c.heartbeat_at + c.lease_ttl > now()
            AND (j.attempted_at + c.lease_ttl > now() OR {schema}.client_alive({channel}, c.id)))
    LIMIT @limit
    FOR UPDATE OF j SKIP LOCKED
), lost AS (
    SELECT id, run_at, false AS stopped FROM expired
    UNION ALL
    SELECT o.id, o.run_at, coalesce(c.stopped_at IS NOT NULL, false)
    FROM orphaned o JOIN {schema}.jobs j ON j.id = o.id LEFT JOIN {schema}.clients c ON c.id = j.attempted_by
), rescued AS (
    UPDATE {schema}.jobs j
    SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'failed' ELSE 'pending' END,
        run_at = CASE WHEN j.attempt >= j.max_attempts THEN j.run_at ELSE now() END,
        finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
        lease_expires_at = NULL,
        attempts = {schema}.append_attempt(j.attempts, {schema}.attempt_entry(
            j.attempt, j.attempted_at, now(), j.attempted_by,
            CASE WHEN j.attempt >= j.max_attempts THEN 'failed' ELSE 'pending' END, 'lost lease',
            format(CASE WHEN j.lease_expires_at IS NULL THEN 'client %s died before it acknowledged the job handed to it'
                        ELSE 'the lease of client %s expired at %s' END, j.attempted_by, j.lease_expires_at), NULL)),
        blocking = j.attempt >= j.max_attempts AND j.order_key IS NOT NULL AND {blocksOnFailure}
    FROM lost
    WHERE j.id = lost.id AND NOT lost.stopped
    RETURNING j.id, j.queue, j.state, j.run_at, j.priority, j.order_key, j.kind, j.attempt, j.attempted_at, lost.run_at AS due_at
), given_back AS (
    UPDATE {schema}.jobs j
    SET state = 'pending', attempt = j.attempt - 1, attempted_at = NULL, attempted_by = NULL
    FROM lost
    WHERE j.id = lost.id AND lost.stopped
    RETURNING j.queue, j.state, j.run_at, j.priority, j.order_key, j.kind
), notified AS (
    SELECT {schema}.wake({channel}, queue, min(run_at), max(priority), {wokenKinds}, count(*))
    FROM (SELECT queue, state, run_at, priority, order_key, kind FROM rescued
          UNION ALL
          SELECT queue, state, run_at, priority, order_key, kind FROM given_back) ended
    WHERE {wakes}
    GROUP BY queue
)
SELECT id, kind, queue, attempt, state, attempted_at, due_at, NULL::bigint FROM rescued
WHERE (SELECT count(*) FROM notified) >= 0
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, (
    SELECT ceil(extract(epoch FROM min(lease_expires_at) - clock_timestamp()) * 1000000)::bigint
    FROM {schema}.jobs
    WHERE state = 'running' AND lease_expires_at >= now()
);

-- name: cancel
-- Cancels job @id if it has not finished (a held one too), or if it failed and blocks its
-- ordered key, and tells the client running it (if any) to cancel its handler. Returns the
-- job's state
-- before, and whether it was blocking, or no row if there is no such job.
WITH target AS (
    SELECT id, state, blocking FROM {schema}.jobs WHERE id = @id FOR UPDATE
), {cancelTarget}
SELECT state, blocking FROM target
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: cancelTarget
-- The CTEs "cancelled" and "notified" that cancel the jobs of the CTE "target" (id, state,
-- blocking; rows locked) that have not finished or fail and block their ordered key, and
-- tell the clients running them (on the schema's channel) to cancel their handlers. Their
-- queues are woken too: a job may have held an ordered key or a slot of a limited queue.
cancelled AS (
    UPDATE {schema}.jobs j
    SET state = 'cancelled', finished_at = now(), lease_expires_at = NULL, blocking = false,
        attempts = CASE WHEN t.state = 'running' THEN {schema}.append_attempt(j.attempts, {schema}.attempt_entry(
            j.attempt, j.attempted_at, now(), j.attempted_by, 'cancelled', 'cancelled', NULL, NULL)) ELSE j.attempts END
    FROM target t
    WHERE j.id = t.id AND (t.state IN ('pending', 'running', 'held') OR t.blocking)
    RETURNING j.id, j.attempt, j.queue, j.run_at, j.priority, t.state AS was
), notified AS (
    -- the attempt, so that a client only ever cancels the attempt that was running
    SELECT pg_notify({channel}, 'c:' || id || ':' || attempt) IS NULL FROM cancelled WHERE was = 'running'
    UNION ALL
    SELECT {schema}.wake({channel}, queue, min(run_at), max(priority), NULL, count(*)) FROM cancelled GROUP BY queue
)

-- name: retry
-- Puts failed or cancelled job @id back to run now. A job that had used all its attempts
-- gets one more. A reservation that was never committed stays as it is: its producer
-- decided that it must not run. Returns the job's state before, and whether it is such a
-- reservation, or no row if there is no such job.
WITH target AS (
    SELECT id, state, held_until IS NOT NULL AND committed_at IS NULL AS uncommitted
    FROM {schema}.jobs WHERE id = @id FOR UPDATE
), {retryTarget}
SELECT state, uncommitted FROM target
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: retryTarget
-- The CTEs "retried" and "notified" that put the failed or cancelled jobs of the CTE
-- "target" (id, state; rows locked) back to run now, and wake their queues on the
-- schema's channel. A reservation that was never committed stays as it is: its producer
-- decided that it must not run.
retried AS (
    UPDATE {schema}.jobs j
    SET state = 'pending', run_at = now(), finished_at = NULL, blocking = false,
        -- in line with the queue as it is now, which may have become (or stopped being) ordered
        order_key = CASE WHEN (SELECT q.ordered FROM {schema}.queues q WHERE q.name = j.queue)
                         THEN coalesce(j.order_key, '') END,
        -- NULL (never claimed) keeps deferring to the kind's default
        max_attempts = CASE WHEN j.max_attempts IS NULL THEN NULL ELSE greatest(j.max_attempts, j.attempt + 1) END
    FROM target t
    WHERE j.id = t.id AND t.state IN ('failed', 'cancelled') AND NOT (j.held_until IS NOT NULL AND j.committed_at IS NULL)
    RETURNING j.queue, j.run_at, j.priority, j.kind
), notified AS (
    SELECT {schema}.wake({channel}, queue, min(run_at), max(priority), array_agg(DISTINCT kind), count(*)) FROM retried GROUP BY queue
)

-- name: setQueue
-- Sets the settings of queue @queue (@ordered, @on_failure, @global_limit or NULL),
-- leaving its pause as it is, and brings its unfinished jobs in line: a queue that becomes
-- ordered puts its keyless jobs in the queue-wide sequence '', one that stops being
-- ordered drops their keys, and failed jobs stop blocking unless the queue still blocks.
-- Every client is told ('q:' control message) and the queue woken.
WITH saved AS (
    INSERT INTO {schema}.queues AS q (name, ordered, on_failure, global_limit)
    VALUES (@queue, @ordered, @on_failure, @global_limit)
    ON CONFLICT (name) DO UPDATE SET
        ordered = EXCLUDED.ordered, on_failure = EXCLUDED.on_failure,
        global_limit = EXCLUDED.global_limit, updated_at = now()
    RETURNING name
), aligned AS (
    UPDATE {schema}.jobs
    SET order_key = CASE WHEN @ordered THEN coalesce(order_key, '') END,
        blocking = blocking AND @ordered AND @on_failure = 'block'
    WHERE queue = @queue AND (state IN ('pending', 'running', 'held') OR blocking)
      AND ((@ordered AND order_key IS NULL) OR (NOT @ordered AND order_key IS NOT NULL) OR (blocking AND NOT (@ordered AND @on_failure = 'block')))
    RETURNING id
), notified AS (
    SELECT pg_notify({channel}, 'q:' || @queue)
    UNION ALL
    SELECT pg_notify({channel}, {schema}.wakeup_payload(@queue, now(), 32767))
)
SELECT count(*) FROM aligned
WHERE (SELECT count(*) FROM saved) + (SELECT count(*) FROM notified) >= 0;

-- name: pauseQueue
-- Pauses (@pause true) or resumes (@pause false) queue @queue for every client, keeping
-- its settings, and tells them by a 'q:' control message; a resumed queue is also woken.
WITH saved AS (
    INSERT INTO {schema}.queues AS q (name, paused_at)
    VALUES (@queue, CASE WHEN @pause THEN now() END)
    ON CONFLICT (name) DO UPDATE SET
        paused_at = CASE WHEN @pause THEN coalesce(q.paused_at, now()) END, updated_at = now()
    RETURNING name
), notified AS (
    SELECT pg_notify({channel}, 'q:' || @queue)
    UNION ALL
    SELECT pg_notify({channel}, {schema}.wakeup_payload(@queue, now(), 32767)) WHERE NOT @pause
)
SELECT count(*) FROM saved
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: getQueue
SELECT ordered, on_failure, global_limit, paused_at,
    (SELECT count(*) FROM {schema}.jobs WHERE queue = @queue AND state = 'running') AS running,
    (SELECT count(*) FROM {schema}.jobs WHERE queue = @queue AND order_key IS NOT NULL AND blocking) AS blocked
FROM (SELECT) one LEFT JOIN {schema}.queues q ON q.name = @queue;

-- name: pendingQueueScan
-- The recursive CTE "q": the queues that have pending jobs, by a loose scan of the claim
-- index: one probe per queue, however many jobs each holds. A last row holds NULL.
q AS (
    (SELECT queue FROM {schema}.jobs WHERE state = 'pending' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM {schema}.jobs WHERE state = 'pending' AND queue > q.queue ORDER BY queue LIMIT 1)
    FROM q
    WHERE q.queue IS NOT NULL
)

-- name: pendingQueues
-- The queues that patterns (names, and groups by prefix) cover and that have pending jobs
-- of @kinds due within @within. Each queue's check reads its first 100 pending jobs in
-- claim order, along the claim index, and a queue with more counts as having work: a
-- queue full of other kinds' jobs, or of later ones, must not be read to its end at every
-- look of every client. Its dispatcher, started for nothing, retires once idle.
WITH RECURSIVE {pendingQueueScan}
SELECT queue FROM q
WHERE queue IS NOT NULL AND {schema}.serves(@patterns::text[], queue)
  AND (SELECT count(*) FILTER (WHERE f.run_at <= now() + @within::interval AND f.kind = ANY (@kinds::text[])) > 0
              OR count(*) = 100
       FROM (SELECT j.run_at, j.kind FROM {schema}.jobs j
             WHERE j.queue = q.queue AND j.state = 'pending'
             ORDER BY (-j.priority), j.run_at, j.id LIMIT 100) f);

-- name: unhandled
-- Pending jobs that no live client can run — no client serving their queue handles their
-- kind — by queue and kind, with how many and the oldest. Kept cheap for the clients that
-- run it every minute, however large the backlog: per queue with pending jobs (one index
-- probe each), only the @sample most urgent jobs due for at least @grace are looked at.
-- Claims skip the jobs no client can run, so those gather at the head of their queue's
-- claim order and are found there; only a (queue, kind) found so is counted in full.
WITH RECURSIVE {pendingQueueScan}, live AS MATERIALIZED (
    SELECT queues, kinds FROM {schema}.clients
    WHERE stopped_at IS NULL AND heartbeat_at + lease_ttl > now()
), stuck AS (
    SELECT DISTINCT q.queue, h.kind
    FROM q
    CROSS JOIN LATERAL (
        SELECT kind FROM {schema}.jobs
        WHERE queue = q.queue AND state = 'pending' AND run_at <= now() - @grace::interval
        ORDER BY (-priority), run_at, id
        LIMIT @sample
    ) h
    WHERE q.queue IS NOT NULL
      AND NOT EXISTS (SELECT FROM live c WHERE h.kind = ANY (c.kinds) AND {schema}.serves(c.queues, q.queue))
)
SELECT s.queue, s.kind, count(*), min(j.created_at)
FROM stuck s
JOIN {schema}.jobs j ON j.queue = s.queue AND j.kind = s.kind AND j.state = 'pending'
GROUP BY s.queue, s.kind
ORDER BY s.queue, s.kind;

-- name: completeTx
-- Marks job @id succeeded, with output @output if not NULL, in the caller's transaction —
-- only while attempt @attempt of client @client still holds it. No row: the job is no
-- longer this attempt's, and nothing was written. Like an outcome, it wakes an ordered or
-- limited queue, at commit.
WITH done AS (
    UPDATE {schema}.jobs j
    SET state = 'succeeded', finished_at = clock_timestamp(), lease_expires_at = NULL,
        output = coalesce(@output, j.output)
    WHERE j.id = @id AND j.state = 'running' AND j.attempted_by = @client AND j.attempt = @attempt
    RETURNING j.id, j.queue, j.state, j.run_at, j.priority, j.order_key
), notified AS (
    SELECT {schema}.wake({channel}, queue, run_at, priority, NULL, 1)
    FROM done
    WHERE {wakes}
)
SELECT id FROM done
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: checkpoint
-- Saves progress @checkpoint of job @id while attempt @attempt of client @client still
-- holds it, and extends its lease to at least @lease from now: a handler that checkpoints
-- in back-to-back transactions keeps the row locked nearly all the time, and renewals skip
-- locked rows. No row: the job is no longer this attempt's, and nothing was written.
UPDATE {schema}.jobs
SET checkpoint = @checkpoint, lease_expires_at = greatest(lease_expires_at, clock_timestamp() + @lease::interval)
WHERE id = @id AND state = 'running' AND attempted_by = @client AND attempt = @attempt
RETURNING id;

-- name: endedBy
-- The state of job @id if attempt @attempt of client @client was its last; no row
-- otherwise.
SELECT state FROM {schema}.jobs WHERE id = @id AND attempted_by = @client AND attempt = @attempt;

-- name: setOutput
-- Stores output @output on job @id once attempt @attempt of client @client has succeeded:
-- an output the handler recorded after completing the job in its own transaction.
UPDATE {schema}.jobs SET output = @output
WHERE id = @id AND state = 'succeeded' AND attempted_by = @client AND attempt = @attempt
RETURNING id;

-- name: reservations
-- The CTE "target": the jobs @ids, locked in id order (so that two calls never deadlock),
-- with what a commit or an extension of their reservations needs to know: their state,
-- deadline, whether they were committed, when they finished, and whether their deadline
-- has passed by now.
target AS (
    SELECT id, state, held_until, committed_at IS NOT NULL AS committed, finished_at,
        held_until <= clock_timestamp() AS lapsed
    FROM {schema}.jobs
    WHERE id = ANY (@ids::bigint[])
    ORDER BY id
    FOR UPDATE
)

-- name: commitJobs
-- Commits the reservations @ids (distinct): each held job whose deadline has not passed
-- becomes pending — due at once, or at its run_at if that is later — and wakes its queue by
-- the usual rules; one already committed is left as it is. Only if every one of @ids can be
-- so: otherwise nothing changes. Returns every job found, with what the caller needs to
-- say why a job could not be committed, and whether all were.
WITH {reservations}, ok AS (
    SELECT count(*) = cardinality(@ids::bigint[])
           AND coalesce(bool_and(committed OR (state = 'held' AND NOT lapsed)), true) AS all_ok
    FROM target
), pending AS (
    UPDATE {schema}.jobs j
    SET state = 'pending', committed_at = clock_timestamp(), run_at = greatest(j.run_at, now())
    FROM target t
    WHERE j.id = t.id AND t.state = 'held' AND (SELECT all_ok FROM ok)
    RETURNING j.queue, j.run_at, j.priority, j.kind
), notified AS (
    SELECT {schema}.wake({channel}, queue, min(run_at), max(priority), array_agg(DISTINCT kind), count(*))
    FROM pending
    GROUP BY queue
)
SELECT id, state, held_until, committed, finished_at, lapsed, (SELECT all_ok FROM ok) FROM target
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: extendReservations
-- Moves the deadlines of the held jobs @ids (distinct) to @within from now, if every one
-- of them is held and its deadline has not passed; otherwise nothing changes. A deadline
-- moved earlier is announced to the expirers. Returns what commitJobs does.
WITH {reservations}, ok AS (
    SELECT count(*) = cardinality(@ids::bigint[])
           AND coalesce(bool_and(state = 'held' AND NOT lapsed), true) AS all_ok
    FROM target
), extended AS (
    UPDATE {schema}.jobs j
    SET held_until = clock_timestamp() + @within::interval
    FROM target t
    WHERE j.id = t.id AND (SELECT all_ok FROM ok)
    RETURNING j.held_until, t.held_until AS was
), job AS (
    SELECT held_until FROM extended WHERE held_until < was
), notified AS (
    {announceHeld}
)
SELECT id, state, held_until, committed, finished_at, lapsed, (SELECT all_ok FROM ok) FROM target
WHERE (SELECT count(*) FROM notified) >= 0;

-- name: expire
-- Expires up to @limit reservations whose deadline has passed: each held job is cancelled,
-- with reason 'expired' in its history (the client: @client), and never runs. SKIP LOCKED
-- lets every client run this at once: each lapsed reservation is expired by exactly one,
-- and one whose commit is under way (its row locked) is left to that commit. Like a
-- cancel, an expiry frees the job's ordered key and wakes its queue. The last row (id
-- NULL) says when the next deadline passes, in µs from now and in µs since the epoch (NULL
-- when none is ahead), and whether a lapsed reservation was left because it was locked.
WITH lapsed AS (
    SELECT id FROM {schema}.jobs
    WHERE state = 'held' AND held_until <= now()
    ORDER BY held_until
    LIMIT @limit
    FOR UPDATE SKIP LOCKED
), expired AS (
    UPDATE {schema}.jobs j
    SET state = 'cancelled', finished_at = now(),
        attempts = {schema}.append_attempt(j.attempts, {schema}.attempt_entry(
            j.attempt, NULL, now(), @client, 'cancelled', 'expired',
            format('the reservation was not committed by its deadline, %s', j.held_until), NULL))
    FROM lapsed
    WHERE j.id = lapsed.id
    RETURNING j.id, j.kind, j.queue, j.state, j.run_at, j.priority, j.order_key, j.held_until
), notified AS (
    SELECT {schema}.wake({channel}, queue, least(min(run_at), now()), max(priority), NULL, count(*))
    FROM expired
    WHERE {wakes}
    GROUP BY queue
), next AS (
    SELECT (SELECT held_until FROM {schema}.jobs
            WHERE state = 'held' AND held_until > now()
            ORDER BY held_until
            LIMIT 1) AS at
)
SELECT id, kind, queue, held_until, NULL::bigint, NULL::bigint, NULL::boolean FROM expired
WHERE (SELECT count(*) FROM notified) >= 0
UNION ALL
SELECT NULL, NULL, NULL, NULL,
    ceil(extract(epoch FROM at - clock_timestamp()) * 1000000)::bigint,
    floor(extract(epoch FROM at) * 1000000)::bigint,
    EXISTS (SELECT FROM {schema}.jobs
            WHERE state = 'held' AND held_until <= now() AND id NOT IN (SELECT id FROM expired))
FROM next;
