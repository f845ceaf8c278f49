-- insert_jobs plans its statements under enable_seqscan = off (and without JIT, which the
-- cost of a scan so disabled would otherwise call for). PL/pgSQL keeps a generic plan of
-- each statement per session, made from the table's size then: made on a table of a few
-- jobs, the check of a unique key read the whole table at every call once it held
-- thousands, until autovacuum next analyzed it. The settings last for the call only.
ALTER FUNCTION insert_jobs(text[], text[], jsonb[], timestamptz[], integer[], integer[], smallint[], text[], bytea[],
    jsonb[], text[], text[], interval[], jsonb[])
    SET enable_seqscan = off;
ALTER FUNCTION insert_jobs(text[], text[], jsonb[], timestamptz[], integer[], integer[], smallint[], text[], bytea[],
    jsonb[], text[], text[], interval[], jsonb[])
    SET jit = off;
