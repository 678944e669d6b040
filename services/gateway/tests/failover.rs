//! One test per fault class: what the caller sees, and the attempts the simulator saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use serde_json::json;

const FAST: &str = r#"
    [routing]
    max_retries_per_target = 1
    backoff_base_ms = 10
    backoff_max_ms = 50
    first_token_timeout_ms = 500
    stall_timeout_ms = 300
    total_timeout_ms = 10000
    [circuit]
    failure_threshold = 100
"#;

fn served(body: &serde_json::Value) -> (&str, &str) {
    (
        body["retort"]["provider"].as_str().unwrap_or(""),
        body["retort"]["model"].as_str().unwrap_or(""),
    )
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_honoured_then_fails_over() {
    let e = env(
        r#"[models."rl"]
        fault = "rate_limit:0.3""#,
        &format!("[models.rl]\nprovider = \"oa\"\n[models.ok]\nprovider = \"oa\"\n[aliases.a]\ntargets = [\"rl\", \"ok\"]\n{FAST}"),
    )
    .await;
    let t0 = std::time::Instant::now();
    let (status, _, body) = e.chat(json!({"model": "a", "messages": user("hi")})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served(&body), ("oa", "ok"));
    assert_eq!(
        e.sim.attempts("rl"),
        2,
        "one try and one retry on the rate-limited target"
    );
    assert_eq!(e.sim.attempts("ok"), 1);
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(300),
        "the retry waited for Retry-After"
    );
    assert_eq!(
        body["retort"]["failed_attempts"].as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn rate_limit_without_retry_after_backs_off_then_fails_over() {
    let e = env(
        r#"[models."rl"]
        fault = "rate_limit""#,
        &format!("[models.rl]\nprovider = \"oa\"\n[models.ok]\nprovider = \"oa\"\n[aliases.a]\ntargets = [\"rl\", \"ok\"]\n{FAST}"),
    )
    .await;
    let (status, _, body) = e.chat(json!({"model": "a", "messages": user("hi")})).await;
    assert_eq!(status, 200);
    assert_eq!(served(&body).1, "ok");
    assert_eq!(e.sim.attempts("rl"), 2);
}

#[tokio::test]
async fn long_retry_after_moves_on_without_waiting() {
    let e = env(
        r#"[models."rl"]
        fault = "rate_limit:60""#,
        &format!("[models.rl]\nprovider = \"oa\"\n[models.ok]\nprovider = \"oa\"\n[aliases.a]\ntargets = [\"rl\", \"ok\"]\n{FAST}"),
    )
    .await;
    let (status, _, body) = e.chat(json!({"model": "a", "messages": user("hi")})).await;
    assert_eq!(status, 200);
    assert_eq!(served(&body).1, "ok");
    assert_eq!(
        e.sim.attempts("rl"),
        1,
        "a 60 s Retry-After is not waited for, and the target is not hammered"
    );
}

#[tokio::test]
async fn all_targets_rate_limited_gives_429_with_retry_after() {
    let e = env(
        r#"[models."rl"]
        fault = "rate_limit:60""#,
        &format!("[models.rl]\nprovider = \"oa\"\n{FAST}"),
    )
    .await;
    let (status, headers, body) = e.chat(json!({"model": "rl", "messages": user("hi")})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("60")
    );
}

#[tokio::test]
async fn server_error_once_is_retried_on_the_same_target() {
    let e = env(
        r#"[models."once"]
        fault = "error_once""#,
        &format!("[models.once]\nprovider = \"oa\"\n{FAST}"),
    )
    .await;
    let (status, headers, body) = e
        .chat(json!({"model": "once", "messages": user("hi")}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(e.sim.attempts("once"), 2);
    assert_eq!(headers["x-retort-failed-attempts"], "1");
    assert_eq!(body["retort"]["failed_attempts"][0]["status"], 500);
    // Failed attempts are not completions: usage is the successful attempt's only.
    assert_eq!(body["usage"]["completion_tokens"], 16);
}

#[tokio::test]
async fn persistent_503_fails_over_and_all_down_is_502() {
    let e = env(
        r#"[models."down"]
        fault = "unavailable""#,
        &format!(
            "[models.down]\nprovider = \"oa\"\n[models.ok]\nprovider = \"an\"\n[aliases.a]\ntargets = [\"down\", \"ok\"]\n{FAST}"
        ),
    )
    .await;
    let (status, _, body) = e.chat(json!({"model": "a", "messages": user("hi")})).await;
    assert_eq!(status, 200);
    assert_eq!(
        served(&body),
        ("an", "ok"),
        "an OpenAI-shaped request served by an Anthropic-shaped target"
    );
    assert_eq!(e.sim.attempts("down"), 2);
    let (status, _, body) = e
        .chat(json!({"model": "down", "messages": user("hi")}))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "{body}"
    );
}

#[tokio::test]
async fn circuit_opens_skips_target_and_recovers_after_probe() {
    let e = env(
        r#"[models."blip"]
        fault = "unavailable_for:0.4""#,
        r#"
        [models.blip]
        provider = "oa"
        [models.ok]
        provider = "oa"
        [aliases.a]
        targets = ["blip", "ok"]
        [routing]
        max_retries_per_target = 0
        [circuit]
        failure_threshold = 2
        open_ms = 600
        "#,
    )
    .await;
    for _ in 0..2 {
        let (status, _, _) = e.chat(json!({"model": "a", "messages": user("hi")})).await;
        assert_eq!(status, 200);
    }
    assert_eq!(e.sim.attempts("blip"), 2);
    let metrics = e
        .http
        .get(e.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"retort_circuit_state{provider="oa",model="blip"} 1"#),
        "{metrics}"
    );
    // Open: the target is skipped, traffic goes straight to the next.
    let (status, _, body) = e.chat(json!({"model": "a", "messages": user("hi")})).await;
    assert_eq!(status, 200);
    assert_eq!(served(&body).1, "ok");
    assert_eq!(
        e.sim.attempts("blip"),
        2,
        "no attempt while the circuit is open"
    );
    // After open_ms one probe goes through; the simulator has recovered, so the circuit closes.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let (status, _, body) = e.chat(json!({"model": "a", "messages": user("hi")})).await;
    assert_eq!(status, 200);
    assert_eq!(served(&body).1, "blip");
    assert_eq!(e.sim.attempts("blip"), 3);
}

#[tokio::test]
async fn reset_before_headers_fails_over() {
    let e = env(
        r#"[models."rst"]
        fault = "reset""#,
        &format!("[models.rst]\nprovider = \"oa\"\n[models.ok]\nprovider = \"oa\"\n[aliases.a]\ntargets = [\"rst\", \"ok\"]\n{FAST}"),
    )
    .await;
    let (status, _, body) = e.chat(json!({"model": "a", "messages": user("hi")})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served(&body).1, "ok");
    assert_eq!(e.sim.attempts("rst"), 2);
}

#[tokio::test]
async fn no_answer_times_out_and_fails_over() {
    let e = env(
        r#"[models."hang"]
        fault = "hang""#,
        &format!("[models.hang]\nprovider = \"oa\"\n[models.ok]\nprovider = \"oa\"\n[aliases.a]\ntargets = [\"hang\", \"ok\"]\n{FAST}"),
    )
    .await;
    let (status, _, body) = e.chat(json!({"model": "a", "messages": user("hi")})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served(&body).1, "ok");
    assert_eq!(
        e.sim.attempts("hang"),
        1,
        "a target silent past its timeout is not retried"
    );
    assert!(
        body["retort"]["failed_attempts"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("timeout"),
        "{body}"
    );
}

#[tokio::test]
async fn slow_first_token_is_replaced_before_any_byte() {
    let e = env(
        r#"[models."slow"]
        fault = "slow_first_token:3000""#,
        &format!("[models.slow]\nprovider = \"oa\"\n[models.ok]\nprovider = \"oa\"\n[aliases.a]\ntargets = [\"slow\", \"ok\"]\n{FAST}"),
    )
    .await;
    let expected = e.expected_answer("hello there").await;
    let (status, data) = e
        .chat_stream(json!({"model": "a", "stream": true, "messages": user("hello there")}))
        .await;
    assert_eq!(status, 200);
    let (text, done, err) = stream_text(&data);
    assert_eq!(text, expected);
    assert!(done && err.is_none());
    assert_eq!(
        e.sim.attempts("slow"),
        1,
        "no first token within the timeout: the next target at once"
    );
}

#[tokio::test]
async fn stream_cut_mid_answer_is_continued_on_a_prefill_target() {
    let e = env(
        r#"[models."cut"]
        fault = "cut_after:5""#,
        &format!("[models.cut]\nprovider = \"oa\"\n[models.cont]\nprovider = \"an\"\n[aliases.a]\ntargets = [\"cut\", \"cont\"]\n{FAST}"),
    )
    .await;
    let prompt = "tell me a story about lighthouses";
    let expected = e.expected_answer(prompt).await;
    let (status, data) = e
        .chat_stream(json!({"model": "a", "stream": true, "messages": user(prompt)}))
        .await;
    assert_eq!(status, 200);
    let (text, done, err) = stream_text(&data);
    assert!(err.is_none(), "{data:?}");
    assert!(done);
    assert_eq!(
        text, expected,
        "prefix from the cut target plus the continuation is the whole answer, once"
    );
    // cut was tried (and retried: the retry continued from the prefill? no — openai targets have no prefill)
    assert_eq!(
        e.sim.attempts("cut"),
        1,
        "after content reached the caller only prefill targets may go on"
    );
    assert_eq!(e.sim.attempts("cont"), 1);
    // The final chunk names the target that finished the answer and lists the cut one, with what
    // it contributed.
    let last = data
        .iter()
        .rev()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find(|v| v.get("retort").is_some())
        .expect("a final chunk naming who served");
    assert_eq!(last["retort"]["model"], "cont", "{last}");
    assert_eq!(
        last["retort"]["failed_attempts"][0]["model"], "cut",
        "{last}"
    );
    // Estimated from the text it streamed (about four bytes a token).
    assert!(
        last["retort"]["failed_attempts"][0]["output_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{last}"
    );
}

#[tokio::test]
async fn stream_cut_without_a_continuation_target_ends_with_an_error_event() {
    let e = env(
        r#"[models."cut"]
        fault = "cut_after:5""#,
        &format!("[models.cut]\nprovider = \"oa\"\n[models.other]\nprovider = \"oa\"\n[aliases.a]\ntargets = [\"cut\", \"other\"]\n{FAST}"),
    )
    .await;
    let (status, data) = e
        .chat_stream(json!({"model": "a", "stream": true, "messages": user("hello")}))
        .await;
    assert_eq!(status, 200);
    let (text, done, err) = stream_text(&data);
    assert!(!done, "never a [DONE] after a truncated answer: {data:?}");
    assert!(err.is_some(), "an explicit error event: {data:?}");
    assert_eq!(text.split_whitespace().count(), 5);
    assert_eq!(e.sim.attempts("other"), 0);
}

#[tokio::test]
async fn stream_cut_before_any_token_restarts_cleanly() {
    let e = env(
        r#"[models."cut0"]
        fault = "cut_after:0""#,
        &format!("[models.cut0]\nprovider = \"oa\"\n[models.ok]\nprovider = \"oa\"\n[aliases.a]\ntargets = [\"cut0\", \"ok\"]\n{FAST}"),
    )
    .await;
    let expected = e.expected_answer("hello").await;
    let (status, data) = e
        .chat_stream(json!({"model": "a", "stream": true, "messages": user("hello")}))
        .await;
    assert_eq!(status, 200);
    let (text, done, err) = stream_text(&data);
    assert_eq!(text, expected);
    assert!(done && err.is_none());
    assert_eq!(e.sim.attempts("cut0"), 2);
}

#[tokio::test]
async fn stalled_stream_times_out_and_continues() {
    let e = env(
        r#"[models."stall"]
        fault = "stall_after:3""#,
        &format!("[models.stall]\nprovider = \"oa\"\n[models.cont]\nprovider = \"an\"\n[aliases.a]\ntargets = [\"stall\", \"cont\"]\n{FAST}"),
    )
    .await;
    let expected = e.expected_answer("why is the sky blue").await;
    let (status, data) = e
        .chat_stream(json!({"model": "a", "stream": true, "messages": user("why is the sky blue")}))
        .await;
    assert_eq!(status, 200);
    let (text, done, err) = stream_text(&data);
    assert!(err.is_none() && done, "{data:?}");
    assert_eq!(text, expected);
}

#[tokio::test]
async fn malformed_chunk_is_skipped() {
    let e = env(
        r#"[models."mal"]
        fault = "malformed_chunk:3""#,
        &format!("[models.mal]\nprovider = \"oa\"\n{FAST}"),
    )
    .await;
    let expected = e.expected_answer("hello").await;
    let (status, data) = e
        .chat_stream(json!({"model": "mal", "stream": true, "messages": user("hello")}))
        .await;
    assert_eq!(status, 200);
    let (text, done, err) = stream_text(&data);
    assert_eq!(text, expected);
    assert!(done && err.is_none());
    assert_eq!(e.sim.attempts("mal"), 1);
}

#[tokio::test]
async fn missing_done_is_finalised_promptly() {
    let e = env(
        r#"[models."nodone"]
        fault = "missing_done""#,
        &format!("[models.nodone]\nprovider = \"oa\"\n{FAST}"),
    )
    .await;
    let expected = e.expected_answer("hello").await;
    let (status, data) = e
        .chat_stream(json!({"model": "nodone", "stream": true, "stream_options": {"include_usage": true}, "messages": user("hello")}))
        .await;
    assert_eq!(status, 200);
    let (text, done, err) = stream_text(&data);
    assert_eq!(text, expected);
    assert!(
        done && err.is_none(),
        "the caller gets a proper end: {data:?}"
    );
    assert_eq!(e.sim.attempts("nodone"), 1);
    let usage: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 16, "{usage}");
}

#[tokio::test]
async fn context_length_goes_only_to_a_larger_window() {
    let e = env(
        r#"
        [models."small"]
        context_window = 3
        [models."small2"]
        context_window = 3
        "#,
        &format!(
            r#"
            [models.small]
            provider = "oa"
            context_window = 8000
            [models.small2]
            provider = "an"
            context_window = 8000
            [models.big]
            provider = "oa"
            context_window = 200000
            [aliases.a]
            targets = ["small", "small2", "big"]
            {FAST}"#
        ),
    )
    .await;
    let (status, _, body) = e
        .chat(json!({"model": "a", "messages": user("this prompt has more than three words")}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served(&body).1, "big");
    assert_eq!(e.sim.attempts("small"), 1, "never the same model again");
    assert_eq!(
        e.sim.attempts("small2"),
        0,
        "a target with no larger window is skipped"
    );
    assert_eq!(e.sim.attempts("big"), 1);
}

#[tokio::test]
async fn content_policy_is_not_retried_and_reason_reaches_caller() {
    let e = env(
        r#"[models."policy"]
        fault = "content_policy""#,
        &format!("[models.policy]\nprovider = \"an\"\n[models.ok]\nprovider = \"oa\"\n[aliases.a]\ntargets = [\"policy\", \"ok\"]\n{FAST}"),
    )
    .await;
    let (status, _, body) = e.chat(json!({"model": "a", "messages": user("hi")})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "content_policy_violation");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("content filtering policy"),
        "{body}"
    );
    assert_eq!(e.sim.attempts("policy"), 1);
    assert_eq!(e.sim.attempts("ok"), 0);
}

#[tokio::test]
async fn prefill_rejection_moves_a_continuation_to_the_next_target() {
    let e = env(
        r#"
        [models."cut"]
        fault = "cut_after:4"
        [models."noprefill"]
        fault = "reject_prefill"
        "#,
        &format!(
            "[models.cut]\nprovider = \"oa\"\n[models.noprefill]\nprovider = \"an\"\n[models.cont]\nprovider = \"an\"\n[aliases.a]\ntargets = [\"cut\", \"noprefill\", \"cont\"]\n{FAST}"
        ),
    )
    .await;
    let expected = e.expected_answer("hello world").await;
    let (status, data) = e
        .chat_stream(json!({"model": "a", "stream": true, "messages": user("hello world")}))
        .await;
    assert_eq!(status, 200);
    let (text, done, err) = stream_text(&data);
    assert!(done && err.is_none(), "{data:?}");
    assert_eq!(text, expected);
    assert_eq!(
        e.sim.attempts("noprefill"),
        1,
        "a prefill rejection is not retried on the same target"
    );
    assert_eq!(e.sim.attempts("cont"), 1);
}

#[tokio::test]
async fn vanished_model_fails_over_without_retry() {
    let e = env(
        r#"[models."gone"]
        fault = "not_found""#,
        &format!("[models.gone]\nprovider = \"oa\"\n[models.ok]\nprovider = \"oa\"\n[aliases.a]\ntargets = [\"gone\", \"ok\"]\n{FAST}"),
    )
    .await;
    let (status, _, body) = e.chat(json!({"model": "a", "messages": user("hi")})).await;
    assert_eq!(status, 200);
    assert_eq!(served(&body).1, "ok");
    assert_eq!(e.sim.attempts("gone"), 1);
}

#[tokio::test]
async fn deadline_bounds_the_whole_request() {
    let e = env(
        r#"[models."hang"]
        fault = "hang""#,
        r#"
        [models.hang]
        provider = "oa"
        [routing]
        first_token_timeout_ms = 200
        stall_timeout_ms = 200
        total_timeout_ms = 300
        max_retries_per_target = 5
        backoff_base_ms = 10
        "#,
    )
    .await;
    let (status, _, body) = e
        .chat(json!({"model": "hang", "messages": user("hi")}))
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    assert!(e.sim.attempts("hang") <= 2);
}
