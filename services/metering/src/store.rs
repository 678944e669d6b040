//! Storage: SQLite (the embedded default) or Postgres, chosen by URL. Writes go through a group
//! commit: ingest calls queue their batches to a writer, which takes every batch waiting into one
//! transaction — raw events, then what they add to the rollups (hourly, daily, sessions,
//! dimensions), aggregated in Rust from the events newly recorded, one row per distinct key.
//! SQLite's writer is a dedicated thread with its own rusqlite connection that upserts the rollups
//! directly: one cached prepared statement per table, executed row by row with the values bound
//! straight from the records (no SQL built per group, no owned copy per value, no hand-off per
//! statement). Postgres has writer tasks that append the events and the rollup deltas by binary
//! `COPY` (no upsert, no lock shared between writers); a compactor folds the deltas into the
//! rollups (see [`crate::deltas`]) in the background and before every rollup query.
//! Only events that were not already recorded (by event id) reach the rollups, so ingest
//! is idempotent. Queries are plain runtime SQL (no database needed at build time) that both
//! dialects accept.
use std::{
    collections::{BTreeMap, BTreeSet},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

// foldhash: these sets hold a group's ids (SipHash was the service's top symbol at ingest).
use foldhash::{HashSet, HashSetExt};
use sqlx::{
    Executor, Row,
    postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{
    deltas::{Compactor, CopyData, Deltas, copy_in},
    error::MeteringError,
    time,
};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://...` or `postgres://...`.
    pub url: String,
    /// Postgres only: a schema to create (if absent) and use (tests and benches isolate runs with it).
    pub schema: Option<String>,
    pub max_connections: u32,
    /// Postgres only: write events with a binary `COPY` (the default; it probes for stored ids only
    /// after meeting one); `false` writes them with `INSERT ... SELECT FROM UNNEST ... ON CONFLICT
    /// DO NOTHING RETURNING` (the slower path, kept to compare against and as the fallback under
    /// races).
    pub pg_copy: bool,
    /// Postgres only: group commits written at once, each on its own connection.
    pub pg_writers: usize,
    /// Postgres only: how often the background compactor folds the rollup deltas in; `None`
    /// leaves them to the queries (which always compact first) and to [`Store::compact`].
    pub pg_compact_every: Option<Duration>,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions {
            url: url.into(),
            schema: None,
            max_connections: 8,
            pg_copy: true,
            pg_writers: PG_WRITERS,
            pg_compact_every: Some(crate::deltas::COMPACT_EVERY),
        }
    }
}

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
    /// on the writer thread ([`sqlite_writer`]) instead of bouncing off SQLITE_BUSY. Being the only
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

/// SQLite: insert-only rollup rows (dimension values by hour and day) known to
/// be in the database already: written and committed by this process. The writer leaves them out of
/// later groups; the set is cleared when it grows past [`KNOWN_MAX`]. (Rows are never deleted, so
/// a stale entry cannot hide a missing row; another process writing the same database only makes
/// this process write a row twice, which `ON CONFLICT DO NOTHING` absorbs.)
type Known = Arc<std::sync::Mutex<HashSet<(String, i64, String, String)>>>;
const KNOWN_MAX: usize = 200_000;

/// One ingest call's batch, waiting for the writer; answered with the records newly recorded.
struct Job {
    records: Vec<Record>,
    done: oneshot::Sender<Result<Vec<Record>, String>>,
}

/// Batches queued for the writer before `insert` waits (backpressure).
const QUEUE_JOBS: usize = 64;
/// A group commit takes waiting batches until it holds this many events.
const GROUP_MAX: usize = 20_000;
/// Concurrent writers: SQLite has one (a thread); Postgres by default takes three groups at once
/// (they only append to unindexed delta tables and insert events, so they never wait on each
/// other's rows; a third overlaps the commits' WAL flushes: at 4 bench streams 86–94k → 100–106k
/// events/s once the compactor's CPU had shrunk, where it had been within noise before).
const PG_WRITERS: usize = 3;

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
    /// The event's rollup key dimensions, in [`ROLL_DIMS`] order.
    pub(crate) fn dims(&self) -> [&str; 9] {
        [
            &self.user,
            &self.team,
            &self.discipline,
            &self.level,
            &self.model,
            &self.provider,
            &self.harness,
            &self.route,
            &self.tier,
        ]
    }
    /// What the event adds to its rollup key's sums, in [`ROLL_SUMS`] order.
    pub(crate) fn sums(&self) -> [i64; 11] {
        [
            1,
            i64::from(self.outcome != "ok"),
            self.input,
            self.output,
            self.reasoning,
            self.cache_read,
            self.cache_write,
            self.cost,
            self.reasoning_ms,
            self.latency_ms,
            i64::from(self.unpriced),
        ]
    }
}

/// The rollups' dimensions, in key order.
pub(crate) const ROLL_DIMS: [&str; 9] = [
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
/// The hourly and daily rollups' sums, in column order.
pub(crate) const ROLL_SUMS: [&str; 11] = [
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
/// The filterable dimensions as the query API names them, with the column each is.
pub const DIM_NAMES: [(&str, &str); 9] = [
    ("user", "user_name"),
    ("team", "team"),
    ("discipline", "discipline"),
    ("level", "level"),
    ("model", "model"),
    ("provider", "provider"),
    ("harness", "harness"),
    ("route", "route"),
    ("tier", "tier"),
];

/// A rollup key: the bucket start and every dimension the dashboard groups by.
type RollKey<'a> = (i64, [&'a str; 9]);

/// A session's totals (or those of its events with one rollup key).
#[derive(Debug, Clone)]
pub(crate) struct SessionSums<'a> {
    /// The least user and harness seen (a session has one of each).
    pub(crate) user: &'a str,
    pub(crate) harness: &'a str,
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) requests: i64,
    pub(crate) cost: i64,
    pub(crate) tokens: i64,
}

impl<'a> SessionSums<'a> {
    pub(crate) fn of(e: &'a Record) -> SessionSums<'a> {
        SessionSums {
            user: &e.user,
            harness: &e.harness,
            first: e.ts_ms,
            last: e.ts_ms,
            requests: 1,
            cost: e.cost,
            tokens: e.input + e.output + e.cache_read + e.cache_write,
        }
    }
    pub(crate) fn add(&mut self, o: &SessionSums<'a>) {
        self.user = self.user.min(o.user);
        self.harness = self.harness.min(o.harness);
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
        self.requests += o.requests;
        self.cost += o.cost;
        self.tokens += o.tokens;
    }
}

/// Everything one write adds to the rollups.
#[derive(Default)]
struct Rollups<'a> {
    hourly: BTreeMap<RollKey<'a>, [i64; 11]>,
    daily: BTreeMap<RollKey<'a>, [i64; 11]>,
    sessions: BTreeMap<&'a str, SessionSums<'a>>,
    session_dims: BTreeMap<(&'a str, [&'a str; 9]), SessionSums<'a>>,
    dims_hourly: BTreeSet<(i64, &'static str, &'a str)>,
    dims_daily: BTreeSet<(i64, &'static str, &'a str)>,
}

fn rollups<'a>(records: &[&'a Record]) -> Rollups<'a> {
    let mut r = Rollups::default();
    for e in records {
        let (dims, add) = (e.dims(), e.sums());
        let hour = time::hour_floor(e.ts_ms);
        let day = time::day_floor(e.ts_ms);
        for (map, t) in [(&mut r.hourly, hour), (&mut r.daily, day)] {
            let s = map.entry((t, dims)).or_default();
            for (a, b) in s.iter_mut().zip(add) {
                *a += b;
            }
        }
        if !e.session_id.is_empty() {
            let one = SessionSums::of(e);
            r.sessions
                .entry(&e.session_id)
                .and_modify(|s| s.add(&one))
                .or_insert_with(|| one.clone());
            r.session_dims
                .entry((&e.session_id, dims))
                .and_modify(|s| s.add(&one))
                .or_insert(one);
        }
    }
    // The dimension values come from the distinct rollup keys, not from every event.
    for (map, set) in [
        (&r.hourly, &mut r.dims_hourly),
        (&r.daily, &mut r.dims_daily),
    ] {
        for (t, dims) in map.keys() {
            for ((name, _), v) in DIM_NAMES.iter().zip(dims) {
                set.insert((*t, name, v));
            }
        }
    }
    r
}

/// A value of a row written in one multi-row statement.
#[derive(Clone, Copy)]
enum V<'a> {
    I(i64),
    S(&'a str),
}

/// One multi-row write: `INSERT INTO table (cols) <rows> tail`.
struct Rows<'a> {
    table: &'static str,
    cols: Vec<&'static str>,
    rows: Vec<Vec<V<'a>>>,
    tail: String,
}

/// The `SET` list of an upsert into `table` that adds each of `cols`: `c = table.c + excluded.c`.
pub(crate) fn add_set(table: &str, cols: &[&str]) -> String {
    cols.iter()
        .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `SET` list of an upsert into a session rollup (`usage_sessions`, `usage_session_dims`):
/// `first_ms` and every column of `also_least` by `least`, `last_ms` by `greatest` (the database's
/// names for them: `MIN`/`MAX` in SQLite, `LEAST`/`GREATEST` in Postgres), the sums added.
pub(crate) fn session_set(table: &str, least: &str, greatest: &str, also_least: &[&str]) -> String {
    let by_least = also_least
        .iter()
        .chain(&["first_ms"])
        .map(|c| format!("{c} = {least}({table}.{c}, excluded.{c})"));
    by_least
        .chain([format!(
            "last_ms = {greatest}({table}.last_ms, excluded.last_ms)"
        )])
        .chain([add_set(table, &["requests", "cost_micros", "tokens"])])
        .collect::<Vec<_>>()
        .join(", ")
}

fn sums_rows<'a>(
    table: &'static str,
    time_col: &'static str,
    m: &BTreeMap<RollKey<'a>, [i64; 11]>,
) -> Rows<'a> {
    let set = add_set(table, &ROLL_SUMS);
    Rows {
        table,
        cols: std::iter::once(time_col)
            .chain(ROLL_DIMS)
            .chain(ROLL_SUMS)
            .collect(),
        rows: m
            .iter()
            .map(|((t, d), s)| {
                std::iter::once(V::I(*t))
                    .chain(d.iter().map(|v| V::S(v)))
                    .chain(s.iter().map(|v| V::I(*v)))
                    .collect()
            })
            .collect(),
        tail: format!(
            " ON CONFLICT ({time_col}, {}) DO UPDATE SET {set}",
            ROLL_DIMS.join(", ")
        ),
    }
}

/// Drops the insert-only rows already known to be stored; returns the keys of those left.
fn forget_known(r: &mut Rollups<'_>, known: &Known) -> Vec<(String, i64, String, String)> {
    let Ok(k) = known.lock() else {
        return Vec::new();
    };
    let key = |t: &str, a: i64, b: &str, c: &str| (t.to_string(), a, b.to_string(), c.to_string());
    r.dims_hourly
        .retain(|(h, d, v)| !k.contains(&key("h", *h, d, v)));
    r.dims_daily
        .retain(|(h, d, v)| !k.contains(&key("d", *h, d, v)));
    r.dims_hourly
        .iter()
        .map(|(h, d, v)| key("h", *h, d, v))
        .chain(r.dims_daily.iter().map(|(h, d, v)| key("d", *h, d, v)))
        .collect()
}

/// The rollup upserts of one SQLite group, in a fixed table order (and key order within a table).
fn rollup_rows<'a>(r: &'a Rollups<'a>) -> Vec<Rows<'a>> {
    let dims = |table: &'static str,
                time_col: &'static str,
                set: &'a BTreeSet<(i64, &'static str, &'a str)>| Rows {
        table,
        cols: vec![time_col, "dim", "value"],
        rows: set
            .iter()
            .map(|(t, d, v)| vec![V::I(*t), V::S(d), V::S(v)])
            .collect(),
        tail: " ON CONFLICT DO NOTHING".into(),
    };
    vec![
        sums_rows("usage_hourly", "hour_ms", &r.hourly),
        sums_rows("usage_daily", "day_ms", &r.daily),
        Rows {
            table: "usage_sessions",
            cols: vec![
                "session_id",
                "user_name",
                "harness",
                "first_ms",
                "last_ms",
                "requests",
                "cost_micros",
                "tokens",
            ],
            rows: r
                .sessions
                .iter()
                .map(|(id, s)| {
                    vec![
                        V::S(id),
                        V::S(s.user),
                        V::S(s.harness),
                        V::I(s.first),
                        V::I(s.last),
                        V::I(s.requests),
                        V::I(s.cost),
                        V::I(s.tokens),
                    ]
                })
                .collect(),
            tail: format!(
                " ON CONFLICT (session_id) DO UPDATE SET {}",
                session_set("usage_sessions", "MIN", "MAX", &["user_name", "harness"])
            ),
        },
        Rows {
            table: "usage_session_dims",
            cols: std::iter::once("session_id")
                .chain(ROLL_DIMS)
                .chain(["first_ms", "last_ms", "requests", "cost_micros", "tokens"])
                .collect(),
            rows: r
                .session_dims
                .iter()
                .map(|((id, d), s)| {
                    std::iter::once(V::S(id))
                        .chain(d.iter().map(|v| V::S(v)))
                        .chain([s.first, s.last, s.requests, s.cost, s.tokens].map(V::I))
                        .collect()
                })
                .collect(),
            tail: format!(
                " ON CONFLICT (session_id, {}) DO UPDATE SET {}",
                ROLL_DIMS.join(", "),
                session_set("usage_session_dims", "MIN", "MAX", &[])
            ),
        },
        dims("usage_dims_hourly", "hour_ms", &r.dims_hourly),
        dims("usage_dims_daily", "day_ms", &r.dims_daily),
    ]
}

fn event_rows<'a>(records: &[&'a Record], recorded: i64) -> Rows<'a> {
    Rows {
        table: "usage_events",
        cols: EVENT_TEXT_COLS
            .iter()
            .chain(EVENT_INT_COLS.iter())
            .copied()
            .collect(),
        rows: records
            .iter()
            .map(|r| {
                r.texts()
                    .into_iter()
                    .map(V::S)
                    .chain(r.ints(recorded).into_iter().map(V::I))
                    .collect()
            })
            .collect(),
        tail: " ON CONFLICT (event_id) DO NOTHING RETURNING event_id".into(),
    }
}

/// Binds a row's values to the parameters of `st`, in order.
fn sqlite_bind(st: &mut rusqlite::CachedStatement<'_>, row: &[V<'_>]) -> rusqlite::Result<()> {
    for (i, v) in row.iter().enumerate() {
        match *v {
            V::I(x) => st.raw_bind_parameter(i + 1, x)?,
            V::S(x) => st.raw_bind_parameter(i + 1, x)?,
        }
    }
    Ok(())
}

/// Writes one group in one SQLite transaction on the writer's connection: each event by one
/// cached statement (`ON CONFLICT (event_id) DO NOTHING`; a change count of 1 means newly
/// recorded), then the rollups of those newly recorded, one cached upsert per table executed
/// once per distinct key. Returns the ids newly recorded.
fn sqlite_write_group(
    conn: &mut rusqlite::Connection,
    records: &[&Record],
    known: &Known,
) -> Result<HashSet<String>, MeteringError> {
    let recorded = time::now_ms();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut inserted = HashSet::with_capacity(records.len());
    {
        let mut st = tx.prepare_cached(&insert_sql(
            "usage_events",
            &EVENT_TEXT_COLS
                .iter()
                .chain(EVENT_INT_COLS.iter())
                .copied()
                .collect::<Vec<_>>(),
            " ON CONFLICT (event_id) DO NOTHING",
        ))?;
        for r in records {
            for (i, t) in r.texts().into_iter().enumerate() {
                st.raw_bind_parameter(i + 1, t)?;
            }
            for (i, v) in r.ints(recorded).into_iter().enumerate() {
                st.raw_bind_parameter(EVENT_TEXT_COLS.len() + i + 1, v)?;
            }
            if st.raw_execute()? == 1 {
                inserted.insert(r.event_id.clone());
            }
        }
    }
    let new: Vec<&Record> = records
        .iter()
        .copied()
        .filter(|r| inserted.contains(&r.event_id))
        .collect();
    let mut r = rollups(&new);
    let fresh = forget_known(&mut r, known);
    for w in rollup_rows(&r) {
        if w.rows.is_empty() {
            continue;
        }
        let mut st = tx.prepare_cached(&insert_sql(w.table, &w.cols, &w.tail))?;
        for row in &w.rows {
            sqlite_bind(&mut st, row)?;
            st.raw_execute()?;
        }
    }
    tx.commit()?;
    remember(known, fresh);
    Ok(inserted)
}

/// `INSERT INTO table (cols) VALUES (?, ...)tail`: one row a statement.
fn insert_sql(table: &str, cols: &[&str], tail: &str) -> String {
    format!(
        "INSERT INTO {table} ({}) VALUES ({}){tail}",
        cols.join(", "),
        vec!["?"; cols.len()].join(", ")
    )
}

/// Writes `w` as one statement whatever its size: every column travels as one array, `UNNEST`ed.
async fn pg_write(conn: &mut PgConnection, w: &Rows<'_>) -> Result<Vec<String>, MeteringError> {
    let Some(first) = w.rows.first() else {
        return Ok(Vec::new());
    };
    let mut ints: Vec<Vec<i64>> = Vec::new();
    let mut texts: Vec<Vec<&str>> = Vec::new();
    let mut kinds = Vec::with_capacity(first.len());
    for v in first {
        match v {
            V::I(_) => {
                kinds.push((true, ints.len()));
                ints.push(Vec::with_capacity(w.rows.len()));
            }
            V::S(_) => {
                kinds.push((false, texts.len()));
                texts.push(Vec::with_capacity(w.rows.len()));
            }
        }
    }
    for r in &w.rows {
        for (v, (_, k)) in r.iter().zip(&kinds) {
            match *v {
                V::I(i) => ints[*k].push(i),
                V::S(s) => texts[*k].push(s),
            }
        }
    }
    let args: Vec<String> = kinds
        .iter()
        .enumerate()
        .map(|(i, (int, _))| format!("${}::{}", i + 1, if *int { "bigint[]" } else { "text[]" }))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) SELECT * FROM UNNEST({}){}",
        w.table,
        w.cols.join(", "),
        args.join(", "),
        w.tail
    );
    let mut q = sqlx::query(&sql);
    for (int, k) in &kinds {
        q = if *int {
            q.bind(&ints[*k])
        } else {
            q.bind(&texts[*k])
        };
    }
    let mut out = Vec::new();
    for row in q.fetch_all(&mut *conn).await? {
        out.push(row.try_get::<String, _>(0)?);
    }
    Ok(out)
}

/// `records` as `COPY ... FROM STDIN (FORMAT binary)` data, in the columns of [`event_rows`].
fn pg_copy_data(records: &[&Record], recorded: i64) -> Result<Vec<u8>, MeteringError> {
    let mut b = CopyData::new(records.len() * 512);
    let fields = (EVENT_TEXT_COLS.len() + EVENT_INT_COLS.len()) as i16;
    for r in records {
        b.row(fields);
        for t in r.texts() {
            b.text(t)?;
        }
        for i in r.ints(recorded) {
            b.int(i);
        }
    }
    Ok(b.finish())
}

/// Postgres, the fast way to write a group's events: `COPY` (binary) straight into `usage_events`
/// — no per-row `ON CONFLICT`, no `RETURNING`. Returns the ids newly recorded. A group rarely holds
/// an event already stored (a batch resent from a spool does), so the copy first takes every event
/// behind a savepoint, which spares the group a lookup of each id (~1 µs of Postgres time an
/// event); when that copy meets a stored id (a unique violation, which the server also logs), it
/// rolls back to the savepoint, probes for the ids already stored and copies the others. If a
/// concurrent group records one of the same ids between that probe and the copy, the copy fails
/// with a unique violation again (the caller rolls back and redoes the group with [`pg_write`],
/// which is exact under any race).
async fn pg_copy_events(
    conn: &mut PgConnection,
    records: &[&Record],
    recorded: i64,
) -> Result<HashSet<String>, MeteringError> {
    let cols: Vec<&str> = EVENT_TEXT_COLS
        .iter()
        .chain(EVENT_INT_COLS.iter())
        .copied()
        .collect();
    let copy = format!(
        "COPY usage_events ({}) FROM STDIN (FORMAT binary)",
        cols.join(", ")
    );
    conn.execute("SAVEPOINT all_new").await?;
    match copy_in(conn, &copy, pg_copy_data(records, recorded)?).await {
        Ok(()) => return Ok(records.iter().map(|r| r.event_id.clone()).collect()),
        Err(MeteringError::Db(e)) if is_unique_violation(&e) => {
            conn.execute("ROLLBACK TO SAVEPOINT all_new").await?;
        }
        Err(e) => return Err(e),
    }
    let ids: Vec<&str> = records.iter().map(|r| r.event_id.as_str()).collect();
    let stored: HashSet<String> =
        sqlx::query_scalar("SELECT event_id FROM usage_events WHERE event_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let new: Vec<&Record> = records
        .iter()
        .copied()
        .filter(|r| !stored.contains(&r.event_id))
        .collect();
    if !new.is_empty() {
        copy_in(conn, &copy, pg_copy_data(&new, recorded)?).await?;
    }
    Ok(new.into_iter().map(|r| r.event_id.clone()).collect())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// Writes one Postgres group in one transaction: the events, then the rollup deltas of those newly
/// recorded (counted to `compactor` once committed). Returns the ids newly recorded.
async fn pg_write_group(
    pool: &PgPool,
    copy: bool,
    records: &[&Record],
    compactor: &Compactor,
) -> Result<HashSet<String>, MeteringError> {
    let recorded = time::now_ms();
    let mut tx = pool.begin().await?;
    let first = if copy {
        pg_copy_events(&mut tx, records, recorded).await
    } else {
        pg_write(&mut tx, &event_rows(records, recorded))
            .await
            .map(|ids| ids.into_iter().collect())
    };
    let inserted: HashSet<String> = match first {
        Ok(ids) => ids,
        Err(MeteringError::Db(e)) if is_unique_violation(&e) => {
            // A concurrent group recorded one of these ids after the probe: redo this
            // group with `ON CONFLICT DO NOTHING`.
            drop(tx);
            tx = pool.begin().await?;
            pg_write(&mut tx, &event_rows(records, recorded))
                .await?
                .into_iter()
                .collect()
        }
        Err(e) => return Err(e),
    };
    let new: Vec<&Record> = records
        .iter()
        .copied()
        .filter(|r| inserted.contains(&r.event_id))
        .collect();
    let rows = Deltas::of(&new).copy(&mut tx).await?;
    tx.commit().await?;
    compactor.written(rows);
    Ok(inserted)
}

/// Adds committed insert-only rows to `known`.
fn remember(known: &Known, fresh: Vec<(String, i64, String, String)>) {
    if let Ok(mut k) = known.lock() {
        if k.len() + fresh.len() > KNOWN_MAX {
            k.clear();
        }
        k.extend(fresh);
    }
}

/// A group commit's batches: `first` and every batch waiting (`next`), up to [`GROUP_MAX`] events.
fn take_group(first: Job, mut next: impl FnMut() -> Option<Job>) -> Vec<Job> {
    let mut n = first.records.len();
    let mut jobs = vec![first];
    while n < GROUP_MAX {
        let Some(j) = next() else { break };
        n += j.records.len();
        jobs.push(j);
    }
    jobs
}

/// A group's records, each event id once: an id that appears twice in a group is written and
/// counted once.
fn firsts(jobs: &[Job]) -> Vec<&Record> {
    let mut seen: HashSet<&str> = HashSet::new();
    jobs.iter()
        .flat_map(|j| j.records.iter())
        .filter(|r| seen.insert(r.event_id.as_str()))
        .collect()
}

/// Answers each caller with its records newly recorded (or the group's error).
fn answer(jobs: Vec<Job>, result: Result<HashSet<String>, MeteringError>) {
    match result {
        Ok(mut inserted) => {
            for j in jobs {
                // Removing the id hands each newly recorded event to the first batch that had it.
                let new = j
                    .records
                    .into_iter()
                    .filter(|r| inserted.remove(&r.event_id))
                    .collect();
                let _ = j.done.send(Ok(new));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, batches = jobs.len(), "metering: group write failed");
            let msg = e.to_string();
            for j in jobs {
                let _ = j.done.send(Err(msg.clone()));
            }
        }
    }
}

/// A Postgres writer task: one group commit at a time, taking turns at the queue with the others.
async fn pg_writer(
    pool: PgPool,
    copy: bool,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    compactor: Arc<Compactor>,
) {
    loop {
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            take_group(first, || rx.try_recv().ok())
        };
        let result = pg_write_group(&pool, copy, &firsts(&jobs), &compactor).await;
        answer(jobs, result);
    }
}

/// The SQLite writer thread: blocks on the queue, writes each group on its own connection, and
/// ends when every [`Store`] clone (every sender) is gone.
fn sqlite_writer(mut conn: rusqlite::Connection, mut rx: mpsc::Receiver<Job>) {
    let known = Known::default();
    while let Some(first) = rx.blocking_recv() {
        let jobs = take_group(first, || rx.try_recv().ok());
        let result = sqlite_write_group(&mut conn, &firsts(&jobs), &known);
        answer(jobs, result);
    }
}

/// Opens the SQLite writer's connection (the migrated database at `o`) with the pool's settings.
fn sqlite_writer_connection(
    o: &SqliteConnectOptions,
) -> Result<rusqlite::Connection, MeteringError> {
    let path = o.get_filename();
    if path.as_os_str().is_empty()
        || path.to_string_lossy().starts_with("file:sqlx-in-memory")
        || path.as_os_str() == ":memory:"
    {
        return Err(MeteringError::Config(
            "metering needs a SQLite file (sqlite://FILE?mode=rwc), not an in-memory database"
                .into(),
        ));
    }
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(MeteringError::Config(format!(
            "SQLite journal_mode is {mode}, not WAL"
        )));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // 64 MiB of page cache (the default is 2 MiB), and fewer, larger checkpoints.
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.pragma_update(None, "wal_autocheckpoint", 8192)?;
    conn.pragma_update(None, "temp_store", "memory")?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

impl Store {
    /// Connects, creates the Postgres schema if asked, runs the migrations and starts the writer.
    pub async fn connect(opts: &StoreOptions) -> Result<Store, MeteringError> {
        let url = opts.url.as_str();
        if url.starts_with("sqlite:") {
            let o = SqliteConnectOptions::from_str(url)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                // 64 MiB of page cache a connection (the default is 2 MiB: the random event-id
                // index alone outgrows it), and fewer, larger checkpoints.
                .pragma("cache_size", "-65536")
                .pragma("wal_autocheckpoint", "8192")
                .pragma("temp_store", "memory");
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections)
                .connect_with(o.clone())
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            let conn = sqlite_writer_connection(&o)?;
            let (writes, rx) = mpsc::channel(QUEUE_JOBS);
            std::thread::Builder::new()
                .name("metering-sqlite-writer".into())
                .spawn(move || sqlite_writer(conn, rx))
                .map_err(|e| {
                    MeteringError::Write(format!("cannot start the SQLite writer thread: {e}"))
                })?;
            Ok(Store {
                db: Db::Sqlite(pool),
                writes,
                compactor: None,
            })
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
                .max_connections(opts.max_connections.max(opts.pg_writers as u32 + 1))
                .connect_with(o)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            let (writes, rx) = mpsc::channel(QUEUE_JOBS);
            let rx = Arc::new(Mutex::new(rx));
            let compactor = Compactor::new(pool.clone());
            for _ in 0..opts.pg_writers.max(1) {
                tokio::spawn(pg_writer(
                    pool.clone(),
                    opts.pg_copy,
                    Arc::clone(&rx),
                    Arc::clone(&compactor),
                ));
            }
            if let Some(every) = opts.pg_compact_every {
                // Ends once every clone of the store is gone (or the pool is closed).
                let weak = writes.downgrade();
                tokio::spawn(Arc::clone(&compactor).run(every, move || weak.upgrade().is_some()));
            }
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
        let stopped = || MeteringError::Write("the writer has stopped".into());
        self.writes
            .send(Job { records, done })
            .await
            .map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, ts_ms: i64) -> Record {
        Record {
            event_id: id.into(),
            ts_ms,
            user: "u".into(),
            team: "t".into(),
            discipline: "d".into(),
            level: "l".into(),
            session_id: "s".into(),
            harness: "h".into(),
            route: "r".into(),
            provider: "p".into(),
            model: "m".into(),
            outcome: "ok".into(),
            input: 10,
            cost: 7,
            tier: "x".into(),
            ..Record::default()
        }
    }

    /// A store on a fresh Postgres schema named from `prefix`: the store, the schema, its pool.
    async fn postgres_store(prefix: &str) -> Result<(Store, String, PgPool), MeteringError> {
        let url = std::env::var("RETORT_TEST_DATABASE_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "postgres://postgres:postgres@127.0.0.1:5432/test".into());
        let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let store = Store::connect(&StoreOptions {
            schema: Some(schema.clone()),
            ..StoreOptions::new(url)
        })
        .await?;
        let Db::Postgres(pool) = store.db.clone() else {
            return Err(MeteringError::Config("expected Postgres".into()));
        };
        Ok((store, schema, pool))
    }

    /// Every text column of the Postgres schema compares bytewise (migration 0005), so a column a
    /// later migration adds with the default collation fails here: its own comparisons and index
    /// would go through strcoll again, and where it meets a "C" column the comparison runs under
    /// "C" and cannot use that column's index.
    #[tokio::test]
    async fn postgres_text_columns_are_bytewise() -> Result<(), MeteringError> {
        let (store, schema, pool) = postgres_store("metering_collation").await?;
        let others: Result<Vec<(String, String, Option<String>)>, sqlx::Error> = sqlx::query_as(
            "SELECT c.table_name::text, c.column_name::text, c.collation_name::text FROM information_schema.columns AS c \
             JOIN information_schema.tables AS t ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE c.table_schema = $1 AND c.data_type = 'text' AND t.table_type = 'BASE TABLE' \
             AND c.table_name <> '_sqlx_migrations' ORDER BY 1, 2",
        )
        .bind(&schema)
        .fetch_all(&pool)
        .await;
        store.drop_schema(&schema).await?;
        store.close().await;
        let columns = others?;
        assert!(columns.len() > 40, "the schema's text columns: {columns:?}");
        let default: Vec<_> = columns
            .iter()
            .filter(|(_, _, c)| c.as_deref() != Some("C"))
            .collect();
        assert!(
            default.is_empty(),
            "text columns not COLLATE \"C\": {default:?}"
        );
        Ok(())
    }

    /// [`pg_write_group`] writes `group` (by `COPY`) while another transaction holds `racing`
    /// recorded but not committed, after `stored` were recorded and committed (neither through a
    /// group, so neither has rollup deltas); the other commits once the group waits on it.
    /// Answers the ids the group newly recorded, and the events stored with the requests in
    /// usage_hourly and usage_daily once compacted.
    async fn copy_race(
        stored: &[Record],
        racing: Record,
        group: Vec<Record>,
    ) -> Result<(HashSet<String>, Vec<Val>), MeteringError> {
        let (store, schema, pool) = postgres_store("metering_copy_race").await?;
        let now = time::now_ms();
        let result = async {
            let stored: Vec<&Record> = stored.iter().collect();
            let mut tx = pool.begin().await?;
            pg_write(&mut tx, &event_rows(&stored, now)).await?;
            tx.commit().await?;
            let mut other = pool.begin().await?;
            pg_write(&mut other, &event_rows(&[&racing], now)).await?;
            let group_pool = pool.clone();
            let compactor = Compactor::new(pool.clone());
            let task = tokio::spawn(async move {
                let group: Vec<&Record> = group.iter().collect();
                pg_write_group(&group_pool, true, &group, &compactor).await
            });
            // Let the group's copy reach the uncommitted id and wait on its index entry.
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(
                !task.is_finished(),
                "the copy should wait on the uncommitted {}",
                racing.event_id
            );
            other.commit().await?;
            let inserted = task
                .await
                .map_err(|e| MeteringError::Write(e.to_string()))??;
            store.compact().await?;
            let sql = "SELECT COUNT(*), (SELECT SUM(requests)::bigint FROM usage_hourly), \
                       (SELECT SUM(requests)::bigint FROM usage_daily) FROM usage_events";
            let rows = store
                .select(sql, &[], &[Col::Int, Col::Int, Col::Int])
                .await?;
            Ok::<_, MeteringError>((inserted, rows[0].clone()))
        }
        .await;
        store.drop_schema(&schema).await?;
        store.close().await;
        result
    }

    /// The first copy's race: another transaction records X and commits while the group's copy
    /// of every event waits on it. The copy fails with a unique violation, the group rolls back
    /// to its savepoint, probes (X is stored now) and copies Y alone: only Y reaches the rollups.
    #[tokio::test]
    async fn postgres_copy_probes_when_a_concurrent_group_records_an_id()
    -> Result<(), MeteringError> {
        let now = time::now_ms();
        let (x, y) = (record("race-x", now), record("race-y", now));
        let (inserted, counts) = copy_race(&[], x.clone(), vec![x, y]).await?;
        assert_eq!(inserted, HashSet::from_iter(["race-y".to_string()]));
        assert_eq!(
            counts,
            vec![Val::I(2), Val::I(1), Val::I(1)],
            "events X and Y; rollups only Y"
        );
        Ok(())
    }

    /// The race after the probe: the group's first copy meets X, stored before, so it probes;
    /// another transaction has recorded Z, not yet committed, which the probe cannot see; the
    /// second copy waits on Z and fails once it commits, and the group is redone with `ON
    /// CONFLICT DO NOTHING`: only Y is newly recorded and reaches the rollups.
    #[tokio::test]
    async fn postgres_copy_falls_back_when_an_id_is_recorded_after_the_probe()
    -> Result<(), MeteringError> {
        let now = time::now_ms();
        let (x, y, z) = (
            record("race-x", now),
            record("race-y", now),
            record("race-z", now),
        );
        let (inserted, counts) = copy_race(&[x.clone()], z.clone(), vec![x, y, z]).await?;
        assert_eq!(inserted, HashSet::from_iter(["race-y".to_string()]));
        assert_eq!(
            counts,
            vec![Val::I(3), Val::I(1), Val::I(1)],
            "events X, Y and Z; rollups only Y"
        );
        Ok(())
    }
}
