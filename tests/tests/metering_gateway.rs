//! Metering end to end through the gateway: the simulator behind a gateway whose usage hook is
//! metering's `MeteringSink`, and metering on Postgres (at `RETORT_TEST_DATABASE_URL`, in a schema
//! of its own). Every attempt the gateway makes — failed ones too — arrives priced, and metering's
//! JSON API and dashboard are served on the gateway's HTTP listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
};

use retort_hooks::{Hooks, UsageSink};
use retort_metering::{MeteringConfig, Store, client::MeteringSink, query, store::StoreOptions};
use retort_proto::v1 as pb;

const DEFAULT_PG: &str = "postgres://postgres:postgres@127.0.0.1:5432/test";

/// Metering's store on Postgres, in a schema of its own (dropped by [`PgStore::cleanup`]).
struct PgStore {
    store: Store,
    schema: String,
}

impl PgStore {
    async fn open() -> PgStore {
        let url = std::env::var("RETORT_TEST_DATABASE_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_PG.into());
        let schema = format!("metering_gw_{}", uuid::Uuid::new_v4().simple());
        let store = Store::connect(&StoreOptions {
            schema: Some(schema.clone()),
            max_connections: 4,
            ..StoreOptions::new(url)
        })
        .await
        .expect("postgres store (RETORT_TEST_DATABASE_URL; ./scripts/test starts PostgreSQL)");
        PgStore { store, schema }
    }

    async fn cleanup(self) {
        self.store
            .drop_schema(&self.schema)
            .await
            .expect("drop schema");
        self.store.close().await;
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "retort-metering-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn gateway_traffic_arrives_priced_through_the_metering_sink() {
    let ts = PgStore::open().await;
    let spool = temp_dir("gw-spool");
    let mut cfg = MeteringConfig {
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    cfg.client.spool_dir = Some(spool.clone());
    cfg.client.batch_interval_ms = 20;
    cfg.client.retry_ms = 100;
    cfg.client.send_timeout_ms = 500;
    cfg.client.queue_size = 50;
    cfg.client.batch_size = 20;
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
        [circuit]
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
