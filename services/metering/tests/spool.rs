//! The client side: metering down → events spooled → metering back → all arrive exactly once; and
//! end to end through the gateway (simulator + metering + gateway with the MeteringSink).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use common::{TestStore, temp_dir};
use retort_gateway::{
    hooks::{Hooks, UsageEvent, UsageSink},
    types::{Harness, Identity, Usage},
};
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

#[tokio::test]
async fn gateway_traffic_arrives_priced_through_the_metering_sink() {
    // Metering, on Postgres this time.
    let ts = TestStore::postgres().await;
    let spool = temp_dir("gw-spool");
    let cfg = config(SocketAddr::from(([127, 0, 0, 1], 0)), &spool);
    let prices = MeteringConfig::from_toml(
        r#"
        [[prices]]
        model = "sim-fast"
        effective_from = "2024-01-01"
        input = 1.0
        output = 2.0
        "#,
    )
    .unwrap()
    .1;
    let running = retort_metering::start_with_store(&cfg, ts.store.clone(), prices)
        .await
        .unwrap();
    let mut cfg = cfg;
    cfg.grpc_addr = running.grpc_addr;
    let sink = MeteringSink::start(cfg.client_settings().unwrap()).unwrap();

    let sim = retort_sim::spawn(
        retort_sim::SimConfig::from_toml(
            "strict_models = false\n[models.\"sim-down\"]\nfault = \"unavailable\"\n",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let gw_cfg = retort_gateway::config::Config::from_toml(&format!(
        r#"
        [server]
        http_addr = "127.0.0.1:0"
        grpc_addr = "127.0.0.1:0"
        [[users]]
        name = "erin"
        team = "qa"
        discipline = "backend"
        level = "senior"
        key = "sk-m"
        [providers.oa]
        kind = "openai"
        base_url = "{}/v1"
        [models."sim-down"]
        provider = "oa"
        [models."sim-fast"]
        provider = "oa"
        [aliases.resilient]
        targets = ["sim-down", "sim-fast"]
        [routing]
        max_retries_per_target = 0
        [breaker]
        failure_threshold = 1000
        "#,
        sim.base_url()
    ))
    .unwrap();
    let hooks = Hooks {
        usage: Arc::clone(&sink) as Arc<dyn UsageSink>,
        ..Hooks::default()
    };
    let gw = retort_gateway::start_with_hooks(gw_cfg, hooks, running.http_router())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let r = http
            .post(format!("http://{}/v1/chat/completions", gw.http_addr))
            .bearer_auth("sk-m")
            .header("user-agent", "codex_cli_rs/0.1")
            .json(&serde_json::json!({"model": "resilient", "messages": [{"role": "user", "content": "hello there"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    sink.flush().await;
    assert_eq!(
        sink.stats().delivered.load(Ordering::Relaxed),
        6,
        "3 failed attempts + 3 served"
    );

    let r = query::grouped(
        &ts.store,
        &pb::UsageQuery {
            group_by: vec!["model".into(), "user".into(), "route".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let fast = r
        .rows
        .iter()
        .find(|r| r.key[0] == "sim-fast")
        .expect("served by the fallback");
    let down = r
        .rows
        .iter()
        .find(|r| r.key[0] == "sim-down")
        .expect("failed attempts recorded");
    assert_eq!((down.requests, down.failed, down.cost_micros), (3, 3, 0));
    assert_eq!(
        (
            fast.requests,
            fast.failed,
            fast.key[1].as_str(),
            fast.key[2].as_str()
        ),
        (3, 0, "erin", "resilient")
    );
    assert!(fast.input_tokens > 0 && fast.output_tokens > 0);
    // $1 per million input, $2 per million output.
    assert_eq!(
        fast.cost_micros,
        (fast.input_tokens + 2 * fast.output_tokens) as i64
    );

    // The JSON API is served on the gateway's listener.
    let j: serde_json::Value = http
        .get(format!(
            "http://{}/api/usage/query?group_by=harness&since=1h",
            gw.http_addr
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j["rows"][0]["key"]["harness"], "codex", "{j}");
    let dash = http
        .get(format!("http://{}/dashboard", gw.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        dash.contains("Retort") && !dash.contains("https://"),
        "the page is self-contained"
    );

    gw.shutdown().await;
    sink.shutdown().await;
    running.shutdown().await;
    ts.cleanup().await;
    let _ = std::fs::remove_dir_all(spool);
}
