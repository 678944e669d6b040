//! `cargo run --release -p retort-bench-metering -- [EVENTS] [QUERY_EVENTS]` (`STREAMS=N` sets the
//! concurrent ingest streams, default 4; `IDS=v4` random event ids instead of the gateway's UUIDv7;
//! `PG_WRITE=unnest` the Postgres `INSERT ... ON CONFLICT` path instead of `COPY`; `ONLY=sqlite` or
//! `ONLY=postgres` one store's ingest; `PG_WRITERS=N` concurrent Postgres group commits, default 3;
//! `PG_COMPACT_MS=N` the Postgres rollup compactor's interval, 0 for none until the end):
//! 1. ingest throughput (events/s) into SQLite (a temp file) and Postgres (RETORT_TEST_DATABASE_URL,
//!    a schema of its own, dropped after), through `Metering::ingest` — validation, pricing, raw
//!    insert and every rollup (hourly, daily, sessions, dimensions) — in batches of 500 as the
//!    gateway's client sends them, from concurrent streams (the store's group commit takes the
//!    batches waiting into one transaction);
//! 2. dashboard query latency over QUERY_EVENTS (default 10 million; 0 skips) events in Postgres,
//!    seeded server-side with `generate_series` into a schema of its own (dropped after; indexes
//!    built after the load), the rollups built from them in SQL with the same aggregates ingest
//!    maintains; every query `/dashboard` issues (default range: the last 7 days) is timed up to
//!    50 times, p50/p95 reported, plus a few filtered variants.
#![allow(clippy::print_stdout)]
use std::{sync::Arc, time::Instant};

use retort_metering::{
    Store,
    pricing::Prices,
    query,
    service::Metering,
    store::{Col, StoreOptions},
    time,
};
use retort_proto::v1 as pb;

const BATCH: usize = 500;

fn streams() -> usize {
    std::env::var("STREAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(4)
}

/// How ingested events' times are spread: `live` (the default) — in arrival order over the last
/// hour, as gateways send them; `week` — each batch of 500 spans ~8 hours of a week (i % 10,000
/// minutes ago), so nearly every event lands in a rollup row of its own (the worst case for rollup
/// maintenance; the only spread before the group commit).
fn week_spread() -> bool {
    std::env::var("SPREAD").is_ok_and(|s| s == "week")
}

/// Event ids as the gateway makes them: time-ordered UUIDv7 (the default), or `IDS=v4` for random
/// ones (what the gateway sent before; the event-id index then takes random inserts).
fn random_ids() -> bool {
    std::env::var("IDS").is_ok_and(|s| s == "v4")
}

/// `PG_WRITE=unnest`: Postgres events through `INSERT ... UNNEST ... ON CONFLICT` instead of `COPY`.
fn pg_copy() -> bool {
    !std::env::var("PG_WRITE").is_ok_and(|s| s == "unnest")
}

/// Sessions whose events interleave in the ingest stream (as many people's harnesses send at
/// once): event `i` is event `(i / LIVE_SESSIONS) % 50` of one of them. A session is one user (with
/// the user's team, discipline and level) in one harness, alternating two models — so a batch of
/// 500 holds 500 sessions and ~200 hourly rollup keys.
const LIVE_SESSIONS: usize = 1000;

fn event(i: usize, n: usize, now: i64, week: bool) -> pb::UsageEvent {
    let users = 200;
    let session = (i / (LIVE_SESSIONS * 50)) * LIVE_SESSIONS + i % LIVE_SESSIONS;
    let user = session % users;
    pb::UsageEvent {
        event_id: if random_ids() {
            uuid::Uuid::new_v4()
        } else {
            uuid::Uuid::now_v7()
        }
        .to_string(),
        time_ms: if week {
            now - (i as i64 % 10_000) * 60_000
        } else {
            now - time::HOUR_MS + (i as i64 * time::HOUR_MS) / n.max(1) as i64
        },
        request_id: format!("r{i}"),
        user: format!("user{user}"),
        team: format!("team{}", user % 12),
        discipline: ["backend", "frontend", "ml", "mobile"][user % 4].into(),
        level: ["junior", "mid", "senior", "staff"][user / 4 % 4].into(),
        session_id: format!("s{session}"),
        harness: ["claude_code", "codex", "cursor", "sdk"][session % 4].into(),
        route: "frontier".into(),
        provider: "anthropic".into(),
        model: ["big", "small"][i / LIVE_SESSIONS % 2].into(),
        outcome: "ok".into(),
        input_tokens: 1000 + (i % 500) as u64,
        output_tokens: 200,
        reasoning_tokens: 50,
        latency_ms: 900,
        ..Default::default()
    }
}

/// The ingest events' models ("big", "small") and the seeded ones ("opus", "sonnet", "haiku",
/// "gpt", in the tiers the seed records).
fn bench_prices() -> Vec<retort_pricing::Price> {
    let p = |model: &str, input: f64, output: f64, tier: Option<&str>| retort_pricing::Price {
        model: model.into(),
        effective_from: "2020-01-01".into(),
        input,
        output,
        reasoning: None,
        cache_read: None,
        cache_write: None,
        tier: tier.map(Into::into),
    };
    vec![
        p("big", 3.0, 15.0, None),
        p("small", 0.1, 0.4, None),
        p("opus", 15.0, 75.0, Some("premium")),
        p("sonnet", 3.0, 15.0, Some("standard")),
        p("haiku", 1.0, 5.0, Some("economy")),
        p("gpt", 2.0, 8.0, Some("standard")),
    ]
}

async fn bench(name: &str, store: Store, n: usize) -> anyhow::Result<f64> {
    let m = Arc::new(Metering::new(
        store.clone(),
        Prices::load(&store, bench_prices()).await?,
    ));
    let now = time::now_ms();
    let batches: Vec<Vec<pb::UsageEvent>> = (0..n)
        .map(|i| event(i, n, now, week_spread()))
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|c| c.to_vec())
        .collect();
    let streams = streams();
    let per = batches.len().div_ceil(streams);
    let mut groups: Vec<Vec<Vec<pb::UsageEvent>>> = Vec::new();
    let mut it = batches.into_iter();
    for _ in 0..streams {
        groups.push(it.by_ref().take(per).collect());
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for g in groups {
        let m = Arc::clone(&m);
        tasks.push(tokio::spawn(async move {
            let mut s = pb::IngestSummary::default();
            for b in g {
                m.ingest(b, &mut s).await?;
            }
            anyhow::Ok(s.recorded)
        }));
    }
    let mut recorded = 0;
    for t in tasks {
        recorded += t.await??;
    }
    let acked = t0.elapsed().as_secs_f64();
    // Postgres: the rollup deltas still pending are folded in inside the timed span (the rate
    // counts every event in its rollups, as the direct upserts did).
    store.compact().await?;
    let secs = t0.elapsed().as_secs_f64();
    anyhow::ensure!(recorded as usize == n, "{name}: recorded {recorded} of {n}");
    let in_rollups = store
        .select(
            "SELECT CAST(SUM(requests) AS BIGINT), (SELECT CAST(SUM(requests) AS BIGINT) FROM usage_daily), \
             (SELECT CAST(SUM(requests) AS BIGINT) FROM usage_sessions) FROM usage_hourly",
            &[],
            &[Col::Int, Col::Int, Col::Int],
        )
        .await?;
    anyhow::ensure!(
        in_rollups[0].iter().all(|v| v.int() == n as i64),
        "{name}: the rollups count {:?} requests, not {n}",
        in_rollups[0]
    );
    let rate = n as f64 / secs;
    println!(
        "{name}: {n} events in {secs:.2} s (acked in {acked:.2} s) = {rate:.0} events/s ({streams} streams of {BATCH}-event batches, {} spread, {} ids{}; load average {})",
        if week_spread() { "week" } else { "live" },
        if random_ids() { "v4" } else { "v7" },
        if name == "postgres" {
            if pg_copy() { ", COPY" } else { ", UNNEST" }
        } else {
            ""
        },
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let qn: i64 = std::env::args()
        .nth(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let dir = std::env::temp_dir().join(format!(
        "retort-bench-metering-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let only = std::env::var("ONLY").unwrap_or_default();
    if only != "postgres" {
        std::fs::create_dir_all(&dir)?;
        let sqlite = Store::connect(&StoreOptions::new(format!(
            "sqlite://{}?mode=rwc",
            dir.join("bench.db").display()
        )))
        .await?;
        bench("sqlite", sqlite.clone(), n).await?;
        sqlite.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
    if only == "sqlite" {
        return Ok(());
    }
    let url = std::env::var("RETORT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into());
    let schema = format!("metering_bench_{}", uuid::Uuid::new_v4().simple());
    let pg = Store::connect(&StoreOptions {
        schema: Some(schema.clone()),
        pg_copy: pg_copy(),
        pg_writers: std::env::var("PG_WRITERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(StoreOptions::new("").pg_writers),
        // PG_COMPACT_MS=N: the background compactor's interval (0: none; the last compaction only).
        pg_compact_every: match std::env::var("PG_COMPACT_MS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(0) => None,
            Some(ms) => Some(std::time::Duration::from_millis(ms)),
            None => StoreOptions::new("").pg_compact_every,
        },
        ..StoreOptions::new(url)
    })
    .await?;
    let r = bench("postgres", pg.clone(), n).await;
    pg.drop_schema(&schema).await?;
    pg.close().await;
    r?;
    if qn > 0 {
        let schema = format!("metering_qbench_{}", uuid::Uuid::new_v4().simple());
        let url = std::env::var("RETORT_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into());
        let pg = Store::connect(&StoreOptions {
            schema: Some(schema.clone()),
            max_connections: 4,
            ..StoreOptions::new(url.clone())
        })
        .await?;
        let r = queries(pg.clone(), &url, &schema, qn).await;
        pg.drop_schema(&schema).await?;
        pg.close().await;
        r?;
    }
    Ok(())
}

/// Events span the last 30 days; the dashboard's default range is the last 7.
const SPAN_MS: i64 = 30 * time::DAY_MS;

/// Seeds `n` events server-side: 200 users (each with a fixed team, discipline and level),
/// sessions of 50 events each belonging to one user, 4 models (3 providers' tiers), 4 harnesses,
/// 2 % failures, reasoning on a third of the events. The raw table's indexes are dropped for the
/// load and rebuilt after it; the rollups are then built in SQL with the aggregates ingest keeps.
async fn seed(url: &str, schema: &str, n: i64, now: i64) -> anyhow::Result<()> {
    use sqlx::{ConnectOptions, Executor};
    let t0 = Instant::now();
    let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
    let mut c = opts.options([("search_path", schema)]).connect().await?;
    c.execute(
        "SET work_mem = '256MB'; SET maintenance_work_mem = '512MB'; SET synchronous_commit = off; \
         ALTER TABLE usage_events DROP CONSTRAINT usage_events_pkey; DROP INDEX usage_events_ts",
    )
    .await?;
    let sql = "INSERT INTO usage_events (event_id, ts_ms, request_id, user_name, team, discipline, level, session_id, harness, route, \
        provider, model, outcome, status, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens, latency_ms, \
        ttft_ms, reasoning_ms, stream, cost_micros, price_version, tier, unpriced, unknown_user, recorded_ms) \
        SELECT 'e' || g, $1 - (g * $2) / $3, 'r' || g, 'user' || ((g / 50) % 200), 'team' || ((g / 50) % 200 % 12), \
        (ARRAY['backend','frontend','ml','mobile'])[(g / 50) % 200 % 4 + 1], (ARRAY['junior','mid','senior','staff'])[(g / 50) % 200 / 4 % 4 + 1], \
        's' || (g / 50), (ARRAY['claude_code','codex','cursor','sdk'])[(g / 10000) % 4 + 1], (ARRAY['frontier','default','cheap','default'])[g % 4 + 1], \
        (ARRAY['anthropic','anthropic','anthropic','openai'])[g % 4 + 1], (ARRAY['opus','sonnet','haiku','gpt'])[g % 4 + 1], \
        CASE WHEN g % 50 = 0 THEN 'error' ELSE 'ok' END, CASE WHEN g % 50 = 0 THEN 500 ELSE 200 END, \
        1000 + g % 500, 200 + g % 300, (g % 3) * 100, g % 1000, 0, 900 + g % 200, 300, (g % 3) * 400, 1, \
        CASE WHEN g % 50 = 0 THEN 0 ELSE (1000 + g % 500) * (ARRAY[15, 3, 1, 2])[g % 4 + 1] END, 'v1', \
        (ARRAY['premium','standard','economy','standard'])[g % 4 + 1], 0, 0, $1 \
        FROM generate_series(1::bigint, $3) AS g";
    sqlx::query(sql)
        .bind(now)
        .bind(SPAN_MS)
        .bind(n)
        .execute(&mut c)
        .await?;
    let t1 = Instant::now();
    c.execute(
        "ALTER TABLE usage_events ADD PRIMARY KEY (event_id); CREATE INDEX usage_events_ts ON usage_events (ts_ms)",
    )
    .await?;
    let t2 = Instant::now();
    let sums = "SUM(requests), SUM(failed), SUM(input_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cache_read_tokens), \
        SUM(cache_write_tokens), SUM(cost_micros), SUM(reasoning_ms), SUM(latency_ms), SUM(unpriced)";
    let dims = [
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
    let names = [
        "user",
        "team",
        "discipline",
        "level",
        "model",
        "provider",
        "harness",
        "route",
        "tier",
    ];
    let dims_sql = dims
        .iter()
        .zip(names)
        .map(|(d, n)| format!("SELECT DISTINCT hour_ms, '{n}', {d} FROM usage_hourly"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    c.execute(
        format!(
            "INSERT INTO usage_hourly SELECT ts_ms - ts_ms % 3600000, user_name, team, discipline, level, model, provider, harness, route, tier, \
             COUNT(*), SUM(CASE WHEN outcome <> 'ok' THEN 1 ELSE 0 END), SUM(input_tokens), SUM(output_tokens), SUM(reasoning_tokens), \
             SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cost_micros), SUM(reasoning_ms), SUM(latency_ms), SUM(unpriced) \
             FROM usage_events GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10; \
             INSERT INTO usage_daily SELECT hour_ms - hour_ms % 86400000, user_name, team, discipline, level, model, provider, harness, route, tier, \
             {sums} FROM usage_hourly GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10; \
             INSERT INTO usage_dims_hourly {dims_sql}; \
             INSERT INTO usage_dims_daily SELECT DISTINCT hour_ms - hour_ms % 86400000, dim, value FROM usage_dims_hourly; \
             INSERT INTO usage_session_dims SELECT session_id, user_name, team, discipline, level, model, provider, harness, route, tier, \
             MIN(ts_ms), MAX(ts_ms), COUNT(*), SUM(cost_micros), SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) \
             FROM usage_events WHERE session_id <> '' GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10; \
             INSERT INTO usage_sessions SELECT session_id, MIN(user_name), MIN(harness), MIN(first_ms), MAX(last_ms), SUM(requests), \
             SUM(cost_micros), SUM(tokens) FROM usage_session_dims GROUP BY 1; \
             ANALYZE"
        )
        .as_str(),
    )
    .await?;
    let mut rows = Vec::new();
    for t in [
        "usage_hourly",
        "usage_daily",
        "usage_sessions",
        "usage_session_dims",
        "usage_dims_hourly",
    ] {
        let sql = format!("SELECT COUNT(*) FROM {t}");
        let k: i64 = sqlx::query_scalar(&sql).fetch_one(&mut c).await?;
        rows.push(format!("{t} {k}"));
    }
    println!(
        "seeded {n} events in {:.1} s (load {:.1} s, indexes {:.1} s, rollups {:.1} s); rows: {}",
        t0.elapsed().as_secs_f64(),
        t1.duration_since(t0).as_secs_f64(),
        t2.duration_since(t1).as_secs_f64(),
        t2.elapsed().as_secs_f64(),
        rows.join(", ")
    );
    Ok(())
}

/// Times `f` up to 50 times (fewer when one run is slow: at most ~20 s per query); p50/p95 in ms.
async fn time_query<F, Fut>(name: &str, mut f: F) -> anyhow::Result<(String, usize, f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    f().await?; // warm-up
    let mut ms = Vec::new();
    let start = Instant::now();
    while ms.len() < 50 && (ms.len() < 5 || start.elapsed().as_secs() < 20) {
        let t = Instant::now();
        f().await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    let (p50, p95) = (pct(0.50), pct(0.95));
    println!(
        "query {name:<28} n={:<3} p50 {p50:>8.1} ms  p95 {p95:>8.1} ms  {}",
        ms.len(),
        if p95 <= 100.0 { "PASS" } else { "FAIL" }
    );
    Ok((name.to_string(), ms.len(), p50, p95))
}

async fn queries(store: Store, url: &str, schema: &str, n: i64) -> anyhow::Result<()> {
    use retort_proto::v1 as pb;
    let now = time::now_ms();
    seed(url, schema, n, now).await?;
    let m = Arc::new(Metering::new(
        store.clone(),
        Prices::load(&store, bench_prices()).await?,
    ));
    // What /dashboard asks for with its default range (since=7d), query by query.
    let f = pb::UsageFilter {
        since_ms: now - 7 * time::DAY_MS,
        ..Default::default()
    };
    let grouped = |g: &[&str], order: &str, limit: u32| pb::UsageQuery {
        group_by: g.iter().map(|s| s.to_string()).collect(),
        filter: Some(f.clone()),
        order_by: order.into(),
        limit,
    };
    let top = pb::TopRequest {
        filter: Some(f.clone()),
        limit: 10,
        ..Default::default()
    };
    let mut out = Vec::new();
    let q = grouped(&[], "", 0);
    out.push(
        time_query("totals (query)", || async {
            query::grouped(&m.store, &q)
                .await
                .map(drop)
                .map_err(Into::into)
        })
        .await?,
    );
    let q = grouped(&["day"], "", 2000);
    out.push(
        time_query("spend by day (query)", || async {
            query::grouped(&m.store, &q)
                .await
                .map(drop)
                .map_err(Into::into)
        })
        .await?,
    );
    let q = grouped(&["harness"], "requests", 0);
    out.push(
        time_query("harness share (query)", || async {
            query::grouped(&m.store, &q)
                .await
                .map(drop)
                .map_err(Into::into)
        })
        .await?,
    );
    out.push(
        time_query("top-users", || async {
            query::top_users(&m.store, &m.prices, &top)
                .await
                .map(drop)
                .map_err(Into::into)
        })
        .await?,
    );
    out.push(
        time_query("top-reasoning", || async {
            query::top_reasoning(&m.store, &top)
                .await
                .map(drop)
                .map_err(Into::into)
        })
        .await?,
    );
    let q = grouped(&[], "", 500);
    out.push(
        time_query("model-mix", || async {
            query::model_mix(&m.store, &q)
                .await
                .map(drop)
                .map_err(Into::into)
        })
        .await?,
    );
    let s = pb::SessionsRequest {
        filter: Some(f.clone()),
        limit: 15,
        ..Default::default()
    };
    out.push(
        time_query("sessions", || async {
            query::sessions(&m.store, &s)
                .await
                .map(drop)
                .map_err(Into::into)
        })
        .await?,
    );
    out.push(
        time_query("dimensions", || async {
            query::dimensions(&m.store, &f)
                .await
                .map(drop)
                .map_err(Into::into)
        })
        .await?,
    );
    let worst = out.iter().map(|o| o.3).fold(0.0, f64::max);
    println!(
        "dashboard queries (default view) over {n} events: worst p95 {worst:.1} ms: {}",
        if worst <= 100.0 { "PASS" } else { "FAIL" }
    );
    // Beyond the default view: what a chosen filter or a short range asks.
    let team = pb::UsageFilter {
        teams: vec!["team3".into()],
        ..f.clone()
    };
    let q = pb::UsageQuery {
        group_by: vec!["discipline".into(), "level".into(), "model".into()],
        filter: Some(team.clone()),
        limit: 500,
        ..Default::default()
    };
    time_query("model-mix, team filter", || async {
        query::model_mix(&m.store, &q)
            .await
            .map(drop)
            .map_err(Into::into)
    })
    .await?;
    let q = pb::UsageQuery {
        group_by: vec!["hour".into()],
        filter: Some(pb::UsageFilter {
            since_ms: now - time::DAY_MS,
            ..Default::default()
        }),
        limit: 2000,
        ..Default::default()
    };
    time_query("spend by hour, last 24 h", || async {
        query::grouped(&m.store, &q)
            .await
            .map(drop)
            .map_err(Into::into)
    })
    .await?;
    let s = pb::SessionsRequest {
        filter: Some(pb::UsageFilter {
            users: vec!["user7".into()],
            ..f.clone()
        }),
        limit: 15,
        ..Default::default()
    };
    time_query("sessions, user filter", || async {
        query::sessions(&m.store, &s)
            .await
            .map(drop)
            .map_err(Into::into)
    })
    .await?;
    Ok(())
}
