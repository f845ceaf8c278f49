-- Transactional completion, checkpoints, outputs and binary payloads.

-- The progress a running job saved with relay.Checkpoint; the next attempt resumes from it.
ALTER TABLE jobs ADD COLUMN checkpoint jsonb;

-- What the handler of a succeeded job returned or recorded.
ALTER TABLE jobs ADD COLUMN output jsonb;

-- Raw args for jobs enqueued with []byte args (protobuf, msgpack, …); args is then null.
ALTER TABLE jobs ADD COLUMN payload bytea;
