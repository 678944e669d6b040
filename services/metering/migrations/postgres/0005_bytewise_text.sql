-- Every text column of metering's tables compares bytewise (COLLATE "C"). The keys are identifiers
-- (event and session ids, user names, models...); under the database's default collation each
-- comparison went through strcoll (Postgres treats only "C"/"POSIX" as bytewise, not "C.UTF-8"), and
-- ingest compares many: the events' primary key, the compactor's upserts into the rollups' ten-column
-- keys, its sorts and group-bys. Byte order of UTF-8 is code-point order, which is what C.UTF-8 sorts
-- by, so no answer changes there. Under another default collation (en_US...) what sorts by text
-- changes to byte order: ties broken by name or session id, the dimension values listed (and which
-- 500 are kept), a text dimension ordered by key, which name MIN/LEAST keeps for a session with
-- several users, and a CSV export paged across the upgrade may repeat or skip rows at its cursor.
-- Postgres does not rewrite the tables (same type, only the collation): it rebuilds the indexes on
-- these columns — on usage_events only its primary key (about 1 s per million events), during which
-- ingest and queries wait. The tables are locked first in the order writers and the compactor take
-- them, so an older process still running cannot deadlock with this migration.
DO $$
DECLARE
    -- Metering's tables, in the order writers and the compactor lock them.
    tables text[] := ARRAY['usage_events', 'usage_delta_hourly', 'usage_delta_sessions', 'usage_hourly', 'usage_daily',
        'usage_dims_hourly', 'usage_dims_daily', 'usage_sessions', 'usage_session_dims', 'prices'];
    t text;
    alters text;
BEGIN
    FOREACH t IN ARRAY tables LOOP
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', t);
    END LOOP;
    FOREACH t IN ARRAY tables LOOP
        SELECT string_agg(format('ALTER COLUMN %I TYPE TEXT COLLATE "C"', column_name), ', ') INTO alters
        FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = t AND data_type = 'text';
        IF alters IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I %s', t, alters);
        END IF;
    END LOOP;
END $$;
