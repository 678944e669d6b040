-- Sessions by dimension: one row per session and rollup key (the hourly rollup's nine dimensions),
-- with that part of the session's first and last event and its sums. A sessions query with a
-- dimension filter reads it instead of raw events (its answer is exact: a session's filtered totals
-- are the sums of its rows that match). It also lists the models each session used, so it replaces
-- usage_session_models.
CREATE TABLE IF NOT EXISTS usage_session_dims (
    session_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    team TEXT NOT NULL,
    discipline TEXT NOT NULL,
    level TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    harness TEXT NOT NULL,
    route TEXT NOT NULL,
    tier TEXT NOT NULL,
    first_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (session_id, user_name, team, discipline, level, model, provider, harness, route, tier)
);
CREATE INDEX IF NOT EXISTS usage_session_dims_last ON usage_session_dims (last_ms);

-- Backfill from the raw events still retained.
INSERT INTO usage_session_dims
SELECT session_id, user_name, team, discipline, level, model, provider, harness, route, tier,
       MIN(ts_ms), MAX(ts_ms), COUNT(*), SUM(cost_micros), SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens)
FROM usage_events WHERE session_id <> '' GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10;

DROP TABLE IF EXISTS usage_session_models;

-- No query reads raw events by session any more (the sessions queries read the rollups; the CSV
-- export and retention go by time): the index only cost every ingested event an insert.
DROP INDEX IF EXISTS usage_events_session;
