-- Which queues are ordered, as a function the planner folds into relay.Enqueue's insert.
--
-- An insert of one job gives a keyless job of an ordered queue the queue-wide key '' and
-- refuses a key for a queue that is not ordered, so it must know whether its queue is
-- ordered. It read that from queues with a subquery, which PostgreSQL starts anew at every
-- execution (the table and its index opened and locked, the index searched): about 5 % of
-- the throughput of 32 connections committing one job each (pgbench, no client running).
-- queue_ordered(queue) answers instead. It is a plain SQL function whose body lists the
-- ordered queues as a constant, so the planner inlines it into the statement and a call
-- costs a comparison with a few strings.
--
-- The list is kept true by a trigger on queues: every statement that changes the table
-- rewrites the function if the set of ordered queues changed. A new definition reaches
-- every session at its next transaction or statement (the invalidation that catalog
-- changes send), and PostgreSQL plans again each cached statement that inlined the old
-- one: what a statement sees is what it would have read from queues, with a snapshot taken
-- as it starts. A producer whose transaction was open across the change may still insert a
-- keyless job without the key, as with the subquery; the claims of an ordered queue give
-- such jobs the key for a while after each change (see claimGated's strays).
--
-- Above 100 ordered queues, a constant list would cost more to search than the lookup it
-- replaces, and the function looks the queue up in queues instead (PL/pgSQL, whose plan is
-- kept from call to call).
CREATE FUNCTION queue_ordered(queue text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$SELECT queue = ANY ('{}'::text[])$$;

-- Rewrites queue_ordered from queues, if the ordered queues are not what it lists. Runs as
-- its owner, who owns queue_ordered: a role that may change queues but does not own the
-- schema's functions may still set a queue ordered.
CREATE FUNCTION write_queue_ordered() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    schema  text := current_schema();
    ordered text[];
    written text; -- queue_ordered's body as it is
    body    text;
    lang    text;
BEGIN
    -- Read and compare; a statement that leaves the ordered queues as they were (a pause, a
    -- limit) stops there, and waits for no one. To write, read again under a lock: of two
    -- transactions that replace one function at once the second fails, and waiting lets it
    -- read what the first committed. One statement reads both, with one snapshot. That
    -- snapshot must be new: at REPEATABLE READ or SERIALIZABLE it was taken when the
    -- transaction began, and would drop a change committed since, so a change of the
    -- ordered queues is refused there.
    FOR locked IN 0 .. 1 LOOP
        -- Qualified, so that a temporary table of the caller's cannot stand in for queues.
        EXECUTE format('SELECT array_agg(name ORDER BY name) FILTER (WHERE ordered),
                               (SELECT p.prosrc FROM pg_catalog.pg_proc p WHERE p.oid = %L::regprocedure)
                        FROM %I.queues', format('%I.queue_ordered(text)', schema), schema)
        INTO ordered, written;
        IF cardinality(ordered) > 100 THEN
            body := format('BEGIN RETURN coalesce((SELECT q.ordered FROM %I.queues q WHERE q.name = queue), false); END', schema);
            lang := 'plpgsql STABLE';
        ELSE
            body := format('SELECT queue = ANY (%L::text[])', coalesce(ordered, '{}'));
            lang := 'sql IMMUTABLE';
        END IF;
        IF body = written THEN
            RETURN;
        ELSIF current_setting('transaction_isolation') <> 'read committed' THEN
            RAISE EXCEPTION 'relay: the ordered queues can change only in a READ COMMITTED transaction, not %',
                upper(current_setting('transaction_isolation'))
                USING ERRCODE = '0A000',
                      HINT = 'Set the queue in a transaction of its own (relay.SetQueue with the pool), or at READ COMMITTED.';
        ELSIF locked = 0 THEN
            PERFORM pg_advisory_xact_lock(hashtext(schema || ':queue_ordered'), 0);
        ELSE
            EXECUTE format('CREATE OR REPLACE FUNCTION %I.queue_ordered(queue text) RETURNS boolean LANGUAGE %s PARALLEL SAFE AS %L',
                           schema, lang, body);
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION queues_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM write_queue_ordered();
    RETURN NULL;
END
$$;

CREATE TRIGGER queue_ordered AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON queues
FOR EACH STATEMENT EXECUTE FUNCTION queues_changed();

SELECT write_queue_ordered();
