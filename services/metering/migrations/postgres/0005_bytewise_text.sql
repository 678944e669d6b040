-- Every text column compares bytewise (COLLATE "C"). The keys are identifiers (event and session
-- ids, user names, models...); under the database's default collation each comparison went through
-- strcoll (Postgres treats only "C"/"POSIX" as bytewise, not "C.UTF-8"), and ingest compares many:
-- the events' primary key, the compactor's upserts into the rollups' ten-column keys, its sorts and
-- group-bys. Byte order of UTF-8 is code-point order, which is what C.UTF-8 sorts by, so no answer
-- changes there; under another default collation (en_US...) only the order of names of equal cost
-- and which name MIN/LEAST keeps for a session with several users can change.
-- Postgres does not rewrite the tables (same type, only the collation): it rebuilds the indexes on
-- these columns — on usage_events only its primary key (about 1 s per million events). One ALTER
-- TABLE per table, all its text columns at once.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.table_name, string_agg(format('ALTER COLUMN %I TYPE TEXT COLLATE "C"', c.column_name), ', ') AS alters
        FROM information_schema.columns AS c
        JOIN information_schema.tables AS r ON r.table_schema = c.table_schema AND r.table_name = c.table_name
        WHERE c.table_schema = current_schema() AND c.data_type = 'text' AND r.table_type = 'BASE TABLE'
            AND c.table_name <> '_sqlx_migrations'
        GROUP BY c.table_name
    LOOP
        EXECUTE format('ALTER TABLE %I %s', t.table_name, t.alters);
    END LOOP;
END $$;
