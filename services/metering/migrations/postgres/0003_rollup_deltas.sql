-- Rollup deltas: ingest no longer upserts the rollups. Each group commit appends what it adds to
-- them here, by binary COPY in the same transaction as its events (one row per distinct hourly key,
-- one per distinct session and model); no index, so writers never look up or lock a key. The
-- compactor (src/deltas.rs) deletes them and folds them into usage_hourly, usage_daily,
-- usage_dims_*, usage_sessions and usage_session_models in one transaction, in the background and
-- before every rollup query. Autovacuum comes sooner than its default (20 % of the table) on
-- these insert-then-delete tables; the compactor also vacuums them itself.
CREATE TABLE IF NOT EXISTS usage_delta_hourly (
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
    unpriced BIGINT NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000);

CREATE TABLE IF NOT EXISTS usage_delta_sessions (
    session_id TEXT NOT NULL,
    model TEXT NOT NULL,
    user_name TEXT NOT NULL,
    harness TEXT NOT NULL,
    first_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    tokens BIGINT NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000);

-- The compactor updates only the sums of usage_hourly and usage_daily rows: room left in each page
-- lets those updates be HOT (no new entry in the ten-column primary key). Applies to pages written
-- from now on.
ALTER TABLE usage_hourly SET (fillfactor = 80);
ALTER TABLE usage_daily SET (fillfactor = 80);
