//! A harness-sized request and the spend guard (#19): Claude Code asks for 32,000 `max_tokens` on
//! ~28k tokens of input, a worst case (~$0.56 at $3/$15 per million) larger than one lease
//! (`lease_usd`, $0.50 by default). With room in the budget it is admitted on the default
//! configuration; without room it is refused; and spend never passes the hard budget by more than
//! the admitted requests' overrun beyond their reservations.
#![allow(clippy::expect_used, clippy::unwrap_used)]
use std::sync::Arc;

use retort_breaker::{
    BreakerConfig, grpc,
    guard::{Guard, GuardConfig},
};
use retort_gateway::{Running, config::Config, hooks::Hooks};
use retort_proto::v1 as pb;
use retort_sim::SimHandle;
use serde_json::{Value, json};

const KEY: &str = "sk-harness-budget";
const USER: &str = "coder";

/// Sonnet-like prices: $3 in, $15 out per million tokens.
const PRICES: &str = r#"
[[prices]]
model = "sim-claude"
effective_from = "2025-01-01"
input = 3.0
output = 15.0
"#;

fn breaker_config(hard_usd: f64) -> BreakerConfig {
    // Nothing but the budget: lease size, waits and flushes are the defaults.
    let text = format!(
        "grpc_addr = \"127.0.0.1:0\"\n[[budgets]]\nscope = \"team\"\nname = \"ml\"\nwindow = \"day\"\nhard_usd = {hard_usd}\n"
    );
    let v: toml::Value = toml::from_str(&text).unwrap();
    BreakerConfig::load(v.try_into().unwrap(), None).unwrap()
}

fn prices() -> retort_pricing::PriceTable {
    let t: toml::Table = toml::from_str(PRICES).unwrap();
    retort_pricing::PriceTable::new(t["prices"].clone().try_into().unwrap()).unwrap()
}

async fn sim() -> SimHandle {
    retort_sim::spawn(retort_sim::SimConfig::from_toml("strict_models = false").unwrap())
        .await
        .unwrap()
}

async fn gateway(sim: &SimHandle, breaker: &str, cfg: &BreakerConfig) -> (Running, Arc<Guard>) {
    let text = format!(
        r#"
        [server]
        http_addr = "127.0.0.1:0"
        grpc_addr = "127.0.0.1:0"
        [[users]]
        name = "{USER}"
        team = "ml"
        key = "{KEY}"
        [providers.an]
        kind = "anthropic"
        base_url = "{base}/v1"
        [models.sim-claude]
        provider = "an"
        context_window = 200000
        [aliases.frontier]
        targets = ["sim-claude"]
        "#,
        base = sim.base_url()
    );
    let mut gc = GuardConfig::from_breaker(cfg);
    gc.endpoint = breaker.to_owned();
    let guard = Arc::new(Guard::start(gc, prices()).unwrap());
    let hooks = Hooks {
        breaker: guard.clone(),
        ..Hooks::default()
    };
    let gw = retort_gateway::start_with_hooks(
        Config::from_toml(&text).unwrap(),
        hooks,
        axum::Router::new(),
    )
    .await
    .unwrap();
    (gw, guard)
}

/// A Claude Code-sized request: ~28k tokens of input (about four bytes a token), 32,000 max_tokens.
fn claude_code_sized() -> Value {
    let words = "the quick brown fox jumps over a lazy dog ".repeat(2_700);
    json!({
        "model": "frontier",
        "max_tokens": 32000,
        "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."}],
        "messages": [{"role": "user", "content": words}],
    })
}

async fn send(http: &reqwest::Client, gw: &Running, body: &Value) -> (u16, Value) {
    let r = http
        .post(format!("http://{}/v1/messages", gw.http_addr))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_a_lease_is_admitted_when_the_budget_has_room() {
    let cfg = breaker_config(1000.0);
    assert_eq!(cfg.lease_micros, 500_000, "the default lease is $0.50");
    let sim = sim().await;
    let breaker = grpc::start(&cfg).await.unwrap();
    let (gw, guard) = gateway(&sim, &format!("http://{}", breaker.addr), &cfg).await;
    let http = reqwest::Client::new();
    let body = claude_code_sized();
    for turn in 0..3 {
        let (status, resp) = send(&http, &gw, &body).await;
        assert_eq!(status, 200, "turn {turn}: {resp}");
        assert_eq!(resp["type"], "message", "{resp}");
    }
    // The reservation really was larger than one lease.
    let estimate = body.to_string().len() as u64 / 4;
    let (reserved, _) = guard.reservation(&retort_gateway::hooks::SpendRequest {
        identity: &retort_gateway::types::Identity {
            user: USER.into(),
            team: "ml".into(),
            discipline: String::new(),
            level: String::new(),
        },
        session_id: None,
        route: "frontier",
        models: vec!["sim-claude"],
        input_tokens: estimate,
        max_output_tokens: 32_000,
    });
    assert!(reserved > cfg.lease_micros, "reservation {reserved} µ$");
    gw.shutdown().await;
    breaker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_a_lease_keeps_the_bound() {
    let hard_micros = 1_800_000;
    let cfg = breaker_config(1.8);
    let sim = sim().await;
    let breaker = grpc::start(&cfg).await.unwrap();
    let (gw, guard) = gateway(&sim, &format!("http://{}", breaker.addr), &cfg).await;
    let http = reqwest::Client::new();
    // A worst case larger than the whole budget ($2.33 > $1.80) is refused.
    let mut too_big = claude_code_sized();
    too_big["max_tokens"] = json!(150_000);
    let (status, b) = send(&http, &gw, &too_big).await;
    assert_eq!(status, 402, "{b}");
    assert_eq!(b["error"]["type"], "billing_error", "{b}");
    // Eight Claude Code-sized requests at once: each is reserved at $0.56 against a $1.80 budget.
    let body = claude_code_sized();
    let results = futures::future::join_all((0..8).map(|_| send(&http, &gw, &body))).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    for (s, b) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*s, 402, "{b}");
        assert_eq!(b["error"]["type"], "billing_error", "{b}");
    }
    assert!(ok >= 1, "no request was admitted: {results:?}");
    guard.flush().await;
    let mut client = pb::breaker_client::BreakerClient::connect(format!("http://{}", breaker.addr))
        .await
        .unwrap();
    let used = client
        .get_budgets(pb::GetBudgetsRequest {
            principal: "team:ml".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .budgets[0]
        .used_micros;
    let overrun = guard
        .stats()
        .overrun_micros
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "budget $1.80: {ok} of 8 at once admitted, spent ${:.4}, overrun beyond reservations {overrun} µ$",
        used as f64 / 1e6
    );
    assert!(used > 0, "the admitted requests were settled");
    assert!(
        used <= hard_micros + overrun,
        "spent {used} µ$ > budget {hard_micros} + overrun {overrun}"
    );
    gw.shutdown().await;
    breaker.shutdown().await;
}
