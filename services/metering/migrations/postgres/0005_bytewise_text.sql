-- Every text column compares bytewise (COLLATE "C"). The keys are identifiers (event and session
-- ids, user names, models...); under the database's default collation each comparison went through
-- strcoll (Postgres treats only "C"/"POSIX" as bytewise, not "C.UTF-8"), and ingest compares many:
-- the events' primary key, the compactor's upserts into the rollups' ten-column keys, its sorts and
-- group-bys. Byte order of UTF-8 is code-point order, which is what C.UTF-8 sorts by, so no answer
-- changes there; under another default collation (en_US...) only the order of names of equal cost
-- and which name MIN/LEAST keeps for a session with several users can change.
-- Postgres does not rewrite the tables (same type, only the collation): it rebuilds the indexes on
-- these columns — on usage_events only its primary key (about 1 s per million events).
ALTER TABLE prices ALTER COLUMN model TYPE TEXT COLLATE "C",
    ALTER COLUMN effective_from TYPE TEXT COLLATE "C",
    ALTER COLUMN tier TYPE TEXT COLLATE "C";
ALTER TABLE usage_daily ALTER COLUMN user_name TYPE TEXT COLLATE "C",
    ALTER COLUMN team TYPE TEXT COLLATE "C",
    ALTER COLUMN discipline TYPE TEXT COLLATE "C",
    ALTER COLUMN level TYPE TEXT COLLATE "C",
    ALTER COLUMN model TYPE TEXT COLLATE "C",
    ALTER COLUMN provider TYPE TEXT COLLATE "C",
    ALTER COLUMN harness TYPE TEXT COLLATE "C",
    ALTER COLUMN route TYPE TEXT COLLATE "C",
    ALTER COLUMN tier TYPE TEXT COLLATE "C";
ALTER TABLE usage_delta_hourly ALTER COLUMN user_name TYPE TEXT COLLATE "C",
    ALTER COLUMN team TYPE TEXT COLLATE "C",
    ALTER COLUMN discipline TYPE TEXT COLLATE "C",
    ALTER COLUMN level TYPE TEXT COLLATE "C",
    ALTER COLUMN model TYPE TEXT COLLATE "C",
    ALTER COLUMN provider TYPE TEXT COLLATE "C",
    ALTER COLUMN harness TYPE TEXT COLLATE "C",
    ALTER COLUMN route TYPE TEXT COLLATE "C",
    ALTER COLUMN tier TYPE TEXT COLLATE "C";
ALTER TABLE usage_delta_sessions ALTER COLUMN session_id TYPE TEXT COLLATE "C",
    ALTER COLUMN model TYPE TEXT COLLATE "C",
    ALTER COLUMN user_name TYPE TEXT COLLATE "C",
    ALTER COLUMN harness TYPE TEXT COLLATE "C",
    ALTER COLUMN team TYPE TEXT COLLATE "C",
    ALTER COLUMN discipline TYPE TEXT COLLATE "C",
    ALTER COLUMN level TYPE TEXT COLLATE "C",
    ALTER COLUMN provider TYPE TEXT COLLATE "C",
    ALTER COLUMN route TYPE TEXT COLLATE "C",
    ALTER COLUMN tier TYPE TEXT COLLATE "C";
ALTER TABLE usage_dims_daily ALTER COLUMN dim TYPE TEXT COLLATE "C",
    ALTER COLUMN value TYPE TEXT COLLATE "C";
ALTER TABLE usage_dims_hourly ALTER COLUMN dim TYPE TEXT COLLATE "C",
    ALTER COLUMN value TYPE TEXT COLLATE "C";
ALTER TABLE usage_events ALTER COLUMN event_id TYPE TEXT COLLATE "C",
    ALTER COLUMN request_id TYPE TEXT COLLATE "C",
    ALTER COLUMN user_name TYPE TEXT COLLATE "C",
    ALTER COLUMN team TYPE TEXT COLLATE "C",
    ALTER COLUMN discipline TYPE TEXT COLLATE "C",
    ALTER COLUMN level TYPE TEXT COLLATE "C",
    ALTER COLUMN session_id TYPE TEXT COLLATE "C",
    ALTER COLUMN harness TYPE TEXT COLLATE "C",
    ALTER COLUMN route TYPE TEXT COLLATE "C",
    ALTER COLUMN provider TYPE TEXT COLLATE "C",
    ALTER COLUMN model TYPE TEXT COLLATE "C",
    ALTER COLUMN outcome TYPE TEXT COLLATE "C",
    ALTER COLUMN price_version TYPE TEXT COLLATE "C",
    ALTER COLUMN tier TYPE TEXT COLLATE "C";
ALTER TABLE usage_hourly ALTER COLUMN user_name TYPE TEXT COLLATE "C",
    ALTER COLUMN team TYPE TEXT COLLATE "C",
    ALTER COLUMN discipline TYPE TEXT COLLATE "C",
    ALTER COLUMN level TYPE TEXT COLLATE "C",
    ALTER COLUMN model TYPE TEXT COLLATE "C",
    ALTER COLUMN provider TYPE TEXT COLLATE "C",
    ALTER COLUMN harness TYPE TEXT COLLATE "C",
    ALTER COLUMN route TYPE TEXT COLLATE "C",
    ALTER COLUMN tier TYPE TEXT COLLATE "C";
ALTER TABLE usage_session_dims ALTER COLUMN session_id TYPE TEXT COLLATE "C",
    ALTER COLUMN user_name TYPE TEXT COLLATE "C",
    ALTER COLUMN team TYPE TEXT COLLATE "C",
    ALTER COLUMN discipline TYPE TEXT COLLATE "C",
    ALTER COLUMN level TYPE TEXT COLLATE "C",
    ALTER COLUMN model TYPE TEXT COLLATE "C",
    ALTER COLUMN provider TYPE TEXT COLLATE "C",
    ALTER COLUMN harness TYPE TEXT COLLATE "C",
    ALTER COLUMN route TYPE TEXT COLLATE "C",
    ALTER COLUMN tier TYPE TEXT COLLATE "C";
ALTER TABLE usage_sessions ALTER COLUMN session_id TYPE TEXT COLLATE "C",
    ALTER COLUMN user_name TYPE TEXT COLLATE "C",
    ALTER COLUMN harness TYPE TEXT COLLATE "C";
