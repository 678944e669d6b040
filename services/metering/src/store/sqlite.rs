//! The SQLite store (the embedded default): a read pool (sqlx) and one writer thread with its own
//! rusqlite connection, since SQLite allows one writer; being the only writer, it keeps its page
//! cache warm across groups. Each group commit writes the events, then upserts the rollups of
//! those newly recorded directly: one cached prepared statement per table, executed row by row
//! with the values bound straight from the records (no SQL built per group, no owned copy per
//! value, no hand-off per statement).
use std::{str::FromStr, sync::Arc, time::Duration};

// foldhash: these sets hold a group's ids (SipHash was the service's top symbol at ingest).
use foldhash::{HashSet, HashSetExt};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::mpsc;

use super::{
    group::{Job, QUEUE_JOBS, answer, firsts, take_group},
    options::StoreOptions,
    record::{EVENT_INT_COLS, EVENT_TEXT_COLS, Record},
    rollups::{Rollups, V, rollup_rows, rollups},
};
use crate::{error::MeteringError, time};

/// SQLite: insert-only rollup rows (dimension values by hour and day) known to
/// be in the database already: written and committed by this process. The writer leaves them out of
/// later groups; the set is cleared when it grows past [`KNOWN_MAX`]. (Rows are never deleted, so
/// a stale entry cannot hide a missing row; another process writing the same database only makes
/// this process write a row twice, which `ON CONFLICT DO NOTHING` absorbs.)
type Known = Arc<std::sync::Mutex<HashSet<(String, i64, String, String)>>>;
const KNOWN_MAX: usize = 200_000;

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

/// Binds a row's values to the parameters of `st`, in order.
fn bind_row(st: &mut rusqlite::CachedStatement<'_>, row: &[V<'_>]) -> rusqlite::Result<()> {
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
fn write_group(
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
            bind_row(&mut st, row)?;
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

/// Adds committed insert-only rows to `known`.
fn remember(known: &Known, fresh: Vec<(String, i64, String, String)>) {
    if let Ok(mut k) = known.lock() {
        if k.len() + fresh.len() > KNOWN_MAX {
            k.clear();
        }
        k.extend(fresh);
    }
}

/// The SQLite writer thread: blocks on the queue, writes each group on its own connection, and
/// ends when every [`Store`](super::Store) clone (every sender) is gone.
fn writer(mut conn: rusqlite::Connection, mut rx: mpsc::Receiver<Job>) {
    let known = Known::default();
    while let Some(first) = rx.blocking_recv() {
        let jobs = take_group(first, || rx.try_recv().ok());
        let result = write_group(&mut conn, &firsts(&jobs), &known);
        answer(jobs, result);
    }
}

/// Opens the SQLite writer's connection (the migrated database at `o`) with the pool's settings.
fn writer_connection(o: &SqliteConnectOptions) -> Result<rusqlite::Connection, MeteringError> {
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

/// Opens the SQLite database at `opts.url` (migrated) for reads, and starts the writer thread on a
/// connection of its own; returns the read pool and the writer's queue.
pub(super) async fn open(
    opts: &StoreOptions,
) -> Result<(SqlitePool, mpsc::Sender<Job>), MeteringError> {
    let o = SqliteConnectOptions::from_str(&opts.url)?
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
    let conn = writer_connection(&o)?;
    let (writes, rx) = mpsc::channel(QUEUE_JOBS);
    std::thread::Builder::new()
        .name("metering-sqlite-writer".into())
        .spawn(move || writer(conn, rx))
        .map_err(MeteringError::WriterThread)?;
    Ok((pool, writes))
}
