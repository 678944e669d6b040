//! The scaffold over a real socket: health and reflection answer anyone; every other call needs a
//! known key, refused before routing; the caller's principal reaches the handler.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::sync::Arc;

use axum::{Extension, routing::get};
use retort_hooks::{Identity, Principal, Role};
use retort_proto::v1::{ListModelsRequest, gateway_client::GatewayClient};
use retort_server::{Grpc, Readiness, auth::KeyRing};
use tonic::{Code, Request, metadata::MetadataValue};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower::ServiceExt;

fn ring() -> Arc<KeyRing> {
    let mut ring = KeyRing::new();
    let alice = Principal {
        identity: Identity {
            user: "alice".into(),
            team: "ml".into(),
            ..Identity::default()
        },
        role: Role::User,
    };
    ring.insert("sk-alice", alice).unwrap();
    Arc::new(ring)
}

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {key}")).unwrap(),
    );
    r
}

#[tokio::test]
async fn calls_need_a_known_key_while_health_answers_anyone() {
    let serving = Grpc::new("test")
        .authenticate(ring())
        .spawn("127.0.0.1:0".parse().unwrap(), Readiness::always())
        .await
        .unwrap();
    let url = format!("http://{}", serving.addr);

    let channel = tonic::transport::Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut serving_now = false;
    for _ in 0..50 {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == ServingStatus::Serving as i32 {
            serving_now = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(serving_now, "health is open and follows readiness");

    let mut client = GatewayClient::connect(url).await.unwrap();
    let none = client
        .list_models(ListModelsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    assert!(
        none.message().contains("missing API key"),
        "{}",
        none.message()
    );
    let wrong = client
        .list_models(with_key(ListModelsRequest::default(), "sk-mallory"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(
        wrong.message().contains("invalid API key"),
        "{}",
        wrong.message()
    );
    // A known key passes the check; this server serves no Gateway, so the call then finds no route.
    let known = client
        .list_models(with_key(ListModelsRequest::default(), "sk-alice"))
        .await
        .unwrap_err();
    assert_eq!(known.code(), Code::Unimplemented);
    serving.shutdown().await;
}

#[tokio::test]
async fn the_principal_reaches_the_handler() {
    let app = axum::Router::new()
        .route(
            "/retort.v1.Test/Who",
            get(|Extension(p): Extension<Principal>| async move { p.identity.user }),
        )
        .layer(axum::middleware::from_fn_with_state(
            ring(),
            retort_server::auth::check,
        ));
    let req = http::Request::get("/retort.v1.Test/Who")
        .header("x-api-key", "sk-alice")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"alice");
}

#[tokio::test]
async fn streams_learn_that_the_server_is_stopping_from_its_own_handle() {
    let grpc = Grpc::new("test");
    let mut stopping = grpc.stopping();
    let serving = grpc
        .spawn("127.0.0.1:0".parse().unwrap(), Readiness::always())
        .await
        .unwrap();
    assert!(!*stopping.borrow());
    let _ = serving.stopper().send(true);
    stopping.wait_for(|s| *s).await.unwrap();
    serving.wait().await;
}
