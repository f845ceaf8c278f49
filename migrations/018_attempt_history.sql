-- A job's attempt history keeps its last 100 entries.
--
-- Every ended attempt but a success appends an entry to jobs.attempts, and nothing took one
-- away: a job that snoozes (relay.Snooze gives its attempt back, so max_attempts never
-- ends it) gained an entry each time, about 43,000 a month for one that looks every
-- minute. Each append writes the whole array again, so the cost of its outcomes grew with
-- it, and at PostgreSQL's limit on a jsonb value the outcome could not be written at all.
-- append_attempt appends one entry and drops the oldest past 100: an entry's attempt
-- number still says where it stands.
CREATE FUNCTION append_attempt(history jsonb, entry jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_array_length(history) < 100 THEN history
                ELSE jsonb_path_query_array(history, '$[last - 98 to last]') END || entry
$$;
