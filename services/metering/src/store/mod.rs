//! Storage: SQLite (the embedded default) or Postgres, chosen by URL. Writes go through a group
//! commit: ingest calls queue their batches to a writer, which takes every batch waiting into one
//! transaction — raw events, then what they add to the rollups (hourly, daily, sessions,
//! dimensions), aggregated in Rust from the events newly recorded, one row per distinct key.
//! SQLite's writer is a dedicated thread with its own rusqlite connection that upserts the rollups
//! directly: one cached prepared statement per table, executed row by row with the values bound
//! straight from the records (no SQL built per group, no owned copy per value, no hand-off per
//! statement). Postgres has writer tasks that append the events and the rollup deltas by binary
//! `COPY` (no upsert, no lock shared between writers); a compactor folds the deltas into the
//! rollups (see [`deltas`]) in the background and before every rollup query.
//! Only events that were not already recorded (by event id) reach the rollups, so ingest
//! is idempotent. Queries are plain runtime SQL (no database needed at build time) that both
//! dialects accept.
//!
//! The parts: [`record`] (the stored event and the rollups' shape), [`group`] (the group commit's
//! queue), [`rollups`] (what a group adds to the rollups), [`sqlite`] and [`postgres`] (the two
//! writers), [`copy`] and [`deltas`] (Postgres's binary `COPY` and the delta compactor). This
//! module is the facade over them: connect, insert, compact, and the queries' runtime SQL.
use std::sync::Arc;

use sqlx::{Row, postgres::PgPool, sqlite::SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::{error::MeteringError, time};

mod copy;
mod deltas;
mod group;
mod options;
mod postgres;
mod record;
mod rollups;
mod sqlite;

use deltas::Compactor;
use group::Job;
pub use options::StoreOptions;
pub use postgres::DEFAULT_SCHEMA;
pub use record::{DIM_NAMES, Record};

/// The database and the queue to its writer task(s).
#[derive(Clone)]
pub struct Store {
    db: Db,
    writes: mpsc::Sender<Job>,
    /// Postgres: folds the rollup deltas into the rollups.
    compactor: Option<Arc<Compactor>>,
}

#[derive(Clone)]
enum Db {
    /// Reads only: SQLite allows one writer, so ingest writes go through one dedicated connection
    /// on the writer thread ([`sqlite::writer`]) instead of bouncing off SQLITE_BUSY. Being the only
    /// writer, it keeps its page cache warm across groups.
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code against whichever pool the store holds (the body compiles once per backend).
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.db {
            Db::Sqlite($p) => $body,
            Db::Postgres($p) => $body,
        }
    };
}

/// A bind argument of a runtime query.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    S(String),
    I(i64),
}

/// The type of a selected column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Col {
    Text,
    Int,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    S(String),
    I(i64),
}

impl Val {
    pub fn int(&self) -> i64 {
        match self {
            Val::I(i) => *i,
            Val::S(s) => s.parse().unwrap_or(0),
        }
    }
    pub fn text(&self) -> String {
        match self {
            Val::I(i) => i.to_string(),
            Val::S(s) => s.clone(),
        }
    }
}

impl Store {
    /// Connects (Postgres: in its own schema, `metering` by default, created if absent), runs the
    /// migrations and starts the writer.
    pub async fn connect(opts: &StoreOptions) -> Result<Store, MeteringError> {
        let url = opts.url.as_str();
        if url.starts_with("sqlite:") {
            let (pool, writes) = sqlite::open(opts).await?;
            Ok(Store {
                db: Db::Sqlite(pool),
                writes,
                compactor: None,
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let (pool, writes, compactor) = postgres::open(opts).await?;
            Ok(Store {
                db: Db::Postgres(pool),
                writes,
                compactor: Some(compactor),
            })
        } else {
            Err(MeteringError::BadUrl(url.to_string()))
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.db {
            Db::Sqlite(..) => "sqlite",
            Db::Postgres(..) => "postgres",
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(..))
    }

    pub async fn close(&self) {
        if let Some(c) = &self.compactor {
            // Leave nothing pending (best effort: the next compaction folds whatever is left).
            let _ = c.compact().await;
        }
        if let Db::Sqlite(pool) = &self.db {
            // Checkpoint what the writer left in the WAL; the writer's connection closes when its
            // thread ends (when the last clone of the store is dropped).
            let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(pool)
                .await;
        }
        on_pool!(self, p => p.close().await)
    }

    /// Records the events not already known (by event id) with their rollup increments, in one
    /// transaction with whatever other batches are waiting; returns the records newly recorded.
    pub async fn insert(&self, records: Vec<Record>) -> Result<Vec<Record>, MeteringError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (done, answer) = oneshot::channel();
        self.writes
            .send(Job { records, done })
            .await
            .map_err(|_| MeteringError::WriterStopped)?;
        answer
            .await
            .map_err(|_| MeteringError::WriterStopped)?
            .map_err(MeteringError::Write)
    }

    /// Postgres: folds every rollup delta committed so far into the rollups (returns the delta rows
    /// folded); the queries call this before reading a rollup, so their answers include every
    /// event acknowledged before they began. SQLite writes its rollups directly: nothing to do.
    pub async fn compact(&self) -> Result<u64, MeteringError> {
        match &self.compactor {
            Some(c) => c.compact_pending().await,
            None => Ok(0),
        }
    }

    /// Runs a query with positional `$N` arguments (both dialects accept them) and reads `cols`.
    pub async fn select(
        &self,
        sql: &str,
        args: &[Arg],
        cols: &[Col],
    ) -> Result<Vec<Vec<Val>>, MeteringError> {
        on_pool!(self, pool => {
            let mut q = sqlx::query(sql);
            for a in args {
                q = match a {
                    Arg::S(s) => q.bind(s.clone()),
                    Arg::I(i) => q.bind(*i),
                };
            }
            let rows = q.fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let mut vals = Vec::with_capacity(cols.len());
                for (i, c) in cols.iter().enumerate() {
                    vals.push(match c {
                        Col::Text => Val::S(row.try_get::<Option<String>, _>(i)?.unwrap_or_default()),
                        Col::Int => Val::I(row.try_get::<Option<i64>, _>(i)?.unwrap_or(0)),
                    });
                }
                out.push(vals);
            }
            Ok(out)
        })
    }

    /// Deletes raw events recorded before `cutoff_ms` (the rollup keeps their totals).
    pub async fn delete_events_before(&self, cutoff_ms: i64) -> Result<u64, MeteringError> {
        let sql = "DELETE FROM usage_events WHERE ts_ms < $1";
        Ok(on_pool!(self, p => sqlx::query(sql).bind(cutoff_ms).execute(p).await?.rows_affected()))
    }

    pub async fn load_prices(&self) -> Result<Vec<retort_pricing::Price>, MeteringError> {
        let sql = "SELECT model, effective_from, input, output, reasoning, cache_read, cache_write, tier FROM prices ORDER BY model, effective_from";
        on_pool!(self, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(retort_pricing::Price {
                    model: r.try_get(0)?,
                    effective_from: r.try_get(1)?,
                    input: r.try_get(2)?,
                    output: r.try_get(3)?,
                    reasoning: r.try_get(4)?,
                    cache_read: r.try_get(5)?,
                    cache_write: r.try_get(6)?,
                    tier: r.try_get(7)?,
                });
            }
            Ok(out)
        })
    }

    /// Inserts a price entry; `replace` overwrites an entry for the same model and day.
    pub async fn put_price(
        &self,
        p: &retort_pricing::Price,
        replace: bool,
    ) -> Result<(), MeteringError> {
        let tail = if replace {
            "ON CONFLICT (model, effective_from) DO UPDATE SET input = excluded.input, output = excluded.output, reasoning = excluded.reasoning, cache_read = excluded.cache_read, cache_write = excluded.cache_write, tier = excluded.tier, updated_ms = excluded.updated_ms"
        } else {
            "ON CONFLICT (model, effective_from) DO NOTHING"
        };
        let sql = format!(
            "INSERT INTO prices (model, effective_from, input, output, reasoning, cache_read, cache_write, tier, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) {tail}"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(&p.model)
                .bind(&p.effective_from)
                .bind(p.input)
                .bind(p.output)
                .bind(p.reasoning)
                .bind(p.cache_read)
                .bind(p.cache_write)
                .bind(&p.tier)
                .bind(time::now_ms())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Drops a Postgres schema created for a test or bench run (no-op on SQLite).
    pub async fn drop_schema(&self, schema: &str) -> Result<(), MeteringError> {
        if let Db::Postgres(p) = &self.db
            && schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(p)
                .await?;
        }
        Ok(())
    }
}
