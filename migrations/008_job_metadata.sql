-- Metadata of jobs: a small JSON object of strings set when a job is enqueued (relay.Metadata,
-- or an enqueue middleware such as relayotel's, which stores the W3C trace context there),
-- given to the handler and its middleware, and read back by relay.GetJob. NULL when a job
-- has none, as most do: a column without a default is added without rewriting the table,
-- and a NULL costs a job nothing but its bit in the row's null bitmap.
ALTER TABLE jobs ADD COLUMN metadata jsonb;
