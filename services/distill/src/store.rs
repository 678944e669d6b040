//! Storage of jobs, stages, the teacher-answer cache and the results table: SQLite (the embedded
//! default) or Postgres, chosen by URL. Queries are runtime SQL that both dialects accept, written
//! with `?` placeholders (numbered for Postgres).
use std::{collections::HashMap, str::FromStr, time::Duration};

use sqlx::{
    Row,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions},
};

use retort_time::now_ms;

use crate::{
    Error,
    job::{JobState, Stage, StageState},
};

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The distill database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRow {
    pub id: String,
    pub teacher: String,
    pub target: String,
    pub state: JobState,
    /// The stage it runs, or the last it ran.
    pub stage: Stage,
    pub error: String,
    /// The submit request without its data ([`crate::pipeline::JobSpec`]).
    pub request_json: String,
    pub progress_json: String,
    /// The evaluate stage's measurements ([`crate::report::Evaluation`]).
    pub eval_json: String,
    pub report_json: String,
    pub report_md: String,
    pub deployed_model: String,
    pub description: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The distill process running the job (empty: none), until `lease_expires_ms`.
    pub lease_owner: String,
    pub lease_expires_ms: i64,
}

/// A stage a job entered.
#[derive(Clone, Debug, PartialEq)]
pub struct StageRow {
    pub name: Stage,
    pub state: StageState,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub summary: String,
}

/// A cached teacher answer.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedAnswer {
    pub prompt_hash: String,
    pub answer: String,
    /// The model that actually answered (the gateway's `x-retort-model`).
    pub served_model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub latency_ms: i64,
}

/// One row of `distill_results` (see the README's distill section).
#[derive(Clone, Debug, PartialEq)]
pub struct ResultRow {
    pub job_id: String,
    pub teacher: String,
    pub task_kind: String,
    pub n_train: i64,
    pub n_evals: i64,
    pub n_labels: i64,
    pub mean_input_chars: f64,
    pub p95_input_chars: f64,
    pub gold_evals: bool,
    pub teacher_accuracy: Option<f64>,
    pub student_class: String,
    pub student_size: String,
    pub student_accuracy: f64,
    pub agreement: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub parameters: i64,
    pub artefact_bytes: i64,
    pub train_secs: f64,
    pub teacher_usd_per_1k: Option<f64>,
    pub student_usd_per_1k: f64,
    pub objective_met: bool,
    pub backend: String,
    /// Generation only: character error rate of the student and of the teacher (against the
    /// expected answers; the student's against the teacher's without them).
    pub student_cer: Option<f64>,
    pub teacher_cer: Option<f64>,
}

/// The Postgres schema distill keeps its tables and its migration history (`_sqlx_migrations`) in
/// unless `[distill] database_schema` names another, so that it shares a database with the other
/// services (metering keeps its own in `metering`) without either seeing the other's migrations.
pub const DEFAULT_SCHEMA: &str = "distill";

/// A table every distill database has: where it already sits, a database migrated before distill
/// had a schema of its own is found.
const MARKER_TABLE: &str = "distill_jobs";

/// Distill's schema in a shared Postgres database (see [`retort_db::in_own_schema`]).
const SCHEMA: retort_db::Schema = retort_db::Schema {
    service: "distill",
    default: DEFAULT_SCHEMA,
    marker_table: Some(MARKER_TABLE),
};

macro_rules! execute {
    ($store:expr, $sql:expr, [$($arg:expr),* $(,)?]) => {{
        let sql = $store.sql($sql);
        match &$store.pool {
            Pool::Sqlite(p) => sqlx::query(&sql)$(.bind($arg))*.execute(p).await?.rows_affected(),
            Pool::Postgres(p) => sqlx::query(&sql)$(.bind($arg))*.execute(p).await?.rows_affected(),
        }
    }};
}

macro_rules! fetch {
    ($store:expr, $sql:expr, [$($arg:expr),* $(,)?], |$row:ident| $body:expr) => {{
        let sql = $store.sql($sql);
        match &$store.pool {
            Pool::Sqlite(p) => {
                let rows = sqlx::query(&sql)$(.bind($arg))*.fetch_all(p).await?;
                rows.iter().map(|$row| $body).collect::<Result<Vec<_>, Error>>()?
            }
            Pool::Postgres(p) => {
                let rows = sqlx::query(&sql)$(.bind($arg))*.fetch_all(p).await?;
                rows.iter().map(|$row| $body).collect::<Result<Vec<_>, Error>>()?
            }
        }
    }};
}

const JOB_COLS: &str = "id, teacher, target, state, stage, error, request_json, progress_json, eval_json, report_json, report_md, deployed_model, description, created_ms, updated_ms, lease_owner, lease_expires_ms";

macro_rules! job_from_row {
    ($r:ident) => {
        Ok(JobRow {
            id: $r.try_get("id")?,
            teacher: $r.try_get("teacher")?,
            target: $r.try_get("target")?,
            state: $r.try_get::<String, _>("state")?.parse()?,
            stage: $r.try_get::<String, _>("stage")?.parse()?,
            error: $r.try_get("error")?,
            request_json: $r.try_get("request_json")?,
            progress_json: $r.try_get("progress_json")?,
            eval_json: $r.try_get("eval_json")?,
            report_json: $r.try_get("report_json")?,
            report_md: $r.try_get("report_md")?,
            deployed_model: $r.try_get("deployed_model")?,
            description: $r.try_get("description")?,
            created_ms: $r.try_get("created_ms")?,
            updated_ms: $r.try_get("updated_ms")?,
            lease_owner: $r.try_get("lease_owner")?,
            lease_expires_ms: $r.try_get("lease_expires_ms")?,
        })
    };
}

impl Store {
    /// Connects (creating the SQLite file; on Postgres using `schema`, default [`DEFAULT_SCHEMA`],
    /// created if absent — see [`retort_db::in_own_schema`]) and migrates.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Store, Error> {
        if url.starts_with("sqlite:") {
            let o = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(o)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Ok(Store {
                pool: Pool::Sqlite(pool),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let o = retort_db::in_own_schema(PgConnectOptions::from_str(url)?, schema, SCHEMA)
                .await
                .map_err(|e| match e {
                    retort_db::SchemaError::Name(_) => Error::Config(e.to_string()),
                    retort_db::SchemaError::Sql(e) => e.into(),
                })?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .connect_with(o)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Ok(Store {
                pool: Pool::Postgres(pool),
            })
        } else {
            Err(Error::Config(format!(
                "database_url {url:?}: expected sqlite://... or postgres://..."
            )))
        }
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), Error> {
        let _ = execute!(self, "SELECT 1", []);
        Ok(())
    }

    /// `?` placeholders, numbered for Postgres.
    fn sql(&self, sql: &str) -> String {
        match self.pool {
            Pool::Sqlite(_) => sql.to_string(),
            Pool::Postgres(_) => {
                let mut out = String::with_capacity(sql.len() + 16);
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }

    pub async fn insert_job(&self, j: &JobRow) -> Result<(), Error> {
        execute!(
            self,
            &format!(
                "INSERT INTO distill_jobs ({JOB_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            [
                &j.id,
                &j.teacher,
                &j.target,
                j.state.as_str(),
                j.stage.as_str(),
                &j.error,
                &j.request_json,
                &j.progress_json,
                &j.eval_json,
                &j.report_json,
                &j.report_md,
                &j.deployed_model,
                &j.description,
                j.created_ms,
                j.updated_ms,
                &j.lease_owner,
                j.lease_expires_ms,
            ]
        );
        Ok(())
    }

    /// Takes the lease of an unfinished job for `owner` until `now + ttl_ms`: when nobody holds it,
    /// `owner` already does, or the holder let it expire (it died). One atomic UPDATE, so of two
    /// processes racing for a job exactly one gets it.
    pub async fn acquire_lease(&self, id: &str, owner: &str, ttl_ms: i64) -> Result<bool, Error> {
        let now = now_ms();
        let n = execute!(
            self,
            "UPDATE distill_jobs SET lease_owner = ?, lease_expires_ms = ? WHERE id = ? AND state IN ('queued', 'running') AND (lease_owner = ? OR lease_owner = '' OR lease_expires_ms < ?)",
            [owner, now + ttl_ms, id, owner, now]
        );
        Ok(n == 1)
    }

    /// Renews `owner`'s lease of a job that is still unfinished, storing its latest progress with
    /// it. `false`: the lease is lost (another process took the job over) or the job ended or was
    /// cancelled elsewhere.
    pub async fn renew_lease(
        &self,
        id: &str,
        owner: &str,
        ttl_ms: i64,
        progress_json: &str,
    ) -> Result<bool, Error> {
        let now = now_ms();
        let n = execute!(
            self,
            "UPDATE distill_jobs SET lease_expires_ms = ?, progress_json = ?, updated_ms = ? WHERE id = ? AND lease_owner = ? AND state IN ('queued', 'running')",
            [now + ttl_ms, progress_json, now, id, owner]
        );
        Ok(n == 1)
    }

    /// Gives back every lease `owner` holds (a clean shutdown: another process may go on at once).
    pub async fn release_leases(&self, owner: &str) -> Result<(), Error> {
        execute!(
            self,
            "UPDATE distill_jobs SET lease_owner = '', lease_expires_ms = 0 WHERE lease_owner = ?",
            [owner]
        );
        Ok(())
    }

    /// Marks an unfinished job as running `stage`; `false` when it was cancelled (or ended)
    /// meanwhile, possibly by another process.
    pub async fn set_running(&self, id: &str, stage: Stage, error: &str) -> Result<bool, Error> {
        let n = execute!(
            self,
            "UPDATE distill_jobs SET state = 'running', stage = ?, error = ?, updated_ms = ? WHERE id = ? AND state IN ('queued', 'running')",
            [stage.as_str(), error, now_ms(), id]
        );
        Ok(n == 1)
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, Error> {
        let mut rows: Vec<JobRow> = fetch!(
            self,
            &format!("SELECT {JOB_COLS} FROM distill_jobs WHERE id = ?"),
            [id],
            |r| job_from_row!(r)
        );
        Ok(rows.pop())
    }

    /// Newest first.
    pub async fn jobs(&self, limit: i64) -> Result<Vec<JobRow>, Error> {
        Ok(fetch!(
            self,
            &format!("SELECT {JOB_COLS} FROM distill_jobs ORDER BY created_ms DESC, id LIMIT ?"),
            [limit],
            |r| job_from_row!(r)
        ))
    }

    /// Jobs that were queued or running: to resume at start-up.
    pub async fn unfinished_jobs(&self) -> Result<Vec<String>, Error> {
        Ok(fetch!(
            self,
            "SELECT id FROM distill_jobs WHERE state IN ('queued', 'running') ORDER BY created_ms",
            [],
            |r| r.try_get::<String, _>("id").map_err(Error::from)
        ))
    }

    pub async fn set_state(
        &self,
        id: &str,
        state: JobState,
        stage: Stage,
        error: &str,
    ) -> Result<(), Error> {
        execute!(
            self,
            "UPDATE distill_jobs SET state = ?, stage = ?, error = ?, updated_ms = ? WHERE id = ?",
            [state.as_str(), stage.as_str(), error, now_ms(), id]
        );
        Ok(())
    }

    /// Sets the job's warning/error line without changing its state.
    pub async fn set_error(&self, id: &str, error: &str) -> Result<(), Error> {
        execute!(
            self,
            "UPDATE distill_jobs SET error = ?, updated_ms = ? WHERE id = ?",
            [error, now_ms(), id]
        );
        Ok(())
    }

    pub async fn set_progress(&self, id: &str, json: &str) -> Result<(), Error> {
        execute!(
            self,
            "UPDATE distill_jobs SET progress_json = ?, updated_ms = ? WHERE id = ?",
            [json, now_ms(), id]
        );
        Ok(())
    }

    pub async fn set_eval(&self, id: &str, json: &str) -> Result<(), Error> {
        execute!(
            self,
            "UPDATE distill_jobs SET eval_json = ?, updated_ms = ? WHERE id = ?",
            [json, now_ms(), id]
        );
        Ok(())
    }

    pub async fn set_report(&self, id: &str, json: &str, md: &str) -> Result<(), Error> {
        execute!(
            self,
            "UPDATE distill_jobs SET report_json = ?, report_md = ?, updated_ms = ? WHERE id = ?",
            [json, md, now_ms(), id]
        );
        Ok(())
    }

    pub async fn set_deployed(&self, id: &str, model: &str) -> Result<(), Error> {
        execute!(
            self,
            "UPDATE distill_jobs SET deployed_model = ?, updated_ms = ? WHERE id = ?",
            [model, now_ms(), id]
        );
        Ok(())
    }

    /// Marks a stage as running (again, after a restart).
    pub async fn stage_started(&self, id: &str, name: Stage) -> Result<(), Error> {
        execute!(
            self,
            "DELETE FROM distill_stages WHERE job_id = ? AND name = ?",
            [id, name.as_str()]
        );
        execute!(
            self,
            "INSERT INTO distill_stages (job_id, name, state, started_ms, finished_ms, summary) VALUES (?, ?, ?, ?, 0, '')",
            [id, name.as_str(), StageState::Running.as_str(), now_ms()]
        );
        Ok(())
    }

    pub async fn stage_finished(
        &self,
        id: &str,
        name: Stage,
        state: StageState,
        summary: &str,
    ) -> Result<(), Error> {
        execute!(
            self,
            "UPDATE distill_stages SET state = ?, finished_ms = ?, summary = ? WHERE job_id = ? AND name = ?",
            [state.as_str(), now_ms(), summary, id, name.as_str()]
        );
        Ok(())
    }

    /// The stages a job entered, in the order it entered them.
    pub async fn stages(&self, id: &str) -> Result<Vec<StageRow>, Error> {
        Ok(fetch!(
            self,
            "SELECT name, state, started_ms, finished_ms, summary FROM distill_stages WHERE job_id = ? ORDER BY started_ms, name",
            [id],
            |r| Ok(StageRow {
                name: r.try_get::<String, _>("name")?.parse()?,
                state: r.try_get::<String, _>("state")?.parse()?,
                started_ms: r.try_get("started_ms")?,
                finished_ms: r.try_get("finished_ms")?,
                summary: r.try_get("summary")?,
            })
        ))
    }

    /// The cached answers of `teacher` among `hashes`.
    pub async fn cached(
        &self,
        teacher: &str,
        hashes: &[String],
    ) -> Result<HashMap<String, CachedAnswer>, Error> {
        let mut out = HashMap::new();
        for chunk in hashes.chunks(500) {
            let sql = format!(
                "SELECT prompt_hash, answer, served_model, input_tokens, output_tokens, latency_ms FROM teacher_cache WHERE teacher = ? AND prompt_hash IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let sql = self.sql(&sql);
            macro_rules! read {
                ($p:expr) => {{
                    let mut q = sqlx::query(&sql).bind(teacher);
                    for h in chunk {
                        q = q.bind(h);
                    }
                    for r in q.fetch_all($p).await? {
                        let a = CachedAnswer {
                            prompt_hash: r.try_get("prompt_hash")?,
                            answer: r.try_get("answer")?,
                            served_model: r.try_get("served_model")?,
                            input_tokens: r.try_get("input_tokens")?,
                            output_tokens: r.try_get("output_tokens")?,
                            latency_ms: r.try_get("latency_ms")?,
                        };
                        out.insert(a.prompt_hash.clone(), a);
                    }
                }};
            }
            match &self.pool {
                Pool::Sqlite(p) => read!(p),
                Pool::Postgres(p) => read!(p),
            }
        }
        Ok(out)
    }

    /// Caches an answer (the first one stored for a prompt wins).
    pub async fn cache(&self, teacher: &str, a: &CachedAnswer) -> Result<(), Error> {
        execute!(
            self,
            "INSERT INTO teacher_cache (teacher, prompt_hash, answer, served_model, input_tokens, output_tokens, latency_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (teacher, prompt_hash) DO NOTHING",
            [
                teacher,
                &a.prompt_hash,
                &a.answer,
                &a.served_model,
                a.input_tokens,
                a.output_tokens,
                a.latency_ms,
                now_ms(),
            ]
        );
        Ok(())
    }

    /// Records a finished run (replacing an earlier row of the same job).
    pub async fn insert_result(&self, r: &ResultRow) -> Result<(), Error> {
        execute!(
            self,
            "DELETE FROM distill_results WHERE job_id = ?",
            [&r.job_id]
        );
        execute!(
            self,
            "INSERT INTO distill_results (job_id, created_ms, teacher, task_kind, n_train, n_evals, n_labels, mean_input_chars, p95_input_chars, gold_evals, teacher_accuracy, student_class, student_size, student_accuracy, agreement, latency_p50_us, latency_p99_us, parameters, artefact_bytes, train_secs, teacher_usd_per_1k, student_usd_per_1k, objective_met, backend, student_cer, teacher_cer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                &r.job_id,
                now_ms(),
                &r.teacher,
                &r.task_kind,
                r.n_train,
                r.n_evals,
                r.n_labels,
                r.mean_input_chars,
                r.p95_input_chars,
                i64::from(r.gold_evals),
                r.teacher_accuracy,
                &r.student_class,
                &r.student_size,
                r.student_accuracy,
                r.agreement,
                r.latency_p50_us,
                r.latency_p99_us,
                r.parameters,
                r.artefact_bytes,
                r.train_secs,
                r.teacher_usd_per_1k,
                r.student_usd_per_1k,
                i64::from(r.objective_met),
                &r.backend,
                r.student_cer,
                r.teacher_cer,
            ]
        );
        Ok(())
    }

    /// The results row of a job, if it finished.
    pub async fn result(&self, job_id: &str) -> Result<Option<ResultRow>, Error> {
        let mut rows: Vec<ResultRow> = fetch!(
            self,
            "SELECT * FROM distill_results WHERE job_id = ?",
            [job_id],
            |r| Ok(ResultRow {
                job_id: r.try_get("job_id")?,
                teacher: r.try_get("teacher")?,
                task_kind: r.try_get("task_kind")?,
                n_train: r.try_get("n_train")?,
                n_evals: r.try_get("n_evals")?,
                n_labels: r.try_get("n_labels")?,
                mean_input_chars: r.try_get("mean_input_chars")?,
                p95_input_chars: r.try_get("p95_input_chars")?,
                gold_evals: r.try_get::<i64, _>("gold_evals")? != 0,
                teacher_accuracy: r.try_get("teacher_accuracy")?,
                student_class: r.try_get("student_class")?,
                student_size: r.try_get("student_size")?,
                student_accuracy: r.try_get("student_accuracy")?,
                agreement: r.try_get("agreement")?,
                latency_p50_us: r.try_get("latency_p50_us")?,
                latency_p99_us: r.try_get("latency_p99_us")?,
                parameters: r.try_get("parameters")?,
                artefact_bytes: r.try_get("artefact_bytes")?,
                train_secs: r.try_get("train_secs")?,
                teacher_usd_per_1k: r.try_get("teacher_usd_per_1k")?,
                student_usd_per_1k: r.try_get("student_usd_per_1k")?,
                objective_met: r.try_get::<i64, _>("objective_met")? != 0,
                backend: r.try_get("backend")?,
                student_cer: r.try_get("student_cer")?,
                teacher_cer: r.try_get("teacher_cer")?,
            })
        );
        Ok(rows.pop())
    }
}
