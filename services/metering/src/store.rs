//! Storage: SQLite (the embedded default) or Postgres, chosen by URL, behind one enum. Raw events
//! and the hourly rollup are written in one transaction per batch; only events that were not
//! already recorded (by event id) reach the rollup, so ingest is idempotent. Queries are plain
//! runtime SQL (no database needed at build time) that both dialects accept.
use std::{collections::BTreeMap, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    Connection, Row,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
        SqliteSynchronous,
    },
};

use crate::{error::MeteringError, time};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://...` or `postgres://...`.
    pub url: String,
    /// Postgres only: a schema to create (if absent) and use (tests and benches isolate runs with it).
    pub schema: Option<String>,
    pub max_connections: u32,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions {
            url: url.into(),
            schema: None,
            max_connections: 8,
        }
    }
}

#[derive(Clone)]
pub enum Store {
    /// SQLite allows one writer: ingest writes are serialised through one dedicated connection
    /// instead of bouncing off SQLITE_BUSY. Being the only writer, it keeps its page cache warm
    /// across batches (a pooled connection must re-read the indexes another connection changed).
    Sqlite(SqlitePool, Arc<tokio::sync::Mutex<SqliteConnection>>),
    Postgres(PgPool),
}

/// Runs the same code against whichever pool the store holds (the body compiles once per backend).
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match $store {
            Store::Sqlite($p, _) => $body,
            Store::Postgres($p) => $body,
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

/// One normalised, priced event, as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub event_id: String,
    pub ts_ms: i64,
    pub request_id: String,
    pub user: String,
    pub team: String,
    pub discipline: String,
    pub level: String,
    pub session_id: String,
    pub harness: String,
    pub route: String,
    pub provider: String,
    pub model: String,
    pub outcome: String,
    pub status: i64,
    pub input: i64,
    pub output: i64,
    pub reasoning: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    pub latency_ms: i64,
    pub ttft_ms: i64,
    pub reasoning_ms: i64,
    pub stream: bool,
    pub cost: i64,
    pub price_version: String,
    pub tier: String,
    pub unpriced: bool,
    pub unknown_user: bool,
}

const EVENT_TEXT_COLS: [&str; 14] = [
    "event_id",
    "request_id",
    "user_name",
    "team",
    "discipline",
    "level",
    "session_id",
    "harness",
    "route",
    "provider",
    "model",
    "outcome",
    "price_version",
    "tier",
];
const EVENT_INT_COLS: [&str; 15] = [
    "ts_ms",
    "status",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "latency_ms",
    "ttft_ms",
    "reasoning_ms",
    "stream",
    "cost_micros",
    "unpriced",
    "unknown_user",
    "recorded_ms",
];

impl Record {
    fn texts(&self) -> [&str; 14] {
        [
            &self.event_id,
            &self.request_id,
            &self.user,
            &self.team,
            &self.discipline,
            &self.level,
            &self.session_id,
            &self.harness,
            &self.route,
            &self.provider,
            &self.model,
            &self.outcome,
            &self.price_version,
            &self.tier,
        ]
    }
    fn ints(&self, recorded: i64) -> [i64; 15] {
        [
            self.ts_ms,
            self.status,
            self.input,
            self.output,
            self.reasoning,
            self.cache_read,
            self.cache_write,
            self.latency_ms,
            self.ttft_ms,
            self.reasoning_ms,
            i64::from(self.stream),
            self.cost,
            i64::from(self.unpriced),
            i64::from(self.unknown_user),
            recorded,
        ]
    }
}

/// The rollup's key: the hour and every dimension the dashboard groups by.
type RollKey = (i64, [String; 9]);
const ROLL_DIMS: [&str; 9] = [
    "user_name",
    "team",
    "discipline",
    "level",
    "model",
    "provider",
    "harness",
    "route",
    "tier",
];
const ROLL_SUMS: [&str; 11] = [
    "requests",
    "failed",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_micros",
    "reasoning_ms",
    "latency_ms",
    "unpriced",
];

fn rollup(records: &[&Record]) -> BTreeMap<RollKey, [i64; 11]> {
    let mut m: BTreeMap<RollKey, [i64; 11]> = BTreeMap::new();
    for r in records {
        let key = (
            time::hour_floor(r.ts_ms),
            [
                r.user.clone(),
                r.team.clone(),
                r.discipline.clone(),
                r.level.clone(),
                r.model.clone(),
                r.provider.clone(),
                r.harness.clone(),
                r.route.clone(),
                r.tier.clone(),
            ],
        );
        let s = m.entry(key).or_default();
        let add = [
            1,
            i64::from(r.outcome != "ok"),
            r.input,
            r.output,
            r.reasoning,
            r.cache_read,
            r.cache_write,
            r.cost,
            r.reasoning_ms,
            r.latency_ms,
            i64::from(r.unpriced),
        ];
        for (a, b) in s.iter_mut().zip(add) {
            *a += b;
        }
    }
    m
}

fn upsert_tail() -> String {
    let pk = std::iter::once("hour_ms")
        .chain(ROLL_DIMS)
        .collect::<Vec<_>>()
        .join(", ");
    let set = ROLL_SUMS
        .iter()
        .map(|c| format!("{c} = usage_hourly.{c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(" ON CONFLICT ({pk}) DO UPDATE SET {set}")
}

fn event_cols() -> String {
    EVENT_TEXT_COLS
        .iter()
        .chain(EVENT_INT_COLS.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

fn roll_cols() -> String {
    std::iter::once("hour_ms")
        .chain(ROLL_DIMS)
        .chain(ROLL_SUMS)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows per multi-row INSERT into SQLite (29 binds a row, under SQLite's 32,766 limit).
const SQLITE_CHUNK: usize = 1000;

impl Store {
    /// Connects, creates the Postgres schema if asked, and runs the migrations.
    pub async fn connect(opts: &StoreOptions) -> Result<Store, MeteringError> {
        let url = opts.url.as_str();
        if url.starts_with("sqlite:") {
            let o = SqliteConnectOptions::from_str(url)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                // 32 MiB of page cache a connection (the default is 2 MiB: the random event-id
                // index alone outgrows it), and fewer, larger checkpoints.
                .pragma("cache_size", "-32768")
                .pragma("wal_autocheckpoint", "8192")
                .pragma("temp_store", "memory");
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections)
                .connect_with(o.clone())
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            let writer = SqliteConnection::connect_with(&o).await?;
            Ok(Store::Sqlite(
                pool,
                Arc::new(tokio::sync::Mutex::new(writer)),
            ))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let mut o = PgConnectOptions::from_str(url)?;
            if let Some(schema) = &opts.schema {
                if !schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(MeteringError::Config(format!(
                        "schema name {schema:?}: letters, digits and _ only"
                    )));
                }
                let one = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(o.clone())
                    .await?;
                sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                    .execute(&one)
                    .await?;
                one.close().await;
                o = o.options([("search_path", schema.as_str())]);
            }
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .connect_with(o)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Ok(Store::Postgres(pool))
        } else {
            Err(MeteringError::BadUrl(url.to_string()))
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(..) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    pub async fn close(&self) {
        if let Store::Sqlite(_, writer) = self {
            // Checkpoint what the writer left in the WAL; the connection itself closes on drop.
            let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut *writer.lock().await)
                .await;
        }
        on_pool!(self, p => p.close().await)
    }

    /// Records the events not already known; returns the ids newly recorded. Raw rows and their
    /// rollup increments commit together.
    pub async fn insert(&self, records: &[Record]) -> Result<Vec<String>, MeteringError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let recorded = time::now_ms();
        match self {
            Store::Sqlite(_, writer) => {
                let mut w = writer.lock().await;
                let mut tx = w.begin().await?;
                let mut inserted = Vec::new();
                for chunk in records.chunks(SQLITE_CHUNK) {
                    let row = format!("({})", vec!["?"; 29].join(","));
                    let sql = format!(
                        "INSERT INTO usage_events ({}) VALUES {} ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                        event_cols(),
                        vec![row.as_str(); chunk.len()].join(",")
                    );
                    let mut q = sqlx::query(&sql);
                    for r in chunk {
                        for t in r.texts() {
                            q = q.bind(t);
                        }
                        for i in r.ints(recorded) {
                            q = q.bind(i);
                        }
                    }
                    for row in q.fetch_all(&mut *tx).await? {
                        inserted.push(row.try_get::<String, _>(0)?);
                    }
                }
                let set: std::collections::HashSet<&str> =
                    inserted.iter().map(String::as_str).collect();
                let new: Vec<&Record> = records
                    .iter()
                    .filter(|r| set.contains(r.event_id.as_str()))
                    .collect();
                let roll: Vec<_> = rollup(&new).into_iter().collect();
                for chunk in roll.chunks(SQLITE_CHUNK) {
                    let row = format!("({})", vec!["?"; 21].join(","));
                    let sql = format!(
                        "INSERT INTO usage_hourly ({}) VALUES {}{}",
                        roll_cols(),
                        vec![row.as_str(); chunk.len()].join(","),
                        upsert_tail()
                    );
                    let mut q = sqlx::query(&sql);
                    for ((hour, dims), sums) in chunk {
                        q = q.bind(*hour);
                        for d in dims {
                            q = q.bind(d.as_str());
                        }
                        for s in sums {
                            q = q.bind(*s);
                        }
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(inserted)
            }
            Store::Postgres(pool) => {
                // One statement per table whatever the batch size: every column travels as an array.
                let mut texts: Vec<Vec<&str>> = vec![Vec::with_capacity(records.len()); 14];
                let mut ints: Vec<Vec<i64>> = vec![Vec::with_capacity(records.len()); 15];
                for r in records {
                    for (c, v) in texts.iter_mut().zip(r.texts()) {
                        c.push(v);
                    }
                    for (c, v) in ints.iter_mut().zip(r.ints(recorded)) {
                        c.push(v);
                    }
                }
                let unnest = (1..=14)
                    .map(|i| format!("${i}::text[]"))
                    .chain((15..=29).map(|i| format!("${i}::bigint[]")));
                let sql = format!(
                    "INSERT INTO usage_events ({}) SELECT * FROM UNNEST({}) ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                    event_cols(),
                    unnest.collect::<Vec<_>>().join(", ")
                );
                let mut q = sqlx::query(&sql);
                for c in &texts {
                    q = q.bind(c);
                }
                for c in &ints {
                    q = q.bind(c);
                }
                let mut tx = pool.begin().await?;
                let mut inserted = Vec::new();
                for row in q.fetch_all(&mut *tx).await? {
                    inserted.push(row.try_get::<String, _>(0)?);
                }
                let set: std::collections::HashSet<&str> =
                    inserted.iter().map(String::as_str).collect();
                let new: Vec<&Record> = records
                    .iter()
                    .filter(|r| set.contains(r.event_id.as_str()))
                    .collect();
                let roll = rollup(&new);
                if !roll.is_empty() {
                    let mut hours = Vec::with_capacity(roll.len());
                    let mut dims: Vec<Vec<&str>> = vec![Vec::with_capacity(roll.len()); 9];
                    let mut sums: Vec<Vec<i64>> = vec![Vec::with_capacity(roll.len()); 11];
                    for ((h, d), s) in &roll {
                        hours.push(*h);
                        for (c, v) in dims.iter_mut().zip(d) {
                            c.push(v.as_str());
                        }
                        for (c, v) in sums.iter_mut().zip(s) {
                            c.push(*v);
                        }
                    }
                    let unnest = std::iter::once("$1::bigint[]".to_string())
                        .chain((2..=10).map(|i| format!("${i}::text[]")))
                        .chain((11..=21).map(|i| format!("${i}::bigint[]")));
                    let sql = format!(
                        "INSERT INTO usage_hourly ({}) SELECT * FROM UNNEST({}){}",
                        roll_cols(),
                        unnest.collect::<Vec<_>>().join(", "),
                        upsert_tail()
                    );
                    let mut q = sqlx::query(&sql).bind(&hours);
                    for c in &dims {
                        q = q.bind(c);
                    }
                    for c in &sums {
                        q = q.bind(c);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(inserted)
            }
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
        if let Store::Postgres(p) = self
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
