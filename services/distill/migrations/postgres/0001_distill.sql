-- Distillation jobs: the request (without its data, which sits in the job's folder), where the job is,
-- its last progress snapshot, and its report once written.
CREATE TABLE IF NOT EXISTS distill_jobs (
    id TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    stage TEXT NOT NULL,
    error TEXT NOT NULL,
    request_json TEXT NOT NULL,
    progress_json TEXT NOT NULL,
    eval_json TEXT NOT NULL,
    report_json TEXT NOT NULL,
    report_md TEXT NOT NULL,
    deployed_model TEXT NOT NULL,
    description TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS distill_jobs_created ON distill_jobs (created_ms);

-- One row per stage a job entered.
CREATE TABLE IF NOT EXISTS distill_stages (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    finished_ms BIGINT NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (job_id, name)
);

-- Teacher answers, keyed by teacher and the SHA-256 of the rendered prompt: a resumed or repeated job
-- never pays for the same answer twice.
CREATE TABLE IF NOT EXISTS teacher_cache (
    teacher TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    answer TEXT NOT NULL,
    served_model TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (teacher, prompt_hash)
);

-- One row per finished run: the task's features, the student's class and size, and what it achieved
-- (the training data of the student selector). See services/distill/README section in README.md.
CREATE TABLE IF NOT EXISTS distill_results (
    job_id TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    teacher TEXT NOT NULL,
    task_kind TEXT NOT NULL,
    n_train BIGINT NOT NULL,
    n_evals BIGINT NOT NULL,
    n_labels BIGINT NOT NULL,
    mean_input_chars DOUBLE PRECISION NOT NULL,
    p95_input_chars DOUBLE PRECISION NOT NULL,
    gold_evals BIGINT NOT NULL,
    teacher_accuracy DOUBLE PRECISION,
    student_class TEXT NOT NULL,
    student_size TEXT NOT NULL,
    student_accuracy DOUBLE PRECISION NOT NULL,
    agreement DOUBLE PRECISION NOT NULL,
    latency_p50_us DOUBLE PRECISION NOT NULL,
    latency_p99_us DOUBLE PRECISION NOT NULL,
    parameters BIGINT NOT NULL,
    artefact_bytes BIGINT NOT NULL,
    train_secs DOUBLE PRECISION NOT NULL,
    teacher_usd_per_1k DOUBLE PRECISION,
    student_usd_per_1k DOUBLE PRECISION NOT NULL,
    objective_met BIGINT NOT NULL,
    backend TEXT NOT NULL
);
