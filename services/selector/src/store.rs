//! The experience store: every run the selector learned from (full results and probes), in SQLite
//! (the embedded default) or Postgres (its own schema, `retort_selector` unless configured), chosen
//! by URL. The schema is versioned in a table of its own (`selector_migrations`), so the selector
//! can share a database with other services without touching their migrations.
use std::{str::FromStr, time::Duration};

use retort_training::selector::{Budget, Experience, Outcome, TaskContext};
use sqlx::{
    Row,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions},
};

use crate::Error;

/// The Postgres schema used when the configuration names none.
pub const DEFAULT_SCHEMA: &str = "retort_selector";

/// Each step runs once, in order; its number is recorded in `selector_migrations`.
const MIGRATIONS: &[&str] = &["CREATE TABLE IF NOT EXISTS selector_runs (
        seq BIGINT NOT NULL,
        task TEXT NOT NULL,
        arm TEXT NOT NULL,
        context_json TEXT NOT NULL,
        data_fraction DOUBLE PRECISION NOT NULL,
        epoch_fraction DOUBLE PRECISION NOT NULL,
        accuracy DOUBLE PRECISION NOT NULL,
        latency_us DOUBLE PRECISION NOT NULL,
        usd_per_1k DOUBLE PRECISION NOT NULL,
        train_secs DOUBLE PRECISION NOT NULL,
        evaluated BIGINT NOT NULL,
        created_ms BIGINT NOT NULL,
        PRIMARY KEY (seq)
    )"];

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
}

/// `?` placeholders as Postgres numbers them.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

impl Store {
    /// Connects (creating the SQLite file, or the Postgres schema) and brings the tables up to date.
    pub async fn connect(url: &str, schema_name: Option<&str>) -> Result<Store, Error> {
        let store = if url.starts_with("sqlite:") {
            let o = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            Store {
                pool: Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(2)
                        .connect_with(o)
                        .await?,
                ),
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let schema = retort_db::Schema {
                service: "selector",
                default: DEFAULT_SCHEMA,
                marker_table: None,
            };
            let o = retort_db::in_own_schema(PgConnectOptions::from_str(url)?, schema_name, schema)
                .await
                .map_err(|e| match e {
                    retort_db::SchemaError::Name(name) => Error::Config(format!(
                        "selector database_schema {name:?}: letters, digits and _ only"
                    )),
                    retort_db::SchemaError::Sql(e) => e.into(),
                })?;
            Store {
                pool: Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(4)
                        .connect_with(o)
                        .await?,
                ),
            }
        } else {
            return Err(Error::Config(format!(
                "selector database_url {url:?}: expected sqlite://… or postgres://…"
            )));
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn execute(&self, sql: &str) -> Result<(), Error> {
        match &self.pool {
            Pool::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ())?,
            Pool::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ())?,
        }
        Ok(())
    }

    async fn migrate(&self) -> Result<(), Error> {
        self.execute(
            "CREATE TABLE IF NOT EXISTS selector_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .await?;
        let done: i64 = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM selector_migrations")
                    .fetch_one(p)
                    .await?
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM selector_migrations")
                    .fetch_one(p)
                    .await?
            }
        };
        for (i, step) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= done {
                continue;
            }
            self.execute(step).await?;
            let sql = "INSERT INTO selector_migrations (version, applied_ms) VALUES (?, ?)";
            let now = retort_time::now_ms();
            match &self.pool {
                Pool::Sqlite(p) => {
                    sqlx::query(sql).bind(version).bind(now).execute(p).await?;
                }
                Pool::Postgres(p) => {
                    sqlx::query(&numbered(sql))
                        .bind(version)
                        .bind(now)
                        .execute(p)
                        .await?;
                }
            }
        }
        Ok(())
    }

    pub fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> Result<(), Error> {
        match &self.pool {
            Pool::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ())?,
            Pool::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ())?,
        }
        Ok(())
    }

    /// Stores runs, in order, in one transaction.
    pub async fn insert(&self, runs: &[Experience]) -> Result<(), Error> {
        let sql = "INSERT INTO selector_runs (seq, task, arm, context_json, data_fraction, epoch_fraction, accuracy, latency_us, usd_per_1k, train_secs, evaluated, created_ms)
             VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM selector_runs), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        let now = retort_time::now_ms();
        macro_rules! insert_all {
            ($pool:expr, $sql:expr, $first:expr) => {{
                let mut tx = $pool.begin().await?;
                if let Some(first) = $first {
                    sqlx::query(first).execute(&mut *tx).await?;
                }
                for e in runs {
                    sqlx::query($sql)
                        .bind(&e.task)
                        .bind(e.arm.to_string())
                        .bind(serde_json::to_string(&e.context).unwrap_or_default())
                        .bind(e.budget.data_fraction)
                        .bind(e.budget.epoch_fraction)
                        .bind(e.outcome.accuracy)
                        .bind(e.outcome.latency_us)
                        .bind(e.outcome.usd_per_1k)
                        .bind(e.outcome.train_secs)
                        .bind(e.evaluated as i64)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }};
        }
        match &self.pool {
            Pool::Sqlite(p) => insert_all!(p, sql, None::<&str>),
            Pool::Postgres(p) => {
                // Writers take turns, so that `seq` stays unique.
                let sql = numbered(sql);
                insert_all!(
                    p,
                    sql.as_str(),
                    Some("LOCK TABLE selector_runs IN EXCLUSIVE MODE")
                )
            }
        }
        Ok(())
    }

    /// Every stored run, oldest first. A row that no longer reads (a context written by a newer
    /// version, an arm that no longer exists) is skipped with a warning.
    pub async fn all(&self) -> Result<Vec<Experience>, Error> {
        let sql = "SELECT task, arm, context_json, data_fraction, epoch_fraction, accuracy, latency_us, usd_per_1k, train_secs, evaluated FROM selector_runs ORDER BY seq";
        macro_rules! read {
            ($rows:expr) => {{
                let mut out = Vec::new();
                for r in $rows {
                    let arm: String = r.try_get("arm")?;
                    let context: String = r.try_get("context_json")?;
                    let (Ok(arm), Ok(context)) =
                        (arm.parse(), serde_json::from_str::<TaskContext>(&context))
                    else {
                        tracing::warn!(arm, "selector: a stored run does not read; skipped");
                        continue;
                    };
                    let evaluated: i64 = r.try_get("evaluated")?;
                    out.push(Experience {
                        task: r.try_get("task")?,
                        context,
                        arm,
                        budget: Budget {
                            data_fraction: r.try_get("data_fraction")?,
                            epoch_fraction: r.try_get("epoch_fraction")?,
                        },
                        outcome: Outcome {
                            accuracy: r.try_get("accuracy")?,
                            latency_us: r.try_get("latency_us")?,
                            usd_per_1k: r.try_get("usd_per_1k")?,
                            train_secs: r.try_get("train_secs")?,
                        },
                        evaluated: evaluated.max(0) as usize,
                    });
                }
                out
            }};
        }
        Ok(match &self.pool {
            Pool::Sqlite(p) => read!(sqlx::query(sql).fetch_all(p).await?),
            Pool::Postgres(p) => read!(sqlx::query(sql).fetch_all(p).await?),
        })
    }

    /// How many runs are stored.
    pub async fn count(&self) -> Result<usize, Error> {
        let n: i64 = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM selector_runs")
                    .fetch_one(p)
                    .await?
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM selector_runs")
                    .fetch_one(p)
                    .await?
            }
        };
        Ok(n.max(0) as usize)
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}
