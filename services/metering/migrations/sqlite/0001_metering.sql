-- Raw usage events: one row per gateway attempt, priced when recorded.
CREATE TABLE IF NOT EXISTS usage_events (
    event_id TEXT PRIMARY KEY,
    ts_ms BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    team TEXT NOT NULL,
    discipline TEXT NOT NULL,
    level TEXT NOT NULL,
    session_id TEXT NOT NULL,
    harness TEXT NOT NULL,
    route TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT NOT NULL,
    reasoning_ms BIGINT NOT NULL,
    stream BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    price_version TEXT NOT NULL,
    tier TEXT NOT NULL,
    unpriced BIGINT NOT NULL,
    unknown_user BIGINT NOT NULL,
    recorded_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_events_ts ON usage_events (ts_ms);
CREATE INDEX IF NOT EXISTS usage_events_session ON usage_events (session_id, ts_ms);

-- Hourly rollup, maintained at ingest (only newly recorded events are added): what the dashboard reads.
CREATE TABLE IF NOT EXISTS usage_hourly (
    hour_ms BIGINT NOT NULL,
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
    PRIMARY KEY (hour_ms, user_name, team, discipline, level, model, provider, harness, route, tier)
);

-- The price table as edited at runtime (configured entries are inserted when absent).
CREATE TABLE IF NOT EXISTS prices (
    model TEXT NOT NULL,
    effective_from TEXT NOT NULL,
    input REAL NOT NULL,
    output REAL NOT NULL,
    reasoning REAL,
    cache_read REAL,
    cache_write REAL,
    tier TEXT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (model, effective_from)
);
