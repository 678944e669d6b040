//! Postgres rollup deltas and their compactor: two stores on one schema (two metering processes),
//! each with its background compactor running every few milliseconds, plus explicit compactions
//! from both, all while four callers ingest (with duplicates). Afterwards every rollup table holds
//! exactly what the raw events say, row for row, and no delta is left.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::{sync::Arc, time::Duration};

use common::{TestStore, at, ev, pg_url, prices};
use retort_metering::{
    Store,
    pricing::Prices,
    service::Metering,
    store::{Col, StoreOptions},
    time,
};
use retort_proto::v1 as pb;

fn events(n: usize) -> Vec<pb::UsageEvent> {
    let start = at("2025-04-01", 0);
    (0..n)
        .map(|i| {
            let user = ["ann", "ben", "cat", "dan", "eve", "fay", "gus"][i % 7];
            let model = ["big", "small", "other"][i / 7 % 3];
            let t = start + (i as i64 * 7919 % 3000) * 60_000 + (i as i64 % 1000);
            let mut e = ev(
                &format!("c{i}"),
                t,
                user,
                model,
                100 + (i % 900) as u64,
                10 + (i % 300) as u64,
            );
            e.harness = ["codex", "cursor"][i / 3 % 2].into();
            e.session_id = if i % 9 == 0 {
                String::new()
            } else {
                format!("s{}", i % 40)
            };
            e.reasoning_tokens = (i % 50) as u64;
            e.reasoning_ms = (i % 700) as u64;
            if i % 13 == 0 {
                e.outcome = "error".into();
                e.status = 500;
            }
            e
        })
        .collect()
}

/// Rows of `a` not in `b` plus rows of `b` not in `a` (with multiplicity).
fn differ(a: &str, b: &str) -> String {
    format!("SELECT COUNT(*) FROM (({a} EXCEPT ALL {b}) UNION ALL ({b} EXCEPT ALL {a})) AS x")
}

const DIMS: &str = "user_name, team, discipline, level, model, provider, harness, route, tier";

#[tokio::test]
async fn concurrent_compactors_and_ingest_leave_rollups_exactly_equal_to_the_raw_events() {
    let ts = TestStore::postgres_with(|o| StoreOptions {
        pg_compact_every: Some(Duration::from_millis(3)),
        ..o
    })
    .await;
    // A second process on the same schema: its own writers and compactor.
    let other = Store::connect(&StoreOptions {
        schema: ts.schema.clone(),
        max_connections: 4,
        pg_compact_every: Some(Duration::from_millis(5)),
        ..StoreOptions::new(pg_url())
    })
    .await
    .unwrap();
    let ms = [
        Arc::new(Metering::new(
            ts.store.clone(),
            Prices::load(&ts.store, prices()).await.unwrap(),
        )),
        Arc::new(Metering::new(
            other.clone(),
            Prices::load(&other, prices()).await.unwrap(),
        )),
    ];
    let all = events(6000);
    let mut tasks = Vec::new();
    for k in 0..4 {
        let m = Arc::clone(&ms[k % 2]);
        let mut mine: Vec<pb::UsageEvent> = all.iter().skip(k).step_by(4).cloned().collect();
        // Resent events: a duplicate lands in the other process, before or after its original.
        mine.extend(all.iter().skip((k + 1) % 4).step_by(4).take(150).cloned());
        tasks.push(tokio::spawn(async move {
            let mut s = pb::IngestSummary::default();
            for b in mine.chunks(61) {
                m.ingest(b.to_vec(), &mut s).await.unwrap();
            }
            s
        }));
    }
    // Explicit compactions from both stores at once, while the ingest runs.
    let mut compactions = Vec::new();
    for s in [ts.store.clone(), other.clone()] {
        compactions.push(tokio::spawn(async move {
            let mut folded = 0;
            for _ in 0..40 {
                folded += s.compact().await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            folded
        }));
    }
    let (mut recorded, mut duplicates) = (0, 0);
    for t in tasks {
        let s = t.await.unwrap();
        recorded += s.recorded;
        duplicates += s.duplicates;
    }
    for c in compactions {
        c.await.unwrap();
    }
    assert_eq!(
        (recorded, duplicates),
        (6000, 600),
        "every event recorded once"
    );
    ts.store.compact().await.unwrap();

    let count = |sql: String| {
        let s = ts.store.clone();
        async move { s.select(&sql, &[], &[Col::Int]).await.unwrap()[0][0].int() }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM usage_delta_hourly".into()).await,
        0,
        "no hourly delta left"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM usage_delta_sessions".into()).await,
        0,
        "no session delta left"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM usage_events".into()).await,
        6000
    );

    let sums = "COUNT(*), SUM(CASE WHEN outcome <> 'ok' THEN 1 ELSE 0 END), SUM(input_tokens), SUM(output_tokens), \
        SUM(reasoning_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cost_micros), SUM(reasoning_ms), \
        SUM(latency_ms), SUM(unpriced)";
    let rollup_sums = "requests, failed, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens, \
        cost_micros, reasoning_ms, latency_ms, unpriced";
    let (h, d) = (time::HOUR_MS, time::DAY_MS);
    let checks = [
        (
            "usage_hourly",
            format!("SELECT hour_ms, {DIMS}, {rollup_sums} FROM usage_hourly"),
            format!("SELECT ts_ms - ts_ms % {h}, {DIMS}, {sums} FROM usage_events GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"),
        ),
        (
            "usage_daily",
            format!("SELECT day_ms, {DIMS}, {rollup_sums} FROM usage_daily"),
            format!("SELECT ts_ms - ts_ms % {d}, {DIMS}, {sums} FROM usage_events GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"),
        ),
        (
            "usage_sessions",
            "SELECT session_id, user_name, harness, first_ms, last_ms, requests, cost_micros, tokens FROM usage_sessions".into(),
            "SELECT session_id, MIN(user_name), MIN(harness), MIN(ts_ms), MAX(ts_ms), COUNT(*), SUM(cost_micros), \
             SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) FROM usage_events WHERE session_id <> '' GROUP BY 1"
                .into(),
        ),
        (
            "usage_session_dims",
            format!("SELECT session_id, {DIMS}, first_ms, last_ms, requests, cost_micros, tokens FROM usage_session_dims"),
            format!(
                "SELECT session_id, {DIMS}, MIN(ts_ms), MAX(ts_ms), COUNT(*), SUM(cost_micros), \
                 SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) FROM usage_events WHERE session_id <> '' \
                 GROUP BY session_id, {DIMS}"
            ),
        ),
        (
            "usage_dims_hourly",
            "SELECT hour_ms, dim, value FROM usage_dims_hourly".into(),
            format!(
                "SELECT DISTINCT ts_ms - ts_ms % {h}, v.dim, v.value FROM usage_events CROSS JOIN LATERAL (VALUES ('user', user_name), \
                 ('team', team), ('discipline', discipline), ('level', level), ('model', model), ('provider', provider), \
                 ('harness', harness), ('route', route), ('tier', tier)) AS v(dim, value)"
            ),
        ),
        (
            "usage_dims_daily",
            "SELECT day_ms, dim, value FROM usage_dims_daily".into(),
            "SELECT DISTINCT hour_ms - hour_ms % 86400000, dim, value FROM usage_dims_hourly".into(),
        ),
    ];
    for (table, rollup, raw) in checks {
        assert!(
            count(format!("SELECT COUNT(*) FROM {table}")).await > 0,
            "{table} is empty"
        );
        // (The raw SUMs are numeric, the rollup columns bigint: the set operations compare them as numeric.)
        assert_eq!(
            count(differ(&rollup, &raw)).await,
            0,
            "{table} differs from the raw events"
        );
    }
    other.close().await;
    ts.cleanup().await;
}
