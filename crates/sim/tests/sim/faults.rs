//! Every fault, on both API shapes where the shape matters.

use std::time::{Duration, Instant};

use retort_sim::{Fault, ModelBehavior};
use serde_json::{Value, json};

use crate::*;

fn faulty(f: &str) -> ModelBehavior {
    ModelBehavior {
        fault: Some(f.parse().unwrap()),
        ..Default::default()
    }
}

async fn post_with_fault(
    s: &retort_sim::SimHandle,
    path: &str,
    body: &Value,
    fault: &str,
) -> reqwest::Response {
    client()
        .post(format!("{}{path}", s.base_url()))
        .header("x-sim-fault", fault)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn rate_limit() {
    let s = sim_with(faulty("rate_limit:1.5")).await;
    let resp = post(&s, "/v1/chat/completions", &chat("m", "x")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1.5");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"].is_string());
    let resp = post(&s, "/v1/messages", &messages("m", "x", false)).await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // Without seconds: no Retry-After.
    let resp = post_with_fault(&s, "/v1/chat/completions", &chat("m", "x"), "rate_limit").await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(s.attempts("m"), 3);
}

#[tokio::test]
async fn error_once() {
    let s = sim_with(faulty("error_once")).await;
    let (status, v) = post_json(&s, "/v1/chat/completions", &chat("m", "x")).await;
    assert_eq!(status, 500);
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(
        post(&s, "/v1/chat/completions", &chat("m", "x"))
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&s, "/v1/messages", &messages("m", "x", false))
            .await
            .status(),
        200
    );
    assert_eq!(s.attempts("m"), 3);
    // reset() re-arms it; Anthropic's shape is api_error.
    s.reset();
    assert_eq!(s.attempts("m"), 0);
    let (status, v) = post_json(&s, "/v1/messages", &messages("m", "x", false)).await;
    assert_eq!(status, 500);
    assert_eq!(v["error"]["type"], "api_error");
    assert_eq!(s.attempts("m"), 1);
}

#[tokio::test]
async fn fail_every_fails_the_first_request_and_every_nth_after_it() {
    let s = sim_with(faulty("fail_every:3")).await;
    let mut statuses = Vec::new();
    for i in 0..7 {
        let resp = if i % 2 == 0 {
            post(&s, "/v1/chat/completions", &chat("m", "x")).await
        } else {
            post(&s, "/v1/messages", &messages("m", "x", false)).await
        };
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [500, 200, 200, 500, 200, 200, 500]);
    // reset() starts the count again.
    s.reset();
    let (status, v) = post_json(&s, "/v1/messages", &messages("m", "x", false)).await;
    assert_eq!(status, 500);
    assert_eq!(v["error"]["type"], "api_error");
}

#[tokio::test]
async fn unavailable() {
    let s = sim_with(faulty("unavailable")).await;
    let (status, v) = post_json(&s, "/v1/chat/completions", &chat("m", "x")).await;
    assert_eq!(status, 503);
    assert!(v["error"]["message"].is_string());
    let (status, v) = post_json(&s, "/v1/messages", &messages("m", "x", true)).await;
    assert_eq!(status, 503);
    assert_eq!(v["error"]["type"], "api_error");
    assert_eq!(s.attempts("m"), 2);
}

#[tokio::test]
async fn unavailable_for() {
    let s = sim_with(faulty("unavailable_for:0.3")).await;
    assert_eq!(
        post(&s, "/v1/chat/completions", &chat("m", "x"))
            .await
            .status(),
        503
    );
    assert_eq!(
        post(&s, "/v1/chat/completions", &chat("m", "x"))
            .await
            .status(),
        503
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        post(&s, "/v1/chat/completions", &chat("m", "x"))
            .await
            .status(),
        200
    );
    s.reset();
    assert_eq!(
        post(&s, "/v1/chat/completions", &chat("m", "x"))
            .await
            .status(),
        503
    );
}

#[tokio::test]
async fn reset_closes_without_response() {
    let s = sim_with(faulty("reset")).await;
    for (path, body) in [
        ("/v1/chat/completions", chat("m", "x")),
        ("/v1/messages", messages("m", "x", true)),
    ] {
        let r = client()
            .post(format!("{}{path}", s.base_url()))
            .json(&body)
            .send()
            .await;
        let e = r.expect_err("a reset connection must not produce a response");
        assert!(!e.is_timeout(), "{e:?}");
    }
    assert_eq!(s.attempts("m"), 2);
    // The server is still fine for other models.
    assert_eq!(
        post(&s, "/v1/chat/completions", &chat("other", "x"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn reset_over_http2() {
    let s = sim().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("{}/v1/chat/completions", s.base_url());
    let ok = h2.post(&url).json(&chat("m", "x")).send().await.unwrap();
    assert_eq!(ok.version(), reqwest::Version::HTTP_2);
    assert_eq!(ok.status(), 200);
    let r = h2
        .post(&url)
        .header("x-sim-fault", "reset")
        .json(&chat("m", "x"))
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(
        h2.post(&url)
            .json(&chat("m", "x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn hang() {
    let s = sim_with(faulty("hang")).await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = c
        .post(format!("{}/v1/chat/completions", s.base_url()))
        .json(&chat("m", "x"))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(s.attempts("m"), 1);
}

#[tokio::test]
async fn slow_first_token() {
    let s = sim_with(faulty("slow_first_token:400")).await;
    for (path, body) in [
        ("/v1/chat/completions", chat_stream("m", "x")),
        ("/v1/chat/completions", chat("m", "x")),
    ] {
        let t0 = Instant::now();
        let resp = post(&s, path, &body).await;
        let headers_at = t0.elapsed();
        assert_eq!(resp.status(), 200);
        assert!(
            headers_at < Duration::from_millis(300),
            "headers took {headers_at:?}"
        );
        let body = resp.text().await.unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(400));
        assert!(!body.is_empty());
    }
}

#[tokio::test]
async fn cut_after_streaming() {
    let s = sim_with(faulty("cut_after:3")).await;
    let (text, err) =
        read_stream(post(&s, "/v1/chat/completions", &chat_stream("m", "cut")).await).await;
    assert!(err.is_some(), "the body must end in an error");
    let evs = events(&text);
    let deltas = evs
        .iter()
        .filter_map(Event::json)
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(deltas, 3);
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("finish_reason\":\"stop"));

    let (text, err) =
        read_stream(post(&s, "/v1/messages", &messages("m", "cut", true)).await).await;
    assert!(err.is_some());
    let evs = events(&text);
    assert_eq!(
        evs.iter()
            .filter(|e| e.name.as_deref() == Some("content_block_delta"))
            .count(),
        3
    );
    assert!(
        !evs.iter()
            .any(|e| e.name.as_deref() == Some("message_stop"))
    );

    let body = json!({ "model": "m", "input": "cut", "stream": true });
    let (text, err) = read_stream(post(&s, "/v1/responses", &body).await).await;
    assert!(err.is_some());
    assert_eq!(
        events(&text)
            .iter()
            .filter(|e| e.name.as_deref() == Some("response.output_text.delta"))
            .count(),
        3
    );
}

#[tokio::test]
async fn cut_after_non_streaming() {
    let s = sim_with(faulty("cut_after:3")).await;
    let resp = post(&s, "/v1/chat/completions", &chat("m", "cut")).await;
    assert_eq!(resp.status(), 200);
    let (text, err) = read_stream(resp).await;
    assert!(err.is_some());
    assert!(text.starts_with('{') && serde_json::from_str::<Value>(&text).is_err());
    let r = post(&s, "/v1/messages", &messages("m", "cut", false))
        .await
        .json::<Value>()
        .await;
    assert!(r.is_err());
}

#[tokio::test]
async fn stall_after() {
    let s = sim_with(faulty("stall_after:2")).await;
    let resp = post(&s, "/v1/chat/completions", &chat_stream("m", "stall")).await;
    let mut got = String::new();
    let mut stream = resp.bytes_stream();
    use futures::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
            Ok(Some(Ok(b))) => got.push_str(std::str::from_utf8(&b).unwrap()),
            Ok(other) => panic!("the stream must stall, not end: {other:?}"),
            Err(_) => break,
        }
    }
    let evs = events(&got);
    assert_eq!(chat_stream_text(&evs).split_whitespace().count(), 2);
    assert!(!got.contains("finish_reason\":\"stop"));
}

#[tokio::test]
async fn malformed_chunk() {
    let s = sim_with(ModelBehavior {
        answer_tokens: 6,
        ..faulty("malformed_chunk:3")
    })
    .await;
    let full = post_json(&s, "/v1/chat/completions", &chat("m", "garbage"))
        .await
        .1;
    let full = full["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let (text, err) =
        read_stream(post(&s, "/v1/chat/completions", &chat_stream("m", "garbage")).await).await;
    assert!(err.is_none());
    let evs = events(&text);
    let bad: Vec<&Event> = evs
        .iter()
        .filter(|e| e.data != "[DONE]" && e.json().is_none())
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].data, "{\"this is not json");
    // It comes after the third token, and the answer is still complete.
    let pos = evs.iter().position(|e| e.json().is_none()).unwrap();
    assert_eq!(chat_stream_text(&evs[..pos]).split_whitespace().count(), 3);
    assert_eq!(chat_stream_text(&evs), full);
    assert_eq!(evs.last().unwrap().data, "[DONE]");

    let (text, _) =
        read_stream(post(&s, "/v1/messages", &messages("m", "garbage", true)).await).await;
    let evs = events(&text);
    let bad: Vec<&Event> = evs.iter().filter(|e| e.json().is_none()).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].name.as_deref(), Some("content_block_delta"));
    assert_eq!(bad[0].data, "{broken");
    let answer: String = evs
        .iter()
        .filter_map(Event::json)
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(answer, full);
    assert_eq!(evs.last().unwrap().name.as_deref(), Some("message_stop"));
}

#[tokio::test]
async fn missing_done() {
    let s = sim_with(faulty("missing_done")).await;
    let (text, err) =
        read_stream(post(&s, "/v1/chat/completions", &chat_stream("m", "done?")).await).await;
    assert!(err.is_none(), "the body ends cleanly");
    assert!(!text.contains("[DONE]"));
    let js: Vec<Value> = events(&text).iter().map(|e| e.json().unwrap()).collect();
    assert!(
        js.iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
    assert_eq!(js.last().unwrap()["usage"]["completion_tokens"], 16);

    let (text, err) =
        read_stream(post(&s, "/v1/messages", &messages("m", "done?", true)).await).await;
    assert!(err.is_none());
    let evs = events(&text);
    assert_eq!(evs.last().unwrap().name.as_deref(), Some("message_delta"));
    assert!(
        !evs.iter()
            .any(|e| e.name.as_deref() == Some("message_stop"))
    );
}

#[tokio::test]
async fn context_length() {
    // A model with a window: only long inputs fail.
    let s = sim_with(ModelBehavior {
        context_window: 5,
        ..Default::default()
    })
    .await;
    assert_eq!(
        post(&s, "/v1/chat/completions", &chat("m", "one two three"))
            .await
            .status(),
        200
    );
    let (status, v) = post_json(
        &s,
        "/v1/chat/completions",
        &chat("m", "one two three four five six"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "messages");
    assert_eq!(
        v["error"]["message"],
        "This model's maximum context length is 5 tokens. However, your messages resulted in 6 tokens."
    );
    let (status, v) = post_json(
        &s,
        "/v1/messages",
        &messages("m", "one two three four five six", false),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "prompt is too long: 6 tokens > 5 maximum"
    );
    // The fault without a window: always.
    let s = sim_with(faulty("context_length")).await;
    let (status, v) = post_json(&s, "/v1/chat/completions", &chat("m", "x")).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
}

#[tokio::test]
async fn content_policy() {
    let s = sim_with(faulty("content_policy")).await;
    let (status, v) = post_json(&s, "/v1/chat/completions", &chat("m", "x")).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "content_policy_violation");
    assert_eq!(
        v["error"]["message"],
        "Your request was rejected as a result of our safety system."
    );
    let (status, v) = post_json(&s, "/v1/messages", &messages("m", "x", false)).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "Output blocked by content filtering policy"
    );
}

#[tokio::test]
async fn reject_prefill() {
    let s = sim_with(faulty("reject_prefill")).await;
    assert_eq!(
        post(&s, "/v1/chat/completions", &chat("m", "x"))
            .await
            .status(),
        200
    );
    let body = json!({ "model": "m", "max_tokens": 10, "messages": [
        { "role": "user", "content": "x" }, { "role": "assistant", "content": "Sure," },
    ]});
    let (status, v) = post_json(&s, "/v1/messages", &body).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not support assistant message prefill")
    );
    let (status, v) = post_json(&s, "/v1/chat/completions", &body).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn not_found_and_strict_models() {
    let s = sim_with(faulty("not_found")).await;
    let (status, v) = post_json(&s, "/v1/chat/completions", &chat("m", "x")).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    let (status, v) = post_json(&s, "/v1/messages", &messages("m", "x", false)).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["type"], "not_found_error");

    let mut cfg = retort_sim::SimConfig {
        strict_models: true,
        ..Default::default()
    };
    cfg.models.insert("known".into(), ModelBehavior::default());
    let s = retort_sim::spawn(cfg).await.unwrap();
    assert_eq!(
        post(&s, "/v1/chat/completions", &chat("known", "x"))
            .await
            .status(),
        200
    );
    let (status, v) = post_json(&s, "/v1/chat/completions", &chat("unknown", "x")).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(s.attempts("unknown"), 1);
}

#[tokio::test]
async fn header_overrides() {
    let s = sim_with(faulty("unavailable")).await;
    // `none` lifts the configured fault; a header fault applies to a healthy model.
    assert_eq!(
        post_with_fault(&s, "/v1/chat/completions", &chat("m", "x"), "none")
            .await
            .status(),
        200
    );
    assert_eq!(
        post_with_fault(&s, "/v1/chat/completions", &chat("ok", "x"), "rate_limit:2")
            .await
            .status(),
        429
    );
    assert_eq!(
        post_with_fault(&s, "/v1/chat/completions", &chat("ok", "x"), "nonsense")
            .await
            .status(),
        400
    );
    let t0 = Instant::now();
    let resp = client()
        .post(format!("{}/v1/chat/completions", s.base_url()))
        .header("x-sim-latency-ms", "150")
        .json(&chat("ok", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_eq!(Fault::CutAfter { tokens: 5 }.to_string(), "cut_after:5");
}

#[tokio::test]
async fn pacing() {
    let s = sim_with(ModelBehavior {
        tokens_per_sec: 100.0,
        answer_tokens: 11,
        latency_ms: 50,
        ..Default::default()
    })
    .await;
    let t0 = Instant::now();
    let (text, _) =
        read_stream(post(&s, "/v1/chat/completions", &chat_stream("m", "x")).await).await;
    // 50 ms latency plus 10 gaps of 10 ms.
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(chat_stream_text(&events(&text)).split(' ').count(), 11);
}
