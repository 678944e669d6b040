//! The breaker's shared state on the real Redis of `RETORT_TEST_REDIS_URL` (each test under its
//! own key prefix): leases that lapse, settlement batches applied once, a pause seen by a second
//! replica at once, model tier thresholds, and soft budget limits that ask like a session does.
#![allow(clippy::expect_used, clippy::unwrap_used)]
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use retort_breaker::{
    core::Breaker,
    now_ms,
    policy::Policies,
    session::{SessionState, Tier},
    store::Store,
};
use retort_proto::v1 as pb;
use serde_json::Value;

fn redis_url() -> String {
    std::env::var("RETORT_TEST_REDIS_URL").expect(
        "RETORT_TEST_REDIS_URL is not set: run the tests with ./scripts/test, which starts Redis",
    )
}

fn prefix(test: &str) -> String {
    format!("retort-test:{test}:{}:", uuid::Uuid::new_v4())
}

async fn breaker(prefix: &str, policy: &str) -> Arc<Breaker> {
    let store = Store::redis(&redis_url(), prefix).await.unwrap();
    Breaker::new(
        store,
        Policies::from_toml(policy).unwrap(),
        "http://127.0.0.1:8080".into(),
    )
    .await
    .unwrap()
}

fn usage(session: &str, tokens: u64, cost: i64, tier: &str) -> pb::UsageRecord {
    pb::UsageRecord {
        user: "ann".into(),
        team: "qa".into(),
        session_id: session.into(),
        model: "m".into(),
        tier: tier.into(),
        tokens,
        cost_micros: cost,
        time_unix_ms: now_ms(),
        requests: 1,
    }
}

fn ask(want: i64) -> pb::LeaseAsk {
    pb::LeaseAsk {
        principal: "user:ann".into(),
        want_micros: want,
        ..Default::default()
    }
}

const BUDGET: &str =
    "[[budgets]]\nscope = \"user\"\nname = \"ann\"\nwindow = \"day\"\nhard_usd = 1.0\n";

#[tokio::test]
async fn a_dead_gateways_lease_lapses_and_a_live_one_keeps_it_by_renewing() {
    let b = breaker(&prefix("lapse"), BUDGET).await;
    b.set_lease_ttl_ms(1_000);
    // Gateway A takes most of the budget; B gets the rest.
    assert_eq!(b.lease(&ask(600_000), "A").await.unwrap().micros, 600_000);
    assert_eq!(b.lease(&ask(600_000), "B").await.unwrap().micros, 400_000);
    // A renews (asks nothing) while B dies; after B's lease lapsed, A can have B's part.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1_600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.lease(&ask(0), "A").await.unwrap();
    }
    let out = b.budgets("user:ann").await.unwrap()[0].outstanding_micros;
    assert_eq!(out, 600_000, "B's lapsed lease still counts");
    assert_eq!(b.lease(&ask(1_000_000), "A").await.unwrap().micros, 400_000);
    // A renewed all along: a newcomer gets nothing.
    assert_eq!(b.lease(&ask(1), "C").await.unwrap().micros, 0);
    // Settling renews too, and moves spend from A's lease to used.
    b.record(vec![usage("", 10, 250_000, "mid")], true, "A", "a-1")
        .await
        .unwrap();
    let st = &b.budgets("user:ann").await.unwrap()[0];
    assert_eq!((st.used_micros, st.outstanding_micros), (250_000, 750_000));
}

#[tokio::test]
async fn a_retried_settlement_batch_counts_once() {
    let b = breaker(
        &prefix("batch"),
        &format!("[policies.default]\nmax_requests = 1000\n{BUDGET}"),
    )
    .await;
    b.lease(&ask(500_000), "gw").await.unwrap();
    let batch = vec![usage("s1", 100, 1_000, "mid"), usage("s1", 50, 500, "mid")];
    for _ in 0..3 {
        b.record(batch.clone(), true, "gw", "gw-7").await.unwrap();
    }
    let st = &b.budgets("user:ann").await.unwrap()[0];
    assert_eq!(
        (st.used_micros, st.used_tokens, st.outstanding_micros),
        (1_500, 150, 498_500)
    );
    let (s, _) = b.find("s1", "ann").await.unwrap();
    assert_eq!((s.requests, s.tokens), (2, 150));
    // Another batch id is another batch; the same id from another gateway too.
    b.record(batch.clone(), true, "gw", "gw-8").await.unwrap();
    b.record(batch, true, "other", "gw-7").await.unwrap();
    assert_eq!(b.budgets("user:ann").await.unwrap()[0].used_micros, 4_500);
    // A record summing several requests counts them all.
    let mut many = usage("s1", 10, 10, "mid");
    many.requests = 40;
    b.record(vec![many], true, "gw", "gw-9").await.unwrap();
    assert_eq!(b.find("s1", "ann").await.unwrap().0.requests, 46);
}

#[tokio::test]
async fn a_second_replica_sees_a_pause_and_a_confirm_at_once() {
    let p = prefix("replicas");
    let policy = "[policies.default]\nmode = \"pause\"\nmax_tokens = 100\n";
    let one = breaker(&p, policy).await;
    let two = breaker(&p, policy).await;
    one.record(vec![usage("r1", 150, 1, "mid")], false, "gw", "")
        .await
        .unwrap();
    let seen = two.blocked().await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].session_id.as_str(), seen[0].state.as_str()),
        ("r1", "paused")
    );
    assert!(
        seen[0].message.contains("retort breaker confirm r1"),
        "{}",
        seen[0].message
    );
    two.confirm("r1", "ann", "test").await.unwrap();
    assert!(one.blocked().await.unwrap().is_empty());
    two.stop("r1", "ann", "test").await.unwrap();
    let seen = one.blocked().await.unwrap();
    assert_eq!(seen[0].state, "stopped");
}

#[tokio::test]
async fn a_session_asks_when_it_moves_above_its_model_tier() {
    let b = breaker(
        &prefix("tier"),
        "[policies.default]\nmode = \"pause\"\nmax_tier = \"mid\"\n",
    )
    .await;
    b.record(
        vec![usage("t1", 10, 1, "small"), usage("t1", 10, 1, "mid")],
        false,
        "gw",
        "",
    )
    .await
    .unwrap();
    assert_eq!(b.find("t1", "ann").await.unwrap().0.state, SessionState::Ok);
    let blocked = b
        .record(vec![usage("t1", 10, 1, "frontier")], false, "gw", "")
        .await
        .unwrap();
    assert_eq!(blocked.len(), 1);
    let (s, _) = b.find("t1", "ann").await.unwrap();
    assert_eq!(s.state, SessionState::Paused);
    assert!(
        s.history
            .last()
            .unwrap()
            .reason
            .contains("frontier above mid"),
        "{:?}",
        s.history
    );
    // Confirming accepts the tier reached: more frontier use goes on without asking again.
    let s = b.confirm("t1", "ann", "test").await.unwrap();
    assert_eq!(s.limits.tier, Some(Tier::Frontier));
    assert_eq!(b.to_pb(&s).thresholds.unwrap().tier, "frontier");
    b.record(vec![usage("t1", 10, 1, "frontier")], false, "gw", "")
        .await
        .unwrap();
    assert_eq!(
        b.find("t1", "ann").await.unwrap().0.state,
        SessionState::Confirmed
    );
    // An unknown tier is refused with the known ones named; the old policy stays.
    let e = b
        .set_policies("[policies.default]\nmax_tier = \"gpt-5\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("small, mid, frontier"), "{e}");
    assert_eq!(b.policies().default.limits.tier, Some(Tier::Mid));
}

/// A test webhook receiver: every POST body.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, got)
}

#[tokio::test]
async fn a_soft_budget_limit_asks_on_the_webhook_and_watch_once_for_all_replicas() {
    let (hook, got) = webhook().await;
    let p = prefix("soft");
    let policy = format!(
        "[[budgets]]\nscope = \"user\"\nname = \"ann\"\nwindow = \"day\"\nsoft_usd = 0.001\nhard_usd = 1\n[webhooks]\nteams.qa = \"{hook}\"\n"
    );
    let one = breaker(&p, &policy).await;
    let two = breaker(&p, &policy).await;
    let mut watch = one.subscribe();
    one.record(vec![usage("", 10, 1_500, "mid")], true, "gw", "s-1")
        .await
        .unwrap();
    let alert = watch.try_recv().unwrap();
    assert_eq!(
        (
            alert.kind.as_str(),
            alert.state.as_str(),
            alert.user.as_str(),
            alert.team.as_str()
        ),
        ("budget", "soft", "ann", "qa")
    );
    assert!(
        alert.text.contains("did you mean to spend this?"),
        "{}",
        alert.text
    );
    let t0 = Instant::now();
    while got.lock().unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no webhook");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = got.lock().unwrap()[0]["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("user:ann") && text.contains("soft limit"),
        "{text}"
    );
    // The other replica, seeing more spend in the same window, does not ask again.
    let mut watch2 = two.subscribe();
    two.record(vec![usage("", 10, 1_500, "mid")], true, "gw", "s-2")
        .await
        .unwrap();
    assert!(watch2.try_recv().is_err(), "asked twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_stops_spending_a_lease_it_could_not_renew_and_leases_again() {
    use retort_breaker::guard::{Guard, GuardConfig};
    use retort_hooks::{BreakerGuard, GuardHealth, Identity, SpendRequest, Usage};
    let b = breaker(&prefix("guard-lapse"), BUDGET).await;
    b.set_lease_ttl_ms(1_000);
    let first = retort_breaker::grpc::serve("127.0.0.1:0".parse().unwrap(), b.clone())
        .await
        .unwrap();
    let addr = first.addr;
    let prices: toml::Table = toml::from_str(
        "[[prices]]\nmodel = \"m\"\neffective_from = \"2025-01-01\"\ninput = 1.0\noutput = 2.0\n",
    )
    .unwrap();
    let prices =
        retort_pricing::PriceTable::new(prices["prices"].clone().try_into().unwrap()).unwrap();
    let guard = Guard::start(
        GuardConfig {
            endpoint: format!("http://{addr}"),
            on_unreachable: retort_breaker::config::Unreachable::FailClosed,
            lease_micros: 100_000,
            lease_tokens: 1_000_000,
            lease_wait: Duration::from_millis(2_000),
            flush: Duration::from_millis(50),
            idle_return: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(1),
        },
        prices,
    )
    .unwrap();
    let id = Identity {
        user: "ann".into(),
        team: "qa".into(),
        discipline: String::new(),
        level: String::new(),
    };
    let req = SpendRequest {
        identity: &id,
        session_id: Some("g1"),
        route: "m",
        models: vec!["m"],
        input_tokens: 10,
        max_output_tokens: 10,
    };
    let used = Usage {
        input: 10,
        output: 5,
        ..Usage::default()
    };
    guard.admit(&req).unwrap().settle("p", "m", &used);
    guard.flush().await;
    // Leased 100,000 µ$; settled 20 of it.
    assert_eq!(
        b.budgets("user:ann").await.unwrap()[0].outstanding_micros,
        99_980
    );
    // The breaker goes away for longer than the lease's TTL: the guard voids its lease.
    first.shutdown().await;
    let t0 = Instant::now();
    while guard
        .stats()
        .lapsed
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(guard.health(), GuardHealth::FailingClosed(_)));
    assert!(guard.admit(&req).is_err());
    // The breaker is back (same Redis state): the guard leases afresh and admits again.
    let second = retort_breaker::grpc::serve(addr, b.clone()).await.unwrap();
    let t0 = Instant::now();
    while guard.health() != GuardHealth::Ok {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the guard never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    guard.admit(&req).unwrap().settle("p", "m", &used);
    guard.flush().await;
    let st = &b.budgets("user:ann").await.unwrap()[0];
    // Two requests spent 20 µ$ each; only the new lease is outstanding (the old one lapsed).
    assert_eq!(st.used_micros, 40);
    assert!(st.outstanding_micros <= 100_000, "{st:?}");
    second.shutdown().await;
}
