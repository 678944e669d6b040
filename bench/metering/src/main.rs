//! `cargo run --release -p retort-metering-bench -- [EVENTS]`: ingest throughput (events/s) into
//! SQLite (a temp file) and Postgres (RETORT_TEST_DATABASE_URL, a schema of its own, dropped after),
//! through `Metering::ingest` — validation, pricing, raw insert and rollup upsert — in batches of
//! 500 as the gateway's client sends them, with 4 concurrent streams.
#![allow(clippy::print_stdout)]
use std::{sync::Arc, time::Instant};

use retort_metering::{Store, pricing::Prices, service::Metering, store::StoreOptions, time};
use retort_proto::v1 as pb;

const BATCH: usize = 500;
const STREAMS: usize = 4;

fn event(i: usize, now: i64) -> pb::UsageEvent {
    let users = 200;
    pb::UsageEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        time_ms: now - (i as i64 % 10_000) * 60_000,
        request_id: format!("r{i}"),
        user: format!("user{}", i % users),
        team: format!("team{}", i % 12),
        discipline: ["backend", "frontend", "ml", "mobile"][i % 4].into(),
        level: ["junior", "mid", "senior", "staff"][i % 4].into(),
        session_id: format!("s{}", i / 50),
        harness: ["claude_code", "codex", "cursor", "sdk"][i % 4].into(),
        route: "frontier".into(),
        provider: "anthropic".into(),
        model: ["big", "small"][i % 2].into(),
        outcome: "ok".into(),
        input_tokens: 1000 + (i % 500) as u64,
        output_tokens: 200,
        reasoning_tokens: 50,
        latency_ms: 900,
        ..Default::default()
    }
}

async fn bench(name: &str, store: Store, n: usize) -> anyhow::Result<f64> {
    let prices = vec![
        retort_pricing::Price {
            model: "big".into(),
            effective_from: "2020-01-01".into(),
            input: 3.0,
            output: 15.0,
            reasoning: None,
            cache_read: None,
            cache_write: None,
            tier: None,
        },
        retort_pricing::Price {
            model: "small".into(),
            effective_from: "2020-01-01".into(),
            input: 0.1,
            output: 0.4,
            reasoning: None,
            cache_read: None,
            cache_write: None,
            tier: None,
        },
    ];
    let m = Arc::new(Metering::new(store.clone(), Prices::load(&store, prices).await?));
    let now = time::now_ms();
    let batches: Vec<Vec<pb::UsageEvent>> = (0..n)
        .map(|i| event(i, now))
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|c| c.to_vec())
        .collect();
    let per = batches.len().div_ceil(STREAMS);
    let mut groups: Vec<Vec<Vec<pb::UsageEvent>>> = Vec::new();
    let mut it = batches.into_iter();
    for _ in 0..STREAMS {
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
    let secs = t0.elapsed().as_secs_f64();
    anyhow::ensure!(recorded as usize == n, "{name}: recorded {recorded} of {n}");
    let rate = n as f64 / secs;
    println!("{name}: {n} events in {secs:.2} s = {rate:.0} events/s");
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(200_000);
    let dir = std::env::temp_dir().join(format!("retort-metering-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let sqlite = Store::connect(&StoreOptions::new(format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()))).await?;
    bench("sqlite", sqlite.clone(), n).await?;
    sqlite.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    let url = std::env::var("RETORT_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into());
    let schema = format!("metering_bench_{}", uuid::Uuid::new_v4().simple());
    let pg = Store::connect(&StoreOptions {
        url,
        schema: Some(schema.clone()),
        max_connections: 8,
    })
    .await?;
    let r = bench("postgres", pg.clone(), n).await;
    pg.drop_schema(&schema).await?;
    pg.close().await;
    r?;
    Ok(())
}
