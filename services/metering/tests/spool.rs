//! The client side: metering down → events spooled → metering back → all arrive exactly once. (The
//! same sink behind a real gateway is tested in `retort-tests`, tests/tests/metering_gateway.rs:
//! no service crate depends on another, even to test.)
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::{
    net::SocketAddr,
    sync::atomic::Ordering,
    time::{Duration, SystemTime},
};

use common::{TestStore, temp_dir};
use retort_hooks::{Harness, Identity, Usage, UsageEvent, UsageSink};
use retort_metering::{MeteringConfig, client::MeteringSink, query};
use retort_proto::v1 as pb;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn gateway_event(i: usize) -> UsageEvent {
    UsageEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        time: SystemTime::now(),
        request_id: format!("r{i}"),
        identity: Identity {
            user: "alice".into(),
            team: "core".into(),
            discipline: "backend".into(),
            level: "senior".into(),
        },
        session_id: Some("s1".into()),
        harness: Harness::Codex,
        route: "frontier".into(),
        provider: "p".into(),
        model: "small".into(),
        outcome: "ok",
        status: None,
        usage: Usage {
            input: 100,
            output: 10,
            reasoning: 0,
            cache_read: 0,
            cache_write: 0,
        },
        latency_ms: 5,
        reasoning_ms: None,
        ttft_ms: None,
        stream: false,
    }
}

fn config(addr: SocketAddr, spool: &std::path::Path) -> MeteringConfig {
    let mut cfg = MeteringConfig {
        grpc_addr: addr,
        ..Default::default()
    };
    cfg.client.spool_dir = Some(spool.to_path_buf());
    cfg.client.batch_interval_ms = 20;
    cfg.client.retry_ms = 100;
    cfg.client.send_timeout_ms = 500;
    cfg.client.queue_size = 50;
    cfg.client.batch_size = 20;
    cfg
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn events_spool_while_metering_is_down_and_arrive_exactly_once_when_it_returns() {
    let addr = free_addr();
    let spool = temp_dir("spool");
    let cfg = config(addr, &spool);
    let sink = MeteringSink::start(cfg.client_settings().unwrap()).unwrap();
    // Metering is down: 300 events (more than the queue holds) go to the spool, none is lost.
    for i in 0..300 {
        sink.record(gateway_event(i));
    }
    sink.flush().await;
    let stats = sink.stats();
    assert_eq!(stats.spooled.load(Ordering::Relaxed), 300);
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 0);
    assert!(!sink.spool().files().unwrap().is_empty());

    // Metering comes back on the same address: the spool is replayed.
    let ts = TestStore::sqlite().await;
    let running = retort_metering::start_with_store(&cfg, ts.store.clone(), common::prices())
        .await
        .unwrap();
    wait_for("the spool to replay", || {
        sink.stats().replayed.load(Ordering::Relaxed) == 300
    })
    .await;
    for i in 0..50 {
        sink.record(gateway_event(1000 + i));
    }
    sink.shutdown().await;
    let t = query::grouped(&ts.store, &pb::UsageQuery::default())
        .await
        .unwrap();
    assert_eq!(t.rows[0].requests, 350, "every event exactly once");
    assert!(
        sink.spool().files().unwrap().is_empty(),
        "replayed files are removed"
    );

    // A spool file replayed twice (e.g. a crash before it was removed) is deduplicated.
    let dup: Vec<pb::UsageEvent> = {
        let csv = query::export_page(&ts.store, &Default::default(), None, 10)
            .await
            .unwrap()
            .0;
        csv.lines()
            .map(|l| l.split(',').next().unwrap().to_string())
            .map(|id| {
                let mut e = retort_metering::convert::from_gateway(&gateway_event(0));
                e.event_id = id;
                e
            })
            .collect()
    };
    let mut s = pb::IngestSummary::default();
    running.metering.ingest(dup, &mut s).await.unwrap();
    assert_eq!((s.recorded, s.duplicates), (0, 10));
    running.shutdown().await;
    ts.cleanup().await;
    let _ = std::fs::remove_dir_all(spool);
}
