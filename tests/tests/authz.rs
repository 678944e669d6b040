//! The authorisation table (README, "Authorisation") over real sockets: metering, breaker and
//! distill each served with a key ring of five identities — alice and bob (users of teams ml and
//! web), carol (team admin of ml), root (admin) and svc (a service identity) — and every RPC and
//! route called with no key and with each of them. Each attack of issue #18 is a case here:
//! forged Ingest, price poisoning (1e300, 2025-02-31, empty model), forged Settle, a stop in
//! someone else's name, anonymous Submit, /etc/shadow and `..` paths, route hijack via Deploy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use retort_hooks::{Identity, Principal, Role};
use retort_proto::v1::{
    self as pb, breaker_client::BreakerClient, distill_client::DistillClient,
    metering_client::MeteringClient,
};
use retort_server::auth::{KeyRing, WithKey};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};

type Keyed = InterceptedService<Channel, WithKey>;

const WHO: [(&str, &str, &str, Role); 5] = [
    ("sk-alice", "alice", "ml", Role::User),
    ("sk-bob", "bob", "web", Role::User),
    ("sk-carol", "carol", "ml", Role::TeamAdmin),
    ("sk-root", "root", "ops", Role::Admin),
    ("sk-svc", "gateway", "", Role::Service),
];

fn ring() -> Arc<KeyRing> {
    let mut r = KeyRing::new();
    for (key, user, team, role) in WHO {
        r.insert(
            key,
            Principal {
                identity: Identity {
                    user: user.into(),
                    team: team.into(),
                    ..Identity::default()
                },
                role,
            },
        )
        .unwrap();
    }
    Arc::new(r)
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "retort-authz-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn channel(addr: SocketAddr, key: Option<&str>) -> Keyed {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    InterceptedService::new(ch, WithKey::new(key))
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// A codec that sends and receives raw bytes: a malformed or oversized message on the wire.
#[derive(Clone, Copy, Default)]
struct Raw;
struct RawEnc;
struct RawDec;

impl tonic::codec::Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let v = bytes::Buf::chunk(src).to_vec();
        bytes::Buf::advance(src, v.len());
        Ok(Some(v))
    }
}

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}

/// Sends `body` as the message of `path` with `key`.
async fn raw_call(addr: SocketAddr, key: Option<&str>, path: &'static str, body: Vec<u8>) -> Code {
    let mut g = tonic::client::Grpc::new(channel(addr, key).await);
    g.ready().await.unwrap();
    let r: Result<tonic::Response<Vec<u8>>, tonic::Status> = g
        .unary(
            tonic::Request::new(body),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            Raw,
        )
        .await;
    code(r)
}

fn ev(id: &str, user: &str, team: &str) -> pb::UsageEvent {
    pb::UsageEvent {
        event_id: id.into(),
        time_ms: retort_time::now_ms(),
        request_id: format!("req-{id}"),
        user: user.into(),
        team: team.into(),
        session_id: format!("sess-{user}"),
        harness: "sdk".into(),
        route: "m".into(),
        provider: "p".into(),
        model: "m".into(),
        outcome: "ok".into(),
        input_tokens: 1000,
        output_tokens: 1000,
        latency_ms: 10,
        ..Default::default()
    }
}

fn price(model: &str, date: &str, input: f64) -> pb::MeteringPrice {
    pb::MeteringPrice {
        model: model.into(),
        effective_from: date.into(),
        input,
        output: 1.0,
        ..Default::default()
    }
}

struct Metering {
    running: retort_metering::Running,
    http: SocketAddr,
}

async fn metering() -> Metering {
    let dir = temp_dir("metering");
    let cfg = retort_metering::MeteringConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir,
        keys: Some(ring()),
        ..Default::default()
    };
    let prices = vec![retort_pricing::Price {
        model: "m".into(),
        effective_from: "2025-01-01".into(),
        input: 1.0,
        output: 1.0,
        reasoning: None,
        cache_read: None,
        cache_write: None,
        tier: None,
    }];
    let running = retort_metering::start(&cfg, prices).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let router = running.http_router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Metering { running, http }
}

async fn ingest(m: &Metering, key: Option<&str>, events: Vec<pb::UsageEvent>) -> Code {
    let mut c = MeteringClient::new(channel(m.running.grpc_addr, key).await);
    code(
        c.ingest(futures::stream::iter(vec![pb::UsageBatch { events }]))
            .await,
    )
}

/// Users seen by a grouped query (by user) as `key`, or the refusal.
async fn users_seen(m: &Metering, key: &str, filter: pb::UsageFilter) -> Result<Vec<String>, Code> {
    let mut c = MeteringClient::new(channel(m.running.grpc_addr, Some(key)).await);
    let r = c
        .query(pb::UsageQuery {
            group_by: vec!["user".into()],
            filter: Some(filter),
            ..Default::default()
        })
        .await
        .map_err(|s| s.code())?;
    let mut users: Vec<String> = r
        .into_inner()
        .rows
        .into_iter()
        .map(|r| r.key[0].clone())
        .collect();
    users.sort();
    Ok(users)
}

#[tokio::test]
async fn metering_grpc_every_cell() {
    let m = metering().await;
    // Ingest: service identities only (a forged event from a user or an admin is refused, and
    // nothing of it is recorded).
    assert_eq!(
        ingest(&m, None, vec![ev("x0", "alice", "ml")]).await,
        Code::Unauthenticated
    );
    for key in ["sk-alice", "sk-carol", "sk-root"] {
        assert_eq!(
            ingest(&m, Some(key), vec![ev("forged", "bob", "web")]).await,
            Code::PermissionDenied,
            "{key}"
        );
    }
    assert_eq!(
        ingest(
            &m,
            Some("sk-svc"),
            vec![
                ev("a1", "alice", "ml"),
                ev("b1", "bob", "web"),
                ev("d1", "dave", "ml")
            ]
        )
        .await,
        Code::Ok
    );
    let all = pb::UsageFilter::default();
    let only = |u: &str| pb::UsageFilter {
        users: vec![u.into()],
        ..Default::default()
    };
    // Queries: a user sees their own, a team admin their team's, admins and services everything.
    assert_eq!(
        users_seen(&m, "sk-alice", all.clone()).await,
        Ok(vec!["alice".into()])
    );
    assert_eq!(
        users_seen(&m, "sk-alice", only("alice")).await,
        Ok(vec!["alice".into()])
    );
    assert_eq!(
        users_seen(&m, "sk-alice", only("bob")).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        users_seen(&m, "sk-bob", all.clone()).await,
        Ok(vec!["bob".into()])
    );
    assert_eq!(
        users_seen(&m, "sk-carol", all.clone()).await,
        Ok(vec!["alice".into(), "dave".into()])
    );
    assert_eq!(
        users_seen(
            &m,
            "sk-carol",
            pb::UsageFilter {
                teams: vec!["web".into()],
                ..Default::default()
            }
        )
        .await,
        Err(Code::PermissionDenied)
    );
    let everyone: Vec<String> = vec!["alice".into(), "bob".into(), "dave".into()];
    assert_eq!(
        users_seen(&m, "sk-root", all.clone()).await,
        Ok(everyone.clone())
    );
    assert_eq!(users_seen(&m, "sk-svc", all.clone()).await, Ok(everyone));

    let mut anon = MeteringClient::new(channel(m.running.grpc_addr, None).await);
    assert_eq!(
        code(anon.query(pb::UsageQuery::default()).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(anon.list_prices(pb::ListPricesRequest {}).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(anon.export_csv(pb::ExportRequest::default()).await),
        Code::Unauthenticated
    );
    // Sessions and the CSV export are scoped the same way.
    let mut alice = MeteringClient::new(channel(m.running.grpc_addr, Some("sk-alice")).await);
    let sessions = alice
        .sessions(pb::SessionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert!(
        !sessions.is_empty() && sessions.iter().all(|s| s.user == "alice"),
        "{sessions:?}"
    );
    assert_eq!(
        code(
            alice
                .top_users(pb::TopRequest {
                    filter: Some(only("bob")),
                    ..Default::default()
                })
                .await
        ),
        Code::PermissionDenied
    );
    let mut csv = String::new();
    let mut s = alice
        .export_csv(pb::ExportRequest::default())
        .await
        .unwrap()
        .into_inner();
    while let Some(chunk) = s.message().await.unwrap() {
        csv.push_str(&chunk.text);
    }
    assert!(csv.contains("alice") && !csv.contains("bob"), "{csv}");

    // Prices: everyone with a key reads them; only admins edit them, within bounds.
    assert_eq!(
        code(alice.list_prices(pb::ListPricesRequest {}).await),
        Code::Ok
    );
    assert_eq!(
        code(alice.set_price(price("m", "2025-02-01", 2.0)).await),
        Code::PermissionDenied
    );
    let mut svc = MeteringClient::new(channel(m.running.grpc_addr, Some("sk-svc")).await);
    assert_eq!(
        code(svc.set_price(price("m", "2025-02-01", 2.0)).await),
        Code::PermissionDenied
    );
    let mut root = MeteringClient::new(channel(m.running.grpc_addr, Some("sk-root")).await);
    assert_eq!(
        code(root.set_price(price("m", "2025-02-01", 2.0)).await),
        Code::Ok
    );
    // The poisoning of issue #18: 1e300, a date that does not exist, an empty model.
    for bad in [
        price("m", "2025-03-01", 1e300),
        price("m", "2025-02-31", 1.0),
        price("", "2025-03-01", 1.0),
        price("m", "2025-03-01", f64::INFINITY),
    ] {
        let e = root.set_price(bad.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
    }
    // Queries still answer after the attempts.
    assert!(users_seen(&m, "sk-root", all).await.is_ok());
    // Malformed protobuf: UNAUTHENTICATED without a key (checked before decoding), the caller's
    // INVALID_ARGUMENT with one; over the size limit, RESOURCE_EXHAUSTED.
    let addr = m.running.grpc_addr;
    let garbage = vec![0xff, 0xff, 0xff, 0xff];
    assert_eq!(
        raw_call(addr, None, "/retort.v1.Metering/Query", garbage.clone()).await,
        Code::Unauthenticated
    );
    assert_eq!(
        raw_call(addr, Some("sk-alice"), "/retort.v1.Metering/Query", garbage).await,
        Code::InvalidArgument
    );
    assert_eq!(
        raw_call(
            addr,
            Some("sk-root"),
            "/retort.v1.Metering/SetPrice",
            vec![0u8; 17 << 20]
        )
        .await,
        Code::ResourceExhausted
    );
    m.running.shutdown().await;
}

#[tokio::test]
async fn metering_http_every_cell() {
    let m = metering().await;
    assert_eq!(
        ingest(
            &m,
            Some("sk-svc"),
            vec![ev("a1", "alice", "ml"), ev("b1", "bob", "web")]
        )
        .await,
        Code::Ok
    );
    let base = format!("http://{}", m.http);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str, key: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    for path in [
        "/api/usage/query?group_by=user",
        "/api/usage/top-users",
        "/api/usage/top-reasoning",
        "/api/usage/model-mix",
        "/api/usage/sessions",
        "/api/usage/dimensions",
        "/api/usage/prices",
        "/api/usage/export.csv",
        "/dashboard",
    ] {
        let r = get(path, None).await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a key");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("API key"),
            "{path}: {body}"
        );
        let r = get(path, Some("sk-wrong")).await.unwrap();
        assert_eq!(r.status(), 401, "{path} with an unknown key");
        for key in ["sk-alice", "sk-carol", "sk-root", "sk-svc"] {
            assert_eq!(
                get(path, Some(key)).await.unwrap().status(),
                200,
                "{path} {key}"
            );
        }
    }
    // Someone else's usage: 403 in the API's JSON shape.
    let r = get("/api/usage/query?group_by=user&user=bob", Some("sk-alice"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("permission denied"),
        "{body}"
    );
    let r: serde_json::Value = get("/api/usage/query?group_by=user", Some("sk-alice"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let users: Vec<&str> = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"]["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice"]);
    let csv = get("/api/usage/export.csv", Some("sk-alice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.contains("alice") && !csv.contains("bob"));
    // Price edits: admins only, validated, errors in JSON.
    let post = |key: &str, body: serde_json::Value| {
        http.post(format!("{base}/api/usage/prices"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let ok = serde_json::json!({"model": "m", "effective_from": "2025-02-01", "input": 2.0, "output": 2.0});
    assert_eq!(post("sk-alice", ok.clone()).await.unwrap().status(), 403);
    assert_eq!(post("sk-svc", ok.clone()).await.unwrap().status(), 403);
    assert_eq!(post("sk-root", ok).await.unwrap().status(), 200);
    for bad in [
        serde_json::json!({"model": "m", "effective_from": "2025-03-01", "input": 1e300, "output": 1.0}),
        serde_json::json!({"model": "m", "effective_from": "2025-02-31", "input": 1.0, "output": 1.0}),
        serde_json::json!({"model": "", "effective_from": "2025-03-01", "input": 1.0, "output": 1.0}),
        serde_json::json!({"model": "m"}),
    ] {
        let r = post("sk-root", bad.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    // A page: the key once through the form, then a session cookie.
    let r = http
        .get(format!("{base}/dashboard"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("retort_key"));
    let r = http
        .post(format!("{base}/dashboard"))
        .form(&[("retort_key", "sk-wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/dashboard"))
        .form(&[("retort_key", "sk-carol")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let r = http
        .get(format!("{base}/api/usage/query?group_by=user"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{base}/dashboard"))
        .header("cookie", "retort_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    m.running.shutdown().await;
}

fn record(user: &str, team: &str, session: &str, tokens: u64) -> pb::UsageRecord {
    pb::UsageRecord {
        user: user.into(),
        team: team.into(),
        session_id: session.into(),
        model: "m".into(),
        tier: "mid".into(),
        tokens,
        cost_micros: 1_000,
        time_unix_ms: retort_time::now_ms(),
        requests: 1,
    }
}

#[tokio::test]
async fn breaker_grpc_every_cell() {
    use retort_breaker::{core::Breaker, policy::Policies, store::Store};
    let b = Breaker::new(
        Store::memory(),
        Policies::from_toml(
            "[policies.default]\nmode = \"pause\"\nmax_tokens = 100\n[[budgets]]\nscope = \"team\"\nname = \"web\"\nwindow = \"day\"\nhard_usd = 10.0\n",
        )
        .unwrap(),
        "http://127.0.0.1:1".into(),
    )
    .await
    .unwrap();
    let running =
        retort_breaker::grpc::serve_with_keys("127.0.0.1:0".parse().unwrap(), b, Some(ring()))
            .await
            .unwrap();
    let c = |key: Option<&'static str>| {
        let addr = running.addr;
        async move { BreakerClient::new(channel(addr, key).await) }
    };
    let report = |users: Vec<pb::UsageRecord>| pb::ReportRequest {
        gateway_id: "g".into(),
        usage: users,
        batch_id: String::new(),
    };
    // Report, Settle, Lease, SetPolicies: admins and service identities only. A forged Settle of
    // $1,000 onto a team is refused.
    let forged = || {
        report(vec![pb::UsageRecord {
            cost_micros: 1_000_000_000,
            ..record("bob", "web", "", 0)
        }])
    };
    assert_eq!(
        code(c(None).await.settle(forged()).await),
        Code::Unauthenticated
    );
    for key in ["sk-alice", "sk-carol"] {
        assert_eq!(
            code(c(Some(key)).await.settle(forged()).await),
            Code::PermissionDenied
        );
        assert_eq!(
            code(c(Some(key)).await.report(forged()).await),
            Code::PermissionDenied
        );
        assert_eq!(
            code(c(Some(key)).await.lease(pb::LeaseRequest::default()).await),
            Code::PermissionDenied
        );
        assert_eq!(
            code(
                c(Some(key))
                    .await
                    .set_policies(pb::SetPoliciesRequest {
                        toml: "[policies.default]\nmode = \"notify\"\n".into()
                    })
                    .await
            ),
            Code::PermissionDenied
        );
    }
    assert_eq!(
        code(
            c(Some("sk-root"))
                .await
                .lease(pb::LeaseRequest::default())
                .await
        ),
        Code::Ok
    );
    // The gateway (a service) reports: bob's session pauses, alice's too.
    let mut svc = c(Some("sk-svc")).await;
    svc.settle(report(vec![
        record("bob", "web", "sb", 150),
        record("alice", "ml", "sa", 150),
    ]))
    .await
    .unwrap();
    // Watch: a user only their own alerts.
    assert_eq!(
        code(
            c(Some("sk-alice"))
                .await
                .watch(pb::WatchRequest { user: "bob".into() })
                .await
        ),
        Code::PermissionDenied
    );
    let mut own = c(Some("sk-alice"))
        .await
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = own.message().await.unwrap().unwrap();
    assert_eq!(first.user, "alice");
    // Sessions: the owner, their team admin, admins; nobody else, whatever name they give.
    let get = |user: &str| pb::GetSessionRequest {
        session_id: "sb".into(),
        user: user.into(),
    };
    assert_eq!(
        code(c(Some("sk-alice")).await.get_session(get("")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c(Some("sk-carol")).await.get_session(get("")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c(Some("sk-bob")).await.get_session(get("")).await),
        Code::Ok
    );
    assert_eq!(
        code(c(Some("sk-root")).await.get_session(get("bob")).await),
        Code::Ok
    );
    let listed = c(Some("sk-alice"))
        .await
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert!(listed.iter().all(|s| s.user == "alice") && !listed.is_empty());
    let act = |by: &str| pb::SessionAction {
        session_id: "sb".into(),
        user: String::new(),
        by: by.into(),
    };
    assert_eq!(
        code(c(None).await.stop(act("")).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(c(Some("sk-alice")).await.stop(act("bob")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c(Some("sk-alice")).await.confirm(act("")).await),
        Code::PermissionDenied
    );
    // The owner confirms: the audit trail names the key's user, not the name in the request.
    let s = c(Some("sk-bob"))
        .await
        .confirm(act("mallory"))
        .await
        .unwrap()
        .into_inner();
    let last = s.history.last().unwrap();
    assert_eq!((last.to.as_str(), last.by.as_str()), ("confirmed", "bob"));
    // A team admin acts on their team's sessions.
    assert_eq!(
        code(
            c(Some("sk-carol"))
                .await
                .stop(pb::SessionAction {
                    session_id: "sa".into(),
                    ..Default::default()
                })
                .await
        ),
        Code::Ok
    );
    // Budgets: one's own (and a team admin their team's); admins any.
    let budgets = |p: &str| pb::GetBudgetsRequest {
        principal: p.into(),
    };
    assert_eq!(
        code(
            c(Some("sk-alice"))
                .await
                .get_budgets(budgets("team:web"))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            c(Some("sk-alice"))
                .await
                .get_budgets(budgets("user:alice"))
                .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(
            c(Some("sk-carol"))
                .await
                .get_budgets(budgets("team:ml"))
                .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(
            c(Some("sk-carol"))
                .await
                .get_budgets(budgets("team:web"))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            c(Some("sk-root"))
                .await
                .get_budgets(budgets("team:web"))
                .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(
            c(Some("sk-root"))
                .await
                .set_policies(pb::SetPoliciesRequest {
                    toml: "[policies.default]\nmode = \"notify\"\n".into()
                })
                .await
        ),
        Code::Ok
    );
    running.shutdown().await;
}

async fn distill(root: &std::path::Path) -> retort_distill::Running {
    let dir = temp_dir("distill");
    let cfg = retort_distill::DistillConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        // Nothing listens there: jobs fail at their first teacher call, which these tests never need.
        gateway_url: "http://127.0.0.1:9".into(),
        gateway_grpc: "http://127.0.0.1:9".into(),
        gateway_key: "sk-unused".into(),
        data_root: Some(root.to_path_buf()),
        user_max_inline_bytes: 4096,
        keys: Some(ring()),
        ..retort_distill::DistillConfig::default()
    };
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("distill.db").display());
    let store = retort_distill::store::Store::connect(&url, None)
        .await
        .unwrap();
    retort_distill::grpc::start_with_store(cfg, Vec::new(), store)
        .await
        .unwrap()
}

fn submit(train: pb::data_source::Source) -> pb::SubmitRequest {
    let evals =
        b"{\"text\": \"e1\", \"label\": \"a\"}\n{\"text\": \"e2\", \"label\": \"b\"}\n".to_vec();
    pb::SubmitRequest {
        teacher: "frontier".into(),
        train: Some(pb::DataSource {
            source: Some(train),
        }),
        evals: Some(pb::DataSource {
            source: Some(pb::data_source::Source::Inline(evals)),
        }),
        prompt_template: "Classify: {input}".into(),
        target: "linear/small".into(),
        labels: vec!["a".into(), "b".into()],
        ..Default::default()
    }
}

fn inline(n: usize) -> pb::data_source::Source {
    let mut b = Vec::new();
    for i in 0..n {
        b.extend_from_slice(format!("{{\"text\": \"item {i}\"}}\n").as_bytes());
    }
    pb::data_source::Source::Inline(b)
}

#[tokio::test]
async fn distill_grpc_every_cell() {
    let root = temp_dir("data-root");
    std::fs::write(
        root.join("train.jsonl"),
        "{\"text\": \"secret-label-xyz\"}\n",
    )
    .unwrap();
    let running = distill(&root).await;
    let c = |key: Option<&'static str>| {
        let addr = running.addr;
        async move { DistillClient::new(channel(addr, key).await) }
    };
    // Anonymous Submit (and every other call without a key): UNAUTHENTICATED.
    assert_eq!(
        code(c(None).await.submit(submit(inline(3))).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(c(None).await.list(pb::ListJobsRequest::default()).await),
        Code::Unauthenticated
    );
    // Server paths: admins only, only under the data root, never quoting the file.
    let path = |p: &str| pb::data_source::Source::Path(p.into());
    assert_eq!(
        code(
            c(Some("sk-alice"))
                .await
                .submit(submit(path("/etc/shadow")))
                .await
        ),
        Code::PermissionDenied
    );
    for p in [
        "/etc/shadow",
        "/etc/passwd",
        "../../etc/passwd",
        "/dev/zero",
        "nope.jsonl",
    ] {
        let e = c(Some("sk-root"))
            .await
            .submit(submit(path(p)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{p}: {e:?}");
        assert!(!e.message().contains("root:"), "{p}: {}", e.message());
    }
    std::os::unix::fs::symlink("/etc/passwd", root.join("escape.jsonl")).unwrap();
    let e = c(Some("sk-root"))
        .await
        .submit(submit(path("escape.jsonl")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("outside the data root"),
        "{}",
        e.message()
    );
    // A file under the root is read for an admin (the job is theirs).
    let admin_job = c(Some("sk-root"))
        .await
        .submit(submit(path("train.jsonl")))
        .await;
    assert_eq!(code(admin_job), Code::Ok);
    // Caps for non-admins: inline size and teacher concurrency.
    assert_eq!(
        code(c(Some("sk-alice")).await.submit(submit(inline(1000))).await),
        Code::ResourceExhausted
    );
    let mut greedy = submit(inline(3));
    greedy.limits = Some(pb::ResourceLimits {
        max_teacher_concurrency: 300,
        ..Default::default()
    });
    assert_eq!(
        code(c(Some("sk-alice")).await.submit(greedy).await),
        Code::ResourceExhausted
    );
    // Alice's job is hers: bob may not get, report, cancel or deploy it; carol (her team admin)
    // and root may read it.
    let job = c(Some("sk-alice"))
        .await
        .submit(submit(inline(3)))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let get = || pb::GetJobRequest {
        job_id: job.clone(),
    };
    assert_eq!(
        code(c(Some("sk-bob")).await.get(get()).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            c(Some("sk-bob"))
                .await
                .report(pb::JobReportRequest {
                    job_id: job.clone()
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            c(Some("sk-bob"))
                .await
                .watch(pb::WatchJobRequest {
                    job_id: job.clone()
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            c(Some("sk-bob"))
                .await
                .cancel(pb::CancelJobRequest {
                    job_id: job.clone()
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(code(c(Some("sk-alice")).await.get(get()).await), Code::Ok);
    assert_eq!(code(c(Some("sk-carol")).await.get(get()).await), Code::Ok);
    assert_eq!(code(c(Some("sk-root")).await.get(get()).await), Code::Ok);
    let listed = c(Some("sk-bob"))
        .await
        .list(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(listed.iter().all(|j| j.id != job), "bob lists alice's job");
    // Route hijack: placing a student on a route is for admins, whoever owns the job.
    let hijack = |job_id: String| pb::DeployRequest {
        job_id,
        name: "mine".into(),
        route: "frontier".into(),
        first: true,
    };
    assert_eq!(
        code(c(Some("sk-bob")).await.deploy(hijack(job.clone())).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c(Some("sk-alice")).await.deploy(hijack(job.clone())).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            c(Some("sk-alice"))
                .await
                .cancel(pb::CancelJobRequest {
                    job_id: job.clone()
                })
                .await
        ),
        Code::Ok
    );
    running.shutdown().await;
}
