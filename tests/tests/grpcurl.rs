//! grpcurl (a real gRPC client that knows nothing of Retort but what server reflection tells it)
//! against the gateway's gRPC ingress.
use retort_e2e::*;
use serde_json::Value;

const PROMPT: &str = "hello";

fn request(model: &str) -> String {
    serde_json::json!({"model": model, "messages": [{"role": "ROLE_USER", "text": PROMPT}]}).to_string()
}

#[tokio::test]
async fn reflection_lists_the_services() {
    let e = env().await;
    let addr = e.grpc_addr();
    let run = run_grpcurl(&["-plaintext", &addr, "list"]).await;
    run.assert_ok();
    let services: Vec<&str> = run.stdout.lines().map(str::trim).collect();
    for want in ["retort.v1.Gateway", "grpc.health.v1.Health"] {
        assert!(services.contains(&want), "{want} is not listed:\n{}", run.report());
    }
    assert!(
        services.iter().any(|s| s.starts_with("grpc.reflection.")),
        "the reflection service is not listed:\n{}",
        run.report()
    );
    // Reflection also describes the methods.
    let run = run_grpcurl(&["-plaintext", &addr, "list", "retort.v1.Gateway"]).await;
    run.assert_ok();
    for m in ["Complete", "CompleteStream", "ListModels"] {
        assert!(run.stdout.contains(&format!("retort.v1.Gateway.{m}")), "{m} missing:\n{}", run.report());
    }
    e.shutdown().await;
}

#[tokio::test]
async fn complete_fails_over_and_answers() {
    let e = env().await;
    let expected = e.expected_answer(PROMPT).await;
    let (addr, auth) = (e.grpc_addr(), format!("authorization: Bearer {KEY}"));
    let body = request(ALIAS);
    let run = run_grpcurl(&["-plaintext", "-H", &auth, "-d", &body, &addr, "retort.v1.Gateway/Complete"]).await;
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
    assert!(!failed.is_empty(), "the down target's attempts are reported: {r}");
    assert!(failed.iter().all(|f| f["model"] == DOWN && f["status"] == 503), "{r}");
    // Usage is a uint64, which protobuf JSON renders as a string.
    let output = r["usage"]["outputTokens"].as_str().and_then(|s| s.parse::<u64>().ok());
    assert_eq!(output, Some(expected.split_whitespace().count() as u64), "{r}");
    e.shutdown().await;
}

#[tokio::test]
async fn complete_stream_ends_with_done() {
    let e = env().await;
    let expected = e.expected_answer(PROMPT).await;
    let (addr, auth) = (e.grpc_addr(), format!("authorization: Bearer {KEY}"));
    let body = request(ALIAS);
    let run = run_grpcurl(&["-plaintext", "-H", &auth, "-d", &body, &addr, "retort.v1.Gateway/CompleteStream"]).await;
    run.assert_ok();
    let chunks = json_documents(&run.stdout);
    assert!(chunks.len() >= 3, "start, deltas and done:\n{}", run.report());
    let start = &chunks[0]["start"];
    assert_eq!((start["provider"].as_str(), start["model"].as_str()), (Some("oa"), Some(SERVED)), "{}", chunks[0]);
    let text: String = chunks.iter().filter_map(|c| c["textDelta"].as_str()).collect();
    assert_eq!(text, expected);
    let last = chunks.last().map(|c| &c["done"]).unwrap_or(&Value::Null);
    assert!(last.is_object(), "the last chunk is `done`:\n{}", run.report());
    assert_eq!(last["stopReason"], "STOP_REASON_END_TURN", "{last}");
    assert_eq!(last["model"], SERVED, "{last}");
    assert!(chunks.iter().filter(|c| c.get("done").is_some()).count() == 1, "exactly one done");
    e.shutdown().await;
}

#[tokio::test]
async fn list_models_over_grpc() {
    let e = env().await;
    let (addr, auth) = (e.grpc_addr(), format!("authorization: Bearer {KEY}"));
    let run = run_grpcurl(&["-plaintext", "-H", &auth, &addr, "retort.v1.Gateway/ListModels"]).await;
    run.assert_ok();
    let r = &json_documents(&run.stdout)[0];
    let models = r["models"].as_array().cloned().unwrap_or_default();
    let alias = models.iter().find(|m| m["id"] == ALIAS).unwrap_or_else(|| panic!("{ALIAS} not listed: {r}"));
    assert_eq!(alias["kind"], "alias");
    assert_eq!(alias["targets"], serde_json::json!([DOWN, SERVED]));
    assert!(models.iter().any(|m| m["id"] == SERVED && m["kind"] == "model"), "{r}");
    e.shutdown().await;
}

#[tokio::test]
async fn health_check_says_serving() {
    let e = env().await;
    let addr = e.grpc_addr();
    for service in ["", "retort.v1.Gateway"] {
        let body = serde_json::json!({"service": service}).to_string();
        let run = run_grpcurl(&["-plaintext", "-d", &body, &addr, "grpc.health.v1.Health/Check"]).await;
        run.assert_ok();
        assert_eq!(json_documents(&run.stdout)[0]["status"], "SERVING", "service {service:?}: {}", run.report());
    }
    e.shutdown().await;
}

#[tokio::test]
async fn calls_without_a_key_are_unauthenticated() {
    let e = env().await;
    let addr = e.grpc_addr();
    let body = request(SERVED);
    for method in ["retort.v1.Gateway/Complete", "retort.v1.Gateway/CompleteStream"] {
        let run = run_grpcurl(&["-plaintext", "-d", &body, &addr, method]).await;
        assert!(!run.success() && !run.timed_out, "{method} without a key must fail:\n{}", run.report());
        assert!(run.stderr.contains("Code: Unauthenticated"), "{method}:\n{}", run.report());
        assert!(run.stderr.contains("missing API key"), "{method}:\n{}", run.report());
        let bad = "authorization: Bearer sk-not-a-key";
        let run = run_grpcurl(&["-plaintext", "-H", bad, "-d", &body, &addr, method]).await;
        assert!(!run.success(), "{method} with an unknown key must fail:\n{}", run.report());
        assert!(run.stderr.contains("Code: Unauthenticated"), "{method}:\n{}", run.report());
    }
    assert_eq!(e.sim.total_attempts(), 0, "nothing reached a provider");
    e.shutdown().await;
}
