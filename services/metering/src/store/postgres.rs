//! The Postgres store (many machines): writer tasks that each take a group commit from the shared
//! queue and append its events and rollup deltas by binary `COPY` (no upsert, no lock shared
//! between writers); the compactor ([`super::deltas`]) folds the deltas into the rollups in the
//! background and before every rollup query.
use std::{str::FromStr, sync::Arc};

// foldhash: these sets hold a group's ids (SipHash was the service's top symbol at ingest).
use foldhash::HashSet;
use sqlx::{
    Executor, Row,
    postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions},
};
use tokio::sync::{Mutex, mpsc};

use super::{
    copy::{CopyData, copy_in},
    deltas::{Compactor, Deltas},
    group::{Job, QUEUE_JOBS, answer, firsts, take_group},
    options::StoreOptions,
    record::{EVENT_INT_COLS, EVENT_TEXT_COLS, Record},
    rollups::{Rows, V},
};
use crate::{error::MeteringError, time};

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

/// Writes `w` as one statement whatever its size: every column travels as one array, `UNNEST`ed.
async fn write_rows(conn: &mut PgConnection, w: &Rows<'_>) -> Result<Vec<String>, MeteringError> {
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
fn copy_data(records: &[&Record], recorded: i64) -> Result<Vec<u8>, MeteringError> {
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
/// with a unique violation again (the caller rolls back and redoes the group with [`write_rows`],
/// which is exact under any race).
async fn copy_events(
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
    match copy_in(conn, &copy, copy_data(records, recorded)?).await {
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
        copy_in(conn, &copy, copy_data(&new, recorded)?).await?;
    }
    Ok(new.into_iter().map(|r| r.event_id.clone()).collect())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// Writes one Postgres group in one transaction: the events, then the rollup deltas of those newly
/// recorded (counted to `compactor` once committed). Returns the ids newly recorded.
async fn write_group(
    pool: &PgPool,
    copy: bool,
    records: &[&Record],
    compactor: &Compactor,
) -> Result<HashSet<String>, MeteringError> {
    let recorded = time::now_ms();
    let mut tx = pool.begin().await?;
    let first = if copy {
        copy_events(&mut tx, records, recorded).await
    } else {
        write_rows(&mut tx, &event_rows(records, recorded))
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
            write_rows(&mut tx, &event_rows(records, recorded))
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

/// A Postgres writer task: one group commit at a time, taking turns at the queue with the others.
async fn writer(
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
        let result = write_group(&pool, copy, &firsts(&jobs), &compactor).await;
        answer(jobs, result);
    }
}

/// The Postgres schema metering keeps its tables and its migration history (`_sqlx_migrations`)
/// in unless told otherwise, so that it shares a database with the other services (distill keeps
/// its own in `distill`) without either seeing the other's migrations.
pub const DEFAULT_SCHEMA: &str = "metering";

/// A table every metering database has: where it already sits, a database migrated before
/// metering had a schema of its own is found.
const MARKER_TABLE: &str = "usage_events";

/// Metering's schema in a shared Postgres database (see [`retort_db::in_own_schema`]).
const SCHEMA: retort_db::Schema = retort_db::Schema {
    service: "metering",
    default: DEFAULT_SCHEMA,
    marker_table: Some(MARKER_TABLE),
};

/// Connects to Postgres at `opts.url` in `opts.schema` (default [`DEFAULT_SCHEMA`], created if
/// absent; see [`retort_db::in_own_schema`]), runs the migrations, and starts the writer tasks and (if asked)
/// the background compactor; returns the pool, the writers' queue and the compactor.
pub(super) async fn open(
    opts: &StoreOptions,
) -> Result<(PgPool, mpsc::Sender<Job>, Arc<Compactor>), MeteringError> {
    let o = retort_db::in_own_schema(
        PgConnectOptions::from_str(&opts.url)?,
        opts.schema.as_deref(),
        SCHEMA,
    )
    .await
    .map_err(|e| match e {
        retort_db::SchemaError::Name(_) => MeteringError::Config(e.to_string()),
        retort_db::SchemaError::Sql(e) => e.into(),
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(opts.max_connections.max(opts.pg_writers as u32 + 1))
        .connect_with(o)
        .await?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    let (writes, rx) = mpsc::channel(QUEUE_JOBS);
    let rx = Arc::new(Mutex::new(rx));
    let compactor = Compactor::new(pool.clone());
    for _ in 0..opts.pg_writers.max(1) {
        tokio::spawn(writer(
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
    Ok((pool, writes, compactor))
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{Col, Db, Store, Val};

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

    /// [`write_group`] writes `group` (by `COPY`) while another transaction holds `racing`
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
            write_rows(&mut tx, &event_rows(&stored, now)).await?;
            tx.commit().await?;
            let mut other = pool.begin().await?;
            write_rows(&mut other, &event_rows(&[&racing], now)).await?;
            let group_pool = pool.clone();
            let compactor = Compactor::new(pool.clone());
            let task = tokio::spawn(async move {
                let group: Vec<&Record> = group.iter().collect();
                write_group(&group_pool, true, &group, &compactor).await
            });
            // Let the group's copy reach the uncommitted id and wait on its index entry.
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(
                !task.is_finished(),
                "the copy should wait on the uncommitted {}",
                racing.event_id
            );
            other.commit().await?;
            let inserted = task.await.expect("the group's task")?;
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
        let (inserted, counts) =
            copy_race(std::slice::from_ref(&x), z.clone(), vec![x.clone(), y, z]).await?;
        assert_eq!(inserted, HashSet::from_iter(["race-y".to_string()]));
        assert_eq!(
            counts,
            vec![Val::I(3), Val::I(1), Val::I(1)],
            "events X, Y and Z; rollups only Y"
        );
        Ok(())
    }
}
