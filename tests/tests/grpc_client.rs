//! A tonic client (the generated `retort.v1.Gateway` stub) against the gateway's gRPC ingress.
#![allow(clippy::expect_used, clippy::unwrap_used)]
use retort_proto::v1::{self as pb, complete_chunk::Event, gateway_client::GatewayClient};
use retort_tests::*;
use tonic::{Code, Request, transport::Channel};

const PROMPT: &str = "Name three primary colours.";

async fn client(e: &Env) -> GatewayClient<Channel> {
    GatewayClient::connect(format!("http://{}", e.grpc_addr()))
        .await
        .expect("connect")
}

fn request(model: &str, prompt: &str, key: Option<&str>) -> Request<pb::CompleteRequest> {
    let mut r = Request::new(pb::CompleteRequest {
        model: model.into(),
        messages: vec![pb::Message {
            role: pb::Role::User as i32,
            text: prompt.into(),
            parts: vec![],
        }],
        ..Default::default()
    });
    if let Some(key) = key {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("metadata"),
        );
    }
    r
}

#[tokio::test]
async fn complete_fails_over_to_the_healthy_target() {
    let e = env().await;
    let expected = e.expected_answer(PROMPT).await;
    let r = client(&e)
        .await
        .complete(request(ALIAS, PROMPT, Some(KEY)))
        .await
        .expect("complete")
        .into_inner();
    assert_eq!(r.text, expected);
    assert_eq!((r.provider.as_str(), r.model.as_str()), ("oa", SERVED));
    assert_eq!(r.stop_reason, pb::StopReason::EndTurn as i32);
    assert!(
        !r.failed_attempts.is_empty(),
        "the down target's attempts are reported"
    );
    for f in &r.failed_attempts {
        assert_eq!(
            (f.provider.as_str(), f.model.as_str(), f.status),
            ("oa", DOWN, 503),
            "{f:?}"
        );
        assert!(!f.error.is_empty(), "{f:?}");
    }
    assert_eq!(r.failed_attempts.len() as u64, e.sim.attempts(DOWN));
    let usage = r.usage.expect("usage");
    assert!(usage.input_tokens > 0);
    assert_eq!(
        usage.output_tokens,
        expected.split_whitespace().count() as u64
    );
    e.shutdown().await;
}

#[tokio::test]
async fn complete_stream_text_equals_the_answer() {
    let e = env().await;
    let expected = e.expected_answer(PROMPT).await;
    let mut stream = client(&e)
        .await
        .complete_stream(request(ALIAS, PROMPT, Some(KEY)))
        .await
        .expect("stream")
        .into_inner();
    let mut events = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        events.push(chunk.event.expect("an event in every chunk"));
    }
    let Some(Event::Start(start)) = events.first() else {
        panic!("the first chunk is start: {events:?}")
    };
    assert_eq!(
        (start.provider.as_str(), start.model.as_str()),
        ("oa", SERVED)
    );
    let text: String = events
        .iter()
        .filter_map(|ev| {
            if let Event::TextDelta(t) = ev {
                Some(t.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(text, expected);
    let Some(Event::Done(done)) = events.last() else {
        panic!("the last chunk is done: {events:?}")
    };
    assert_eq!(done.stop_reason, pb::StopReason::EndTurn as i32);
    assert_eq!(
        (done.provider.as_str(), done.model.as_str()),
        ("oa", SERVED)
    );
    assert!(
        !done.failed_attempts.is_empty(),
        "failover is reported at the end of the stream"
    );
    assert_eq!(
        done.usage.as_ref().map(|u| u.output_tokens),
        Some(expected.split_whitespace().count() as u64)
    );
    e.shutdown().await;
}

#[tokio::test]
async fn list_models_names_aliases_and_models() {
    let e = env().await;
    let mut r = Request::new(pb::ListModelsRequest {});
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {KEY}").parse().expect("metadata"),
    );
    let models = client(&e)
        .await
        .list_models(r)
        .await
        .expect("list")
        .into_inner()
        .models;
    let alias = models.iter().find(|m| m.id == ALIAS).expect("alias listed");
    assert_eq!(
        (alias.kind.as_str(), alias.targets.clone()),
        ("alias", vec![DOWN.to_owned(), SERVED.to_owned()])
    );
    assert!(models.iter().any(|m| m.id == CLAUDE && m.kind == "model"));
    e.shutdown().await;
}

#[tokio::test]
async fn invalid_input_is_invalid_argument() {
    let e = env().await;
    let mut c = client(&e).await;
    let mut no_messages = request(SERVED, PROMPT, Some(KEY));
    no_messages.get_mut().messages.clear();
    let err = c.complete(no_messages).await.expect_err("no messages");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("messages"), "{err:?}");

    let mut no_role = request(SERVED, PROMPT, Some(KEY));
    no_role.get_mut().messages[0].role = pb::Role::Unspecified as i32;
    let err = c.complete_stream(no_role).await.expect_err("no role");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("role"), "{err:?}");

    let err = c
        .complete(request("no-such-model", PROMPT, Some(KEY)))
        .await
        .expect_err("unknown model");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("no-such-model"), "{err:?}");
    assert_eq!(e.sim.total_attempts(), 0, "nothing reached a provider");
    e.shutdown().await;
}

#[tokio::test]
async fn no_key_is_unauthenticated() {
    let e = env().await;
    let mut c = client(&e).await;
    let err = c
        .complete(request(SERVED, PROMPT, None))
        .await
        .expect_err("no key");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = c
        .complete_stream(request(SERVED, PROMPT, Some("sk-not-a-key")))
        .await
        .expect_err("bad key");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = c
        .list_models(Request::new(pb::ListModelsRequest {}))
        .await
        .expect_err("no key");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(e.sim.total_attempts(), 0, "nothing reached a provider");
    // The same connection still serves an authenticated call.
    let r = c
        .complete(request(SERVED, PROMPT, Some(KEY)))
        .await
        .expect("complete")
        .into_inner();
    assert_eq!(r.text, e.expected_answer(PROMPT).await);
    e.shutdown().await;
}

/// A raw gRPC call over HTTP/2 (no generated stub), so the body can be a malformed message.
async fn raw_call(e: &Env, key: Option<&str>, body: &'static [u8]) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let mut req = client
        .post(format!(
            "http://{}/retort.v1.Gateway/Complete",
            e.grpc_addr()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.expect("send")
}

#[tokio::test]
async fn the_key_is_checked_before_the_message_is_decoded() {
    let e = env().await;
    // A gRPC frame (uncompressed, 3 bytes) holding bytes that are no CompleteRequest.
    const MALFORMED: &[u8] = &[0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
    let status = |r: &reqwest::Response| {
        r.headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
    };
    let anonymous = raw_call(&e, None, MALFORMED).await;
    assert_eq!(
        status(&anonymous),
        Some(Code::Unauthenticated as i32),
        "without a key the call is refused before its body is read"
    );
    let stranger = raw_call(&e, Some("sk-nobody"), MALFORMED).await;
    assert_eq!(status(&stranger), Some(Code::Unauthenticated as i32));
    // With a valid key the body is decoded, and only then found malformed.
    let known = raw_call(&e, Some(KEY), MALFORMED).await;
    assert_ne!(status(&known), Some(Code::Unauthenticated as i32));
}

#[tokio::test]
async fn grpc_requests_are_counted_and_unknown_models_are_one_label() {
    let e = env().await;
    client(&e)
        .await
        .complete(request(ALIAS, PROMPT, Some(KEY)))
        .await
        .expect("complete");
    let unknown = client(&e)
        .await
        .complete(request("no-such-model-7f3a", PROMPT, Some(KEY)))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let metrics = reqwest::get(e.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let line = format!(r#"retort_requests_total{{ingress="grpc",route="{ALIAS}",outcome="ok"}} 1"#);
    assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    assert!(
        metrics
            .contains(r#"retort_requests_total{ingress="grpc",route="unknown",outcome="error"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains("no-such-model-7f3a"),
        "a caller's model name became a label"
    );
}
