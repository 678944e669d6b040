//! grpcurl, a gRPC client that knows nothing of Retort, against the gateway's gRPC ingress.
//!
//! Server reflection is tested on its own (`reflection_lists_and_describes_the_services`). The
//! other tests hand grpcurl the proto files (`proto/retort/v1/gateway.proto` and the standard
//! `tests/proto/grpc/health/v1/health.proto`), so that each of them fails only for its own reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]
use std::path::Path;

use retort_tests::*;
use serde_json::{Value, json};

const PROMPT: &str = "hello";

fn request(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "ROLE_USER", "text": PROMPT}]}).to_string()
}

/// grpcurl with the gateway's proto file, `authorization: Bearer KEY` when `key` is given, `body`
/// (JSON) as the request, against `method` of `retort.v1.Gateway`.
async fn gateway_call(e: &Env, key: Option<&str>, body: &str, method: &str) -> Run {
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let mut args = vec![
        "-plaintext".to_owned(),
        "-import-path".into(),
        protos.display().to_string(),
    ];
    args.extend(["-proto".into(), "retort/v1/gateway.proto".into()]);
    if let Some(key) = key {
        args.extend(["-H".into(), format!("authorization: Bearer {key}")]);
    }
    args.extend([
        "-d".into(),
        body.to_owned(),
        e.grpc_addr(),
        format!("retort.v1.Gateway/{method}"),
    ]);
    run(grpcurl(), args).await
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    // This is what `retort up --demo` tells its users to run: `grpcurl -plaintext ADDR list`.
    let e = env().await;
    let addr = e.grpc_addr();
    let run = run_grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(
        run.success(),
        "grpcurl cannot list the services. grpcurl 1.8.6 (like many deployed gRPC tools) speaks only \
         grpc.reflection.v1alpha, so the gateway must serve it beside grpc.reflection.v1:\n{}",
        run.report()
    );
    let services: Vec<&str> = run.stdout.lines().map(str::trim).collect();
    for want in ["retort.v1.Gateway", "grpc.health.v1.Health"] {
        assert!(
            services.contains(&want),
            "{want} is not listed:\n{}",
            run.report()
        );
    }
    assert!(
        services.iter().any(|s| s.starts_with("grpc.reflection.")),
        "the reflection service is not listed:\n{}",
        run.report()
    );
    // Each port lists what it serves, not every service of the contracts.
    for other in [
        "retort.v1.Metering",
        "retort.v1.Breaker",
        "retort.v1.Distill",
    ] {
        assert!(
            !services.contains(&other),
            "{other} is listed but not served here:\n{}",
            run.report()
        );
    }
    let run = run_grpcurl(&["-plaintext", &addr, "describe", "retort.v1.Gateway"]).await;
    run.assert_ok();
    for m in ["Complete", "CompleteStream", "ListModels"] {
        assert!(
            run.stdout.contains(&format!("rpc {m} ")),
            "{m} is not described:\n{}",
            run.report()
        );
    }
    // With reflection alone (no proto files), a call works end to end.
    let auth = format!("authorization: Bearer {KEY}");
    let run = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        &request(SERVED),
        &addr,
        "retort.v1.Gateway/Complete",
    ])
    .await;
    run.assert_ok();
    assert_eq!(
        json_documents(&run.stdout)[0]["text"],
        e.expected_answer(PROMPT).await.as_str(),
        "{}",
        run.report()
    );
    e.shutdown().await;
}

#[tokio::test]
async fn complete_fails_over_and_answers() {
    let e = env().await;
    let expected = e.expected_answer(PROMPT).await;
    let run = gateway_call(&e, Some(KEY), &request(ALIAS), "Complete").await;
    run.assert_ok();
    let docs = json_documents(&run.stdout);
    assert_eq!(docs.len(), 1, "{}", run.report());
    let r = &docs[0];
    assert_eq!(r["text"], expected.as_str(), "{r}");
    assert_eq!(r["provider"], "oa", "{r}");
    assert_eq!(r["model"], SERVED, "{r}");
    assert_eq!(r["stopReason"], "STOP_REASON_END_TURN", "{r}");
    assert_eq!(r["content"][0]["text"], expected.as_str(), "{r}");
    let failed = r["failedAttempts"].as_array().cloned().unwrap_or_default();
    assert!(
        !failed.is_empty(),
        "the down target's attempts are reported: {r}"
    );
    assert!(
        failed
            .iter()
            .all(|f| f["model"] == DOWN && f["status"] == 503),
        "{r}"
    );
    // uint64 fields are strings in protobuf JSON.
    let output = r["usage"]["outputTokens"]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok());
    assert_eq!(
        output,
        Some(expected.split_whitespace().count() as u64),
        "{r}"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn complete_stream_ends_with_done() {
    let e = env().await;
    let expected = e.expected_answer(PROMPT).await;
    let run = gateway_call(&e, Some(KEY), &request(ALIAS), "CompleteStream").await;
    run.assert_ok();
    let chunks = json_documents(&run.stdout);
    assert!(
        chunks.len() >= 3,
        "start, deltas and done:\n{}",
        run.report()
    );
    let start = &chunks[0]["start"];
    assert_eq!(
        (start["provider"].as_str(), start["model"].as_str()),
        (Some("oa"), Some(SERVED)),
        "{}",
        chunks[0]
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["textDelta"].as_str())
        .collect();
    assert_eq!(text, expected);
    let done = chunks.last().map(|c| &c["done"]).unwrap_or(&Value::Null);
    assert!(
        done.is_object(),
        "the last chunk is `done`:\n{}",
        run.report()
    );
    assert_eq!(done["stopReason"], "STOP_REASON_END_TURN", "{done}");
    assert_eq!(
        (done["provider"].as_str(), done["model"].as_str()),
        (Some("oa"), Some(SERVED)),
        "{done}"
    );
    assert!(
        done["failedAttempts"]
            .as_array()
            .is_some_and(|f| !f.is_empty()),
        "failover is reported: {done}"
    );
    assert_eq!(
        chunks.iter().filter(|c| c.get("done").is_some()).count(),
        1,
        "exactly one done"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn list_models() {
    let e = env().await;
    let run = gateway_call(&e, Some(KEY), "{}", "ListModels").await;
    run.assert_ok();
    let r = &json_documents(&run.stdout)[0];
    let models = r["models"].as_array().cloned().unwrap_or_default();
    let alias = models
        .iter()
        .find(|m| m["id"] == ALIAS)
        .unwrap_or_else(|| panic!("{ALIAS} is not listed: {r}"));
    assert_eq!(alias["kind"], "alias");
    assert_eq!(alias["targets"], json!([DOWN, SERVED]));
    assert!(
        models
            .iter()
            .any(|m| m["id"] == SERVED && m["kind"] == "model"),
        "{r}"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn health_check_says_serving() {
    let e = env().await;
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let protos = protos.display().to_string();
    let addr = e.grpc_addr();
    for service in ["", "retort.v1.Gateway"] {
        let body = json!({"service": service}).to_string();
        let health_proto = "grpc/health/v1/health.proto";
        let args = [
            "-plaintext",
            "-import-path",
            &protos,
            "-proto",
            health_proto,
            "-d",
            &body,
            &addr,
        ];
        let args = [&args[..], &["grpc.health.v1.Health/Check"]].concat();
        // The gateway publishes the service's status from a task it starts with the server: give
        // it a moment (it refreshes every 500 ms) before judging.
        let mut run = run_grpcurl(&args).await;
        for _ in 0..10 {
            if run.success() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            run = run_grpcurl(&args).await;
        }
        run.assert_ok();
        let status = &json_documents(&run.stdout)[0]["status"];
        assert_eq!(status, "SERVING", "service {service:?}: {}", run.report());
    }
    e.shutdown().await;
}

#[tokio::test]
async fn calls_without_a_valid_key_are_unauthenticated() {
    let e = env().await;
    let body = request(SERVED);
    for method in ["Complete", "CompleteStream", "ListModels"] {
        let body = if method == "ListModels" {
            "{}"
        } else {
            body.as_str()
        };
        let run = gateway_call(&e, None, body, method).await;
        assert!(
            !run.success() && !run.timed_out,
            "{method} without a key must fail:\n{}",
            run.report()
        );
        assert!(
            run.stderr.contains("Code: Unauthenticated"),
            "{method}:\n{}",
            run.report()
        );
        assert!(
            run.stderr.contains("missing API key"),
            "{method}:\n{}",
            run.report()
        );
        let run = gateway_call(&e, Some("sk-not-a-key"), body, method).await;
        assert!(
            !run.success() && !run.timed_out,
            "{method} with an unknown key must fail:\n{}",
            run.report()
        );
        assert!(
            run.stderr.contains("Code: Unauthenticated"),
            "{method}:\n{}",
            run.report()
        );
        assert!(
            run.stderr.contains("invalid API key"),
            "{method}:\n{}",
            run.report()
        );
    }
    assert_eq!(e.sim.total_attempts(), 0, "nothing reached a provider");
    e.shutdown().await;
}
