//! Session breakers and budgets end to end: a real breaker service (in memory or on the Redis of
//! `RETORT_TEST_REDIS_URL`, each test under its own key prefix), gateways with the breaker's spend
//! guard in front of the simulator, a test webhook receiver, and grpcurl through reflection.
#![allow(clippy::expect_used, clippy::unwrap_used)]
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use retort_breaker::{
    BreakerConfig, grpc,
    guard::{Guard, GuardConfig},
};
use retort_gateway::{Running, config::Config, hooks::Hooks};
use retort_proto::v1::{self as pb, breaker_client::BreakerClient};
use retort_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};

const KEY: &str = "sk-breaker-e2e";
const USER: &str = "e2e";

/// `sim-fast` at $1 in / $2 out per million tokens.
const PRICES: &str = r#"
[[prices]]
model = "sim-fast"
effective_from = "2025-01-01"
input = 1.0
output = 2.0
"#;

fn redis_url() -> String {
    std::env::var("RETORT_TEST_REDIS_URL").expect(
        "RETORT_TEST_REDIS_URL is not set: run the tests with ./scripts/test, which starts Redis",
    )
}

fn prefix(test: &str) -> String {
    format!("retort-test:{test}:{}:", uuid())
}

fn uuid() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// A `[breaker]` section (TOML body, without the header) → config.
fn spend(body: &str) -> BreakerConfig {
    let text = format!("grpc_addr = \"127.0.0.1:0\"\n{body}");
    let v: toml::Value = toml::from_str(&text).unwrap();
    BreakerConfig::load(v.try_into().unwrap(), None).unwrap()
}

async fn sim(latency_ms: u64) -> SimHandle {
    let text = format!("strict_models = false\n[default]\nlatency_ms = {latency_ms}\n");
    let cfg = SimConfig::from_toml(&text)
        .or_else(|_| SimConfig::from_toml("strict_models = false"))
        .unwrap();
    retort_sim::spawn(cfg).await.unwrap()
}

fn prices() -> retort_pricing::PriceTable {
    let t: toml::Table = toml::from_str(PRICES).unwrap();
    retort_pricing::PriceTable::new(t["prices"].clone().try_into().unwrap()).unwrap()
}

/// A gateway in front of `sim` whose spend guard talks to the breaker at `breaker`.
async fn gateway(sim: &SimHandle, breaker: &str, cfg: &BreakerConfig) -> (Running, Arc<Guard>) {
    let text = format!(
        r#"
        [server]
        http_addr = "127.0.0.1:0"
        grpc_addr = "127.0.0.1:0"
        [[users]]
        name = "{USER}"
        team = "qa"
        discipline = "backend"
        level = "senior"
        key = "{KEY}"
        [providers.oa]
        kind = "openai"
        base_url = "{base}/v1"
        [providers.an]
        kind = "anthropic"
        base_url = "{base}/v1"
        [models.sim-fast]
        provider = "oa"
        [models.sim-claude]
        provider = "an"
        model = "sim-fast"
        [circuit]
        failure_threshold = 100000
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
    let web = retort_breaker::web::router(breaker, Some(guard.clone())).unwrap();
    let gw = retort_gateway::start_with_hooks(Config::from_toml(&text).unwrap(), hooks, web)
        .await
        .unwrap();
    (gw, guard)
}

async fn chat(
    http: &reqwest::Client,
    gw: &Running,
    session: Option<&str>,
    max_tokens: u32,
) -> (u16, Value) {
    let mut r = http
        .post(format!("http://{}/v1/chat/completions", gw.http_addr))
        .bearer_auth(KEY)
        .json(&json!({"model": "sim-fast", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hello there"}]}));
    if let Some(s) = session {
        r = r.header("x-retort-session", s);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn anthropic(http: &reqwest::Client, gw: &Running, session: &str) -> (u16, Value) {
    let r = http
        .post(format!("http://{}/v1/messages", gw.http_addr))
        .header("x-api-key", KEY)
        .header("x-retort-session", session)
        .json(&json!({"model": "sim-claude", "max_tokens": 32, "messages": [{"role": "user", "content": "hello there"}]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn client(addr: std::net::SocketAddr) -> BreakerClient<tonic::transport::Channel> {
    BreakerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_budget_under_1000_concurrent_requests() {
    let hard_micros: i64 = 20_000; // $0.02
    let cfg = spend(&format!(
        "redis_url = \"{}\"\nkey_prefix = \"{}\"\nlease_usd = 0.002\nlease_wait_ms = 200\nflush_ms = 20\n\
         [[budgets]]\nscope = \"user\"\nname = \"{USER}\"\nwindow = \"day\"\nhard_usd = 0.02\n",
        redis_url(),
        prefix("budget")
    ));
    let sim = sim(20).await;
    let breaker = grpc::start(&cfg).await.unwrap();
    let endpoint = format!("http://{}", breaker.addr);
    let (a, ga) = gateway(&sim, &endpoint, &cfg).await;
    let (b, gb) = gateway(&sim, &endpoint, &cfg).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1000)
        .build()
        .unwrap();
    let gws = [&a, &b];
    let results = futures::future::join_all((0..1000).map(|i| {
        let http = http.clone();
        let gw = gws[i % 2];
        async move { chat(&http, gw, None, 64).await }
    }))
    .await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(ok > 0, "no request was admitted: {:?}", refused.first());
    for (s, body) in &refused {
        assert_eq!(*s, 402, "{body}");
        assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
    }
    ga.flush().await;
    gb.flush().await;
    let budgets = client(breaker.addr)
        .await
        .get_budgets(pb::GetBudgetsRequest {
            principal: format!("user:{USER}"),
        })
        .await
        .unwrap()
        .into_inner()
        .budgets;
    let used = budgets[0].used_micros;
    let overrun = ga
        .stats()
        .overrun_micros
        .load(std::sync::atomic::Ordering::Relaxed)
        + gb.stats()
            .overrun_micros
            .load(std::sync::atomic::Ordering::Relaxed);
    // Worst case of one request: ~4 input tokens (estimate) + 64 output at $1/$2 per million.
    let reservation = ga.reservation(&retort_gateway::hooks::SpendRequest {
        identity: &retort_gateway::types::Identity {
            user: USER.into(),
            team: "qa".into(),
            discipline: String::new(),
            level: String::new(),
        },
        session_id: None,
        route: "sim-fast",
        models: vec!["sim-fast"],
        input_tokens: 4,
        max_output_tokens: 64,
    });
    let issue_bound = 1000 * reservation.0;
    eprintln!(
        "budget ${:.6}: spent ${:.6} by {ok} admitted requests ({} refused); overspend {} µ$; bound: Σ overrun beyond reservations = {overrun} µ$ (the issue's bound, reservations of 1000 admitted requests: {issue_bound} µ$)",
        hard_micros as f64 / 1e6,
        used as f64 / 1e6,
        refused.len(),
        (used - hard_micros).max(0),
    );
    eprintln!(
        "{:?} {:?} first refusal: {:?}",
        ga.status(),
        gb.status(),
        refused.first()
    );
    assert!(
        used <= hard_micros + overrun,
        "spent {used} µ$ > budget {hard_micros} + overrun {overrun}"
    );
    assert!(used <= hard_micros + issue_bound);
    // A burst of 1,000 into a budget of ~150 worst-case reservations: requests that find no allowance
    // within lease_wait_ms are refused, so not all of it is spent — but the replicas do spend it.
    assert!(
        used * 10 >= hard_micros,
        "the replicas left the budget unspent: {used} of {hard_micros}"
    );
    a.shutdown().await;
    b.shutdown().await;
    breaker.shutdown().await;
}

/// A test webhook receiver: every POST body, with when it arrived.
async fn webhook() -> (String, Arc<Mutex<Vec<(Instant, Value)>>>) {
    let got: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((Instant::now(), v));
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, got)
}

async fn until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_session_is_asked_paused_confirmed_and_stopped() {
    let (hook, got) = webhook().await;
    let cfg = spend(&format!(
        "redis_url = \"{}\"\nkey_prefix = \"{}\"\n[policies.default]\nmode = \"pause\"\nmax_tokens = 200\nstep = 1\n[webhooks]\nteams.qa = \"{hook}\"\n",
        redis_url(),
        prefix("session")
    ));
    let sim = sim(0).await;
    let breaker = grpc::start(&cfg).await.unwrap();
    let endpoint = format!("http://{}", breaker.addr);
    let (gw, _guard) = gateway(&sim, &endpoint, &cfg).await;
    let mut watch = client(breaker.addr)
        .await
        .watch(pb::WatchRequest { user: USER.into() })
        .await
        .unwrap()
        .into_inner();
    let http = reqwest::Client::new();
    // Run the session until the gateway answers 402.
    // Paced like a real session: the pause reaches the gateway with the next settlement flush
    // (`flush_ms`, 200 ms), so an unpaced loop could finish any number of requests before it.
    let started = Instant::now();
    let mut last_ok = Instant::now();
    let mut n = 0;
    let body = loop {
        let (s, body) = chat(&http, &gw, Some("long-1"), 32).await;
        n += 1;
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the session never paused ({n} requests)"
        );
        if s == 402 {
            break body;
        }
        assert_eq!(s, 200, "{body}");
        last_ok = Instant::now();
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let msg = body["error"]["message"].as_str().unwrap();
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert!(
        msg.contains("long-1")
            && msg.contains(USER)
            && msg.contains("retort breaker confirm long-1")
            && msg.contains("/breaker/sessions/long-1"),
        "{msg}"
    );
    // The webhook asked within a second of the crossing request.
    until("the webhook", async || !got.lock().unwrap().is_empty()).await;
    let (at, question) = got.lock().unwrap()[0].clone();
    assert!(
        at.duration_since(last_ok) < Duration::from_secs(1),
        "webhook after {:?}",
        at.duration_since(last_ok)
    );
    let text = question["text"].as_str().unwrap();
    assert!(
        text.contains("long-1") && text.contains("/breaker/sessions/long-1"),
        "{text}"
    );
    // Watch delivered it.
    let alert = tokio::time::timeout(Duration::from_secs(1), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            alert.kind.as_str(),
            alert.session_id.as_str(),
            alert.state.as_str()
        ),
        ("session", "long-1", "paused")
    );
    // Paused: 402 in the Anthropic shape too.
    let (s, body) = anthropic(&http, &gw, "long-1").await;
    assert_eq!(s, 402, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "billing_error");
    // Another session of the same user is not affected.
    assert_eq!(chat(&http, &gw, Some("other"), 32).await.0, 200);
    // The confirm page shows it.
    let page = http
        .get(format!(
            "http://{}/breaker/sessions/long-1?user={USER}",
            gw.http_addr
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("paused") && page.contains("Confirm"),
        "{page}"
    );
    // Confirm (from the page's button) resumes it.
    let r = http
        .post(format!(
            "http://{}/breaker/sessions/long-1/confirm?user={USER}",
            gw.http_addr
        ))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success() || r.status().is_redirection(),
        "{}",
        r.status()
    );
    until("the session to resume", async || {
        chat(&http, &gw, Some("long-1"), 32).await.0 == 200
    })
    .await;
    let s = client(breaker.addr)
        .await
        .get_session(pb::GetSessionRequest {
            session_id: "long-1".into(),
            user: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.state, "confirmed");
    // Raised by steps of 200 until above the usage (which ran on a little while the pause propagated).
    let th = s.thresholds.unwrap().tokens;
    assert!(
        th > s.tokens && th % 200 == 0 && th >= 400,
        "threshold {th}, tokens {}",
        s.tokens
    );
    // Stop ends it for good.
    client(breaker.addr)
        .await
        .stop(pb::SessionAction {
            session_id: "long-1".into(),
            user: USER.into(),
            by: "test".into(),
        })
        .await
        .unwrap();
    until("the session to stop", async || {
        chat(&http, &gw, Some("long-1"), 32).await.0 == 402
    })
    .await;
    let (_, body) = chat(&http, &gw, Some("long-1"), 32).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stopped"),
        "{body}"
    );
    let s = client(breaker.addr)
        .await
        .get_session(pb::GetSessionRequest {
            session_id: "long-1".into(),
            user: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let path: Vec<_> = s.history.iter().map(|t| t.to.as_str()).collect();
    assert_eq!(path, ["ok", "paused", "confirmed", "stopped"]);
    assert_eq!(s.history[3].by, "test");
    assert!(s.history[2].by.starts_with("web"), "{:?}", s.history[2]);
    let e = client(breaker.addr)
        .await
        .confirm(pb::SessionAction {
            session_id: "long-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    gw.shutdown().await;
    breaker.shutdown().await;
}

fn usage(session: &str, tokens: u64) -> pb::UsageRecord {
    pb::UsageRecord {
        user: USER.into(),
        team: "qa".into(),
        session_id: session.into(),
        model: "sim-fast".into(),
        tier: "small".into(),
        tokens,
        cost_micros: 100,
        time_unix_ms: retort_breaker::now_ms(),
        requests: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_breaker_loses_nothing_with_redis() {
    let cfg = spend(&format!(
        "redis_url = \"{}\"\nkey_prefix = \"{}\"\n[policies.default]\nmode = \"pause\"\nmax_tokens = 100\n\
         [[budgets]]\nscope = \"team\"\nname = \"qa\"\nwindow = \"week\"\nrolling = true\nhard_usd = 1\n",
        redis_url(),
        prefix("restart")
    ));
    let first = grpc::start(&cfg).await.unwrap();
    let mut c = client(first.addr).await;
    c.settle(pb::ReportRequest {
        gateway_id: String::new(),
        batch_id: String::new(),
        usage: vec![usage("r1", 150), usage("r2", 10)],
    })
    .await
    .unwrap();
    let grant = c
        .lease(pb::LeaseRequest {
            gateway_id: String::new(),
            asks: vec![pb::LeaseAsk {
                principal: "team:qa".into(),
                want_micros: 5_000,
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grant.grants[0].micros, 5_000);
    assert_eq!(grant.blocked.len(), 1);
    first.shutdown().await;
    let second = grpc::start(&cfg).await.unwrap();
    let mut c = client(second.addr).await;
    let s = c
        .get_session(pb::GetSessionRequest {
            session_id: "r1".into(),
            user: USER.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.state.as_str(), s.tokens, s.requests), ("paused", 150, 1));
    let r2 = c
        .get_session(pb::GetSessionRequest {
            session_id: "r2".into(),
            user: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r2.state, "ok");
    let blocked = c
        .report(pb::ReportRequest::default())
        .await
        .unwrap()
        .into_inner()
        .blocked;
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    let b = c
        .get_budgets(pb::GetBudgetsRequest {
            principal: "team:qa".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .budgets;
    assert_eq!((b[0].used_micros, b[0].outstanding_micros), (200, 5_000));
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_confirms_and_stops_through_reflection() {
    let cfg = spend("[policies.default]\nmode = \"pause\"\nmax_tokens = 10\n");
    let breaker = grpc::start(&cfg).await.unwrap();
    let addr = breaker.addr.to_string();
    client(breaker.addr)
        .await
        .settle(pb::ReportRequest {
            gateway_id: String::new(),
            batch_id: String::new(),
            usage: vec![usage("g1", 50)],
        })
        .await
        .unwrap();
    let list = retort_tests::run_grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(
        list.success()
            && list.stdout.contains("retort.v1.Breaker")
            && list.stdout.contains("grpc.health.v1.Health"),
        "{}",
        list.report()
    );
    let run = retort_tests::run_grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"session_id":"g1","by":"ops via grpcurl"}"#,
        &addr,
        "retort.v1.Breaker/Confirm",
    ])
    .await;
    assert!(run.success(), "{}", run.report());
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["state"], "confirmed", "{v}");
    let run = retort_tests::run_grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"session_id":"g1"}"#,
        &addr,
        "retort.v1.Breaker/Stop",
    ])
    .await;
    assert!(run.success(), "{}", run.report());
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["state"], "stopped", "{v}");
    let run = retort_tests::run_grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"session_id":"nope"}"#,
        &addr,
        "retort.v1.Breaker/Confirm",
    ])
    .await;
    assert!(
        !run.success() && run.stderr.contains("NotFound"),
        "{}",
        run.report()
    );
    let health =
        retort_tests::run_grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]).await;
    assert!(health.stdout.contains("SERVING"), "{}", health.report());
    breaker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let cfg = spend("[policies.default]\nmode = \"pause\"\nmax_tokens = 1000\n");
    let breaker = grpc::start(&cfg).await.unwrap();
    let mut c = client(breaker.addr).await;
    for (payload, want) in [
        ("[policies.default]\nmax_tokens = -1", "non-negative"),
        ("[policies.default]\nmax_tokens = 1e15", "absurd"),
        ("[policies.default]\nmode = \"maybe\"", "unknown mode"),
        (
            "[policies.default]\nmax_tokens = 10\n[[budgets]]\nscope = \"user\"\nname = \"x\"\nwindow = \"day\"\nhard_usd = -3",
            "budgets[0].hard_usd",
        ),
        ("[[policies]]\nwhat = 1", "malformed"),
        ("{\"json\": true}", "malformed"),
    ] {
        let e = c
            .set_policies(pb::SetPoliciesRequest {
                toml: payload.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{payload}");
        assert!(e.message().contains(want), "{payload}: {}", e.message());
    }
    // The previous policy stays in force: a new session gets its 1000-token threshold.
    c.settle(pb::ReportRequest {
        gateway_id: String::new(),
        batch_id: String::new(),
        usage: vec![usage("b1", 1)],
    })
    .await
    .unwrap();
    let s = c
        .get_session(pb::GetSessionRequest {
            session_id: "b1".into(),
            user: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.thresholds.unwrap().tokens, 1000);
    for id in ["does-not-exist", "b1x"] {
        let e = c
            .get_session(pb::GetSessionRequest {
                session_id: id.into(),
                user: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        let e = c
            .stop(pb::SessionAction {
                session_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    }
    let e = c.confirm(pb::SessionAction::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let ok = c
        .set_policies(pb::SetPoliciesRequest {
            toml: "[policies.default]\nmax_tokens = 5".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.policies, 1);
    breaker.shutdown().await;
}

/// An address nothing listens on (yet).
async fn free_addr() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn readyz(http: &reqwest::Client, gw: &Running) -> (u16, String) {
    let r = http
        .get(format!("http://{}/readyz", gw.http_addr))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn grpc_health(gw: &Running) -> String {
    let addr = gw.grpc_addr.to_string();
    let run =
        retort_tests::run_grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]).await;
    assert!(run.success(), "{}", run.report());
    run.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_breaker_shows_in_readyz_and_grpc_health_by_policy() {
    let sim = sim(0).await;
    let http = reqwest::Client::new();
    let dead = free_addr().await;
    let endpoint = format!("http://{dead}");

    // Fail closed: not ready, NOT_SERVING, requests refused.
    let closed = spend("on_unreachable = \"fail_closed\"\nflush_ms = 20\n");
    let (gw, _guard) = gateway(&sim, &endpoint, &closed).await;
    until("/readyz to fail closed", async || {
        readyz(&http, &gw).await.0 == 503
    })
    .await;
    let (_, body) = readyz(&http, &gw).await;
    assert!(
        body.contains("failing closed") && body.contains(&endpoint),
        "{body}"
    );
    until("gRPC health to say NOT_SERVING", async || {
        grpc_health(&gw).await.contains("NOT_SERVING")
    })
    .await;
    let (s, body) = chat(&http, &gw, Some("h1"), 8).await;
    assert_eq!(s, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fail closed"),
        "{body}"
    );
    gw.shutdown().await;

    // Fail open: ready with a warning, SERVING, requests served.
    let open = spend("on_unreachable = \"fail_open\"\nflush_ms = 20\n");
    let (gw, guard) = gateway(&sim, &endpoint, &open).await;
    until("/readyz to warn", async || {
        readyz(&http, &gw).await.1.contains("warning")
    })
    .await;
    let (code, body) = readyz(&http, &gw).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("ready") && body.contains("failing open") && body.contains(&endpoint),
        "{body}"
    );
    assert!(
        !grpc_health(&gw).await.contains("NOT_SERVING"),
        "fail open must stay SERVING"
    );
    assert_eq!(chat(&http, &gw, Some("h2"), 8).await.0, 200);
    assert!(guard.status().failed_open >= 1);

    // The breaker comes up where the guard looks: the warning goes away.
    let cfg = spend("");
    let breaker = grpc::serve(
        dead,
        retort_breaker::core::Breaker::new(
            retort_breaker::store::Store::memory(),
            cfg.policies.clone(),
            "http://127.0.0.1".into(),
        )
        .await
        .unwrap(),
    )
    .await
    .unwrap();
    until("/readyz to recover", async || {
        readyz(&http, &gw).await == (200, "ready".into())
    })
    .await;
    assert!(grpc_health(&gw).await.contains("SERVING"));
    gw.shutdown().await;
    breaker.shutdown().await;
}
