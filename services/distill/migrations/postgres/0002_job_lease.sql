-- A job is run by one distill process at a time: the process holding its lease (owner + expiry,
-- renewed while the job runs). Another process takes an unfinished job over once its lease expired.
ALTER TABLE distill_jobs ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE distill_jobs ADD COLUMN lease_expires_ms BIGINT NOT NULL DEFAULT 0;
