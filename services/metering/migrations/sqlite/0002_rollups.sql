-- Rollups beside the hourly one, all maintained at ingest from the newly recorded events of each
-- write (aggregated in the service, one upsert a table), so the dashboard never scans raw events.

-- Daily rollup: the same dimensions and sums as usage_hourly; queries read whole days here and only
-- a range's partial first and last days from usage_hourly.
CREATE TABLE IF NOT EXISTS usage_daily (
    day_ms BIGINT NOT NULL,
    user_name TEXT NOT NULL,
    team TEXT NOT NULL,
    discipline TEXT NOT NULL,
    level TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    harness TEXT NOT NULL,
    route TEXT NOT NULL,
    tier TEXT NOT NULL,
    requests BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    reasoning_ms BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    unpriced BIGINT NOT NULL,
    PRIMARY KEY (day_ms, user_name, team, discipline, level, model, provider, harness, route, tier)
);

-- One row per session (events with a session id): whole-session totals and first/last times.
-- user_name and harness are the smallest seen (a session normally has one of each).
CREATE TABLE IF NOT EXISTS usage_sessions (
    session_id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    harness TEXT NOT NULL,
    first_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    tokens BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_sessions_last ON usage_sessions (last_ms);
CREATE INDEX IF NOT EXISTS usage_sessions_cost ON usage_sessions (cost_micros);
CREATE INDEX IF NOT EXISTS usage_sessions_duration ON usage_sessions ((last_ms - first_ms));

-- The models each session used.
CREATE TABLE IF NOT EXISTS usage_session_models (
    session_id TEXT NOT NULL,
    model TEXT NOT NULL,
    PRIMARY KEY (session_id, model)
);

-- The values seen for each filterable dimension, by hour and by day (the filter pickers).
CREATE TABLE IF NOT EXISTS usage_dims_hourly (
    hour_ms BIGINT NOT NULL,
    dim TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (hour_ms, dim, value)
);
CREATE TABLE IF NOT EXISTS usage_dims_daily (
    day_ms BIGINT NOT NULL,
    dim TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (day_ms, dim, value)
);

-- Backfill from what an existing database holds (the hourly rollup keeps every total; sessions come
-- from the raw events still retained).
INSERT INTO usage_daily
SELECT hour_ms - hour_ms % 86400000, user_name, team, discipline, level, model, provider, harness, route, tier,
       SUM(requests), SUM(failed), SUM(input_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cache_read_tokens),
       SUM(cache_write_tokens), SUM(cost_micros), SUM(reasoning_ms), SUM(latency_ms), SUM(unpriced)
FROM usage_hourly GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10;
INSERT INTO usage_sessions
SELECT session_id, MIN(user_name), MIN(harness), MIN(ts_ms), MAX(ts_ms), COUNT(*), SUM(cost_micros),
       SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens)
FROM usage_events WHERE session_id <> '' GROUP BY session_id;
INSERT INTO usage_session_models SELECT DISTINCT session_id, model FROM usage_events WHERE session_id <> '';
INSERT INTO usage_dims_hourly
SELECT DISTINCT hour_ms, 'user', user_name FROM usage_hourly UNION SELECT DISTINCT hour_ms, 'team', team FROM usage_hourly
UNION SELECT DISTINCT hour_ms, 'discipline', discipline FROM usage_hourly UNION SELECT DISTINCT hour_ms, 'level', level FROM usage_hourly
UNION SELECT DISTINCT hour_ms, 'model', model FROM usage_hourly UNION SELECT DISTINCT hour_ms, 'provider', provider FROM usage_hourly
UNION SELECT DISTINCT hour_ms, 'harness', harness FROM usage_hourly UNION SELECT DISTINCT hour_ms, 'route', route FROM usage_hourly
UNION SELECT DISTINCT hour_ms, 'tier', tier FROM usage_hourly;
INSERT INTO usage_dims_daily SELECT DISTINCT hour_ms - hour_ms % 86400000, dim, value FROM usage_dims_hourly;
