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
    body    text;
    lang    text := 'sql IMMUTABLE';
BEGIN
    -- One writer at a time: two transactions that replace a function at once make the
    -- second fail. Waiting here also lets the second read what the first committed.
    PERFORM pg_advisory_xact_lock(hashtext(schema || ':queue_ordered'), 0);
    -- Qualified, so that a temporary table of the caller's cannot stand in for queues.
    EXECUTE format('SELECT array_agg(name ORDER BY name) FILTER (WHERE ordered) FROM %I.queues', schema) INTO ordered;
    IF cardinality(ordered) > 100 THEN
        body := format('BEGIN RETURN coalesce((SELECT q.ordered FROM %I.queues q WHERE q.name = queue), false); END', schema);
        lang := 'plpgsql STABLE';
    ELSE
        body := format('SELECT queue = ANY (%L::text[])', coalesce(ordered, '{}'));
    END IF;
    IF body IS DISTINCT FROM (SELECT p.prosrc FROM pg_catalog.pg_proc p
                              WHERE p.oid = format('%I.queue_ordered(text)', schema)::regprocedure) THEN
        EXECUTE format('CREATE OR REPLACE FUNCTION %I.queue_ordered(queue text) RETURNS boolean LANGUAGE %s PARALLEL SAFE AS %L',
                       schema, lang, body);
    END IF;
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
