//! Postgres rollup deltas and their compactor. Ingest does not upsert the rollups: each group
//! commit appends, by binary `COPY` in the same transaction as its events, what it adds to them —
//! one row per distinct hourly key (`usage_delta_hourly`) and per distinct session and key
//! (`usage_delta_sessions`). These tables have no index, so writers never look a key up and never
//! wait on each other's rows. The compactor folds the deltas into the rollups — the hourly ones
//! into hourly, daily and dimension values, the session ones into sessions and sessions by
//! dimension — in transactions that run at once on their own connections (one for the hourly
//! deltas, one for each [`SESSION_PARTS`] part of the sessions) and delete what they fold: each
//! serialised across processes by an advisory lock of its own (and within one by a mutex), run in
//! the background every [`COMPACT_EVERY`] (sooner when [`COMPACT_ROWS`] delta rows are waiting) and
//! before every rollup query, so a query's answer includes every acknowledged event. A compaction
//! lost in a crash loses its `DELETE` too: the deltas are still there for the next one (so its
//! commit need not wait for the WAL flush).
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

// foldhash: a group's keys are hashed for every event (SipHash was the top symbol at ingest).
use foldhash::HashMap;
use futures::future::try_join_all;
use sqlx::{
    Executor,
    postgres::{PgConnection, PgPool},
};
use tokio::sync::Notify;

use super::{
    copy::{CopyData, copy_in},
    record::{ROLL_DIMS, ROLL_SUMS as SUMS, Record, SessionSums},
    rollups::{add_set, session_set},
};
use crate::{error::MeteringError, time};

/// How often the background compactor folds the deltas in. Each compaction upserts every rollup
/// key it touches once, whatever the deltas it folds, so a longer interval upserts less (at 4 bench
/// streams, 250 ms spent ~30 % of Postgres's ingest time compacting); [`COMPACT_ROWS`] bounds what
/// waits for the next one (and so what a query may have to fold in first).
pub const COMPACT_EVERY: Duration = Duration::from_millis(1000);
/// Delta rows written since the last compaction that wake the compactor before its interval: above
/// what a second brings at 100,000 events/s (~1.4 delta rows an event), so at that rate the
/// interval decides. At 50,000 the compactor ran twice a second at the bench's rate, upserting
/// its live sessions' keys twice: ~3 µs more Postgres time an event.
const COMPACT_ROWS: u64 = 200_000;
/// Delta rows deleted since the last `VACUUM` of the delta tables that make the background
/// compactor vacuum them (their space is reused instead of the tables growing until autovacuum).
const VACUUM_ROWS: u64 = 200_000;

/// What one group commit adds to the rollups, aggregated by key.
#[derive(Default)]
pub(crate) struct Deltas<'a> {
    hourly: HashMap<(i64, [&'a str; 9]), [i64; 11]>,
    /// A session's contribution for one rollup key it used.
    sessions: HashMap<(&'a str, [&'a str; 9]), SessionSums<'a>>,
}

impl<'a> Deltas<'a> {
    /// The deltas of the events newly recorded by a group.
    pub(crate) fn of(records: &[&'a Record]) -> Deltas<'a> {
        let mut d = Deltas::default();
        for e in records {
            let dims = e.dims();
            let s = d
                .hourly
                .entry((time::hour_floor(e.ts_ms), dims))
                .or_default();
            for (a, b) in s.iter_mut().zip(e.sums()) {
                *a += b;
            }
            if !e.session_id.is_empty() {
                let one = SessionSums::of(e);
                d.sessions
                    .entry((&e.session_id, dims))
                    .and_modify(|s| s.add(&one))
                    .or_insert(one);
            }
        }
        d
    }

    /// Appends the deltas (binary `COPY`, one per table) on `conn`, inside the group's
    /// transaction. Returns the rows written.
    pub(crate) async fn copy(&self, conn: &mut PgConnection) -> Result<u64, MeteringError> {
        if !self.hourly.is_empty() {
            let mut b = CopyData::new(self.hourly.len() * 200);
            for ((hour, dims), sums) in &self.hourly {
                b.row(21);
                b.int(*hour);
                for d in dims {
                    b.text(d)?;
                }
                for s in sums {
                    b.int(*s);
                }
            }
            let sql = format!(
                "COPY usage_delta_hourly (hour_ms, {}, {}) FROM STDIN (FORMAT binary)",
                ROLL_DIMS.join(", "),
                SUMS.join(", ")
            );
            copy_in(conn, &sql, b.finish()).await?;
        }
        if !self.sessions.is_empty() {
            let mut b = CopyData::new(self.sessions.len() * 200);
            for ((session, dims), s) in &self.sessions {
                b.row(15);
                b.text(session)?;
                for d in dims {
                    b.text(d)?;
                }
                for v in [s.first, s.last, s.requests, s.cost, s.tokens] {
                    b.int(v);
                }
            }
            let sql = format!(
                "COPY usage_delta_sessions (session_id, {}, first_ms, last_ms, requests, cost_micros, tokens) FROM STDIN (FORMAT binary)",
                ROLL_DIMS.join(", ")
            );
            copy_in(conn, &sql, b.finish()).await?;
        }
        Ok((self.hourly.len() + self.sessions.len()) as u64)
    }
}

/// The statement that folds every hourly delta row visible to it into the rollups and deletes
/// it: hourly keys are summed and upserted into `usage_hourly`, summed again by day into
/// `usage_daily`, their dimension values added to `usage_dims_hourly`/`_daily`. Upserts go in key
/// order. Answers the delta rows folded.
fn hourly_sql() -> String {
    let dims = ROLL_DIMS.join(", ");
    let sum = |c: &str| format!("CAST(SUM({c}) AS BIGINT) AS {c}");
    let sums = SUMS.iter().map(|c| sum(c)).collect::<Vec<_>>().join(", ");
    let cols = SUMS.join(", ");
    let dim_values = |t: &str| {
        format!(
            "SELECT DISTINCT {t}, v.dim, v.value FROM h CROSS JOIN LATERAL (VALUES ('user', h.user_name), ('team', h.team), \
             ('discipline', h.discipline), ('level', h.level), ('model', h.model), ('provider', h.provider), ('harness', h.harness), \
             ('route', h.route), ('tier', h.tier)) AS v(dim, value)"
        )
    };
    let day = format!(
        "h.hour_ms - (h.hour_ms % {d} + {d}) % {d}",
        d = time::DAY_MS
    );
    format!(
        "WITH dh AS (DELETE FROM usage_delta_hourly RETURNING *), \
         h AS (SELECT hour_ms, {dims}, {sums} FROM dh GROUP BY hour_ms, {dims}), \
         ih AS (INSERT INTO usage_hourly (hour_ms, {dims}, {cols}) SELECT hour_ms, {dims}, {cols} FROM h ORDER BY hour_ms, {dims} \
                ON CONFLICT (hour_ms, {dims}) DO UPDATE SET {add_h}), \
         id AS (INSERT INTO usage_daily (day_ms, {dims}, {cols}) \
                SELECT day_ms, {dims}, {sums} FROM (SELECT {day} AS day_ms, h.* FROM h) AS x GROUP BY day_ms, {dims} ORDER BY day_ms, {dims} \
                ON CONFLICT (day_ms, {dims}) DO UPDATE SET {add_d}), \
         dmh AS (INSERT INTO usage_dims_hourly (hour_ms, dim, value) {dims_h} ON CONFLICT DO NOTHING), \
         dmd AS (INSERT INTO usage_dims_daily (day_ms, dim, value) {dims_d} ON CONFLICT DO NOTHING) \
         SELECT COUNT(*) FROM dh",
        add_h = add_set("usage_hourly", &SUMS),
        add_d = add_set("usage_daily", &SUMS),
        dims_h = dim_values("h.hour_ms"),
        dims_d = dim_values(&day),
    )
}

/// The statement that folds every session delta row of sessions in `part` (of [`SESSION_PARTS`],
/// by the hash of the session id) visible to it into the rollups and deletes it: (session, key)
/// rows are summed by session and key into `usage_session_dims`, and those sums by session into
/// `usage_sessions` (first/last/user/harness by min/max). Upserts go in key order. Answers the
/// delta rows folded.
fn sessions_sql(part: i32) -> String {
    let dims = ROLL_DIMS.join(", ");
    format!(
        "WITH ds AS (DELETE FROM usage_delta_sessions WHERE hashtext(session_id) & {mask} = {part} RETURNING *), \
         sk AS (SELECT session_id, {dims}, MIN(first_ms) AS first_ms, MAX(last_ms) AS last_ms, CAST(SUM(requests) AS BIGINT) AS requests, \
                CAST(SUM(cost_micros) AS BIGINT) AS cost_micros, CAST(SUM(tokens) AS BIGINT) AS tokens \
                FROM ds GROUP BY session_id, {dims}), \
         s AS (INSERT INTO usage_sessions (session_id, user_name, harness, first_ms, last_ms, requests, cost_micros, tokens) \
               SELECT session_id, MIN(user_name), MIN(harness), MIN(first_ms), MAX(last_ms), CAST(SUM(requests) AS BIGINT), \
               CAST(SUM(cost_micros) AS BIGINT), CAST(SUM(tokens) AS BIGINT) FROM sk GROUP BY session_id ORDER BY session_id \
               ON CONFLICT (session_id) DO UPDATE SET {set_s}), \
         sd AS (INSERT INTO usage_session_dims (session_id, {dims}, first_ms, last_ms, requests, cost_micros, tokens) \
                SELECT * FROM sk ORDER BY session_id, {dims} \
                ON CONFLICT (session_id, {dims}) DO UPDATE SET {set_sd}) \
         SELECT COUNT(*) FROM ds",
        mask = SESSION_PARTS - 1,
        set_s = session_set(
            "usage_sessions",
            "LEAST",
            "GREATEST",
            &["user_name", "harness"]
        ),
        set_sd = session_set("usage_session_dims", "LEAST", "GREATEST", &[]),
    )
}

/// The session deltas are folded in this many parts at once (a power of two), each its own
/// sessions: the session fold is most of a compaction's work, and a query or the end of a burst
/// waits for the longest fold.
const SESSION_PARTS: i32 = 2;

/// One of the compactor's folds: which deltas it folds, its statement and advisory lock.
struct Fold {
    /// The hourly deltas (`usage_delta_hourly`), else a part of the session deltas.
    hourly: bool,
    sql: String,
    /// The first key of its exclusive `pg_advisory_xact_lock` (the second is the schema's hash).
    lock: i32,
    /// Held while this process runs the fold: queries and the background task each wait here
    /// rather than each holding a connection that waits on the advisory lock (writers share the
    /// pool).
    running: tokio::sync::Mutex<()>,
}

/// Every fold also holds this advisory lock shared; a compactor before the folds were split (one
/// statement under this lock, exclusive) thus runs alone during a rolling upgrade.
const FOLDS_LOCK: i32 = 7201;

/// Folds the deltas into the rollups (Postgres); shared by the background task and the queries.
pub(crate) struct Compactor {
    pool: PgPool,
    /// Hourly deltas, then the parts of the session deltas.
    folds: Vec<Fold>,
    /// Delta rows written by this process since the last compaction began.
    pending: AtomicU64,
    /// Delta rows deleted since the delta tables were last vacuumed.
    since_vacuum: AtomicU64,
    wake: Notify,
}

impl Compactor {
    pub(crate) fn new(pool: PgPool) -> Arc<Compactor> {
        Arc::new(Compactor {
            pool,
            folds: std::iter::once((true, hourly_sql(), 7204))
                .chain((0..SESSION_PARTS).map(|part| (false, sessions_sql(part), 7202 + part)))
                .map(|(hourly, sql, lock)| Fold {
                    hourly,
                    sql,
                    lock,
                    running: tokio::sync::Mutex::new(()),
                })
                .collect(),
            pending: AtomicU64::new(0),
            since_vacuum: AtomicU64::new(0),
            wake: Notify::new(),
        })
    }

    /// Counts delta rows a writer committed; wakes the background compactor when many wait.
    pub(crate) fn written(&self, rows: u64) {
        if self.pending.fetch_add(rows, Ordering::Relaxed) + rows >= COMPACT_ROWS {
            self.wake.notify_one();
        }
    }

    /// One compaction: every delta row committed before it began is in the rollups when it
    /// returns (a concurrent compaction first finishes; this one then folds what is left). The
    /// hourly deltas and the parts of the session deltas are folded at once, each in its own
    /// transaction on its own connection. Returns the delta rows folded.
    pub(crate) async fn compact(&self) -> Result<u64, MeteringError> {
        self.pending.store(0, Ordering::Relaxed);
        Ok(try_join_all(self.folds.iter().map(|f| self.fold(f)))
            .await?
            .into_iter()
            .sum())
    }

    async fn fold(&self, f: &Fold) -> Result<u64, MeteringError> {
        let _running = f.running.lock().await;
        let mut tx = self.pool.begin().await?;
        // One fold of a kind at a time per schema, across processes (the locks end with the
        // transaction); its commit need not wait for the WAL flush: a compaction lost in a crash
        // loses its DELETE too.
        // work_mem: the deleted rows are held for the statement's readers (4 MB, the default,
        // spills a few seconds' worth to disk).
        sqlx::query(
            "SELECT pg_advisory_xact_lock_shared($1, hashtext(current_schema())), pg_advisory_xact_lock($2, hashtext(current_schema())), \
             set_config('synchronous_commit', 'off', true), set_config('work_mem', '64MB', true)",
        )
        .bind(FOLDS_LOCK)
        .bind(f.lock)
        .execute(&mut *tx)
        .await?;
        let n: i64 = sqlx::query_scalar(&f.sql).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        let n = n.max(0) as u64;
        self.since_vacuum.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }

    /// The folds of [`Compactor::compact`] whose table has a delta row visible, else nothing: a
    /// query's check costs one round trip and no lock when nothing waits (concurrent queries do
    /// not queue on the advisory locks). A fold still uncommitted leaves its rows visible, so this
    /// then waits for it and folds in what is left, like `compact`.
    pub(crate) async fn compact_pending(&self) -> Result<u64, MeteringError> {
        let (hourly, sessions): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM usage_delta_hourly), EXISTS (SELECT 1 FROM usage_delta_sessions)",
        )
        .fetch_one(&self.pool)
        .await?;
        let pending = |f: &&Fold| if f.hourly { hourly } else { sessions };
        Ok(
            try_join_all(self.folds.iter().filter(pending).map(|f| self.fold(f)))
                .await?
                .into_iter()
                .sum(),
        )
    }

    /// The background task: compacts every [`COMPACT_EVERY`] (or when woken), vacuums the delta
    /// tables now and then, and ends when `alive` says the store is gone or the pool is closed.
    pub(crate) async fn run(self: Arc<Self>, every: Duration, alive: impl Fn() -> bool) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.wake.notified() => {}
            }
            if self.pool.is_closed() || !alive() {
                return;
            }
            if let Err(e) = self.compact().await {
                if self.pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "metering: rollup compaction failed (the deltas are kept)");
                continue;
            }
            if self.since_vacuum.load(Ordering::Relaxed) >= VACUUM_ROWS {
                self.since_vacuum.store(0, Ordering::Relaxed);
                if let Err(e) = (&self.pool)
                    .execute("VACUUM usage_delta_hourly, usage_delta_sessions")
                    .await
                {
                    tracing::warn!(error = %e, "metering: vacuum of the rollup deltas failed");
                }
            }
        }
    }
}
