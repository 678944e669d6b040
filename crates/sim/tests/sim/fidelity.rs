//! Behaving like the real APIs where clients depend on it: mid-conversation system messages (only
//! with the beta, refused in Anthropic's words without it), thinking on request, prompt caching
//! (`cache_control` writes, then reads), structured output on both APIs, and the last request
//! kept as received.

use retort_sim::ModelBehavior;
use serde_json::{Value, json};

use crate::*;

async fn post_with(sim: &retort_sim::SimHandle, beta: Option<&str>, body: &Value) -> (u16, Value) {
    let mut r = client()
        .post(format!("{}/v1/messages", sim.base_url()))
        .json(body);
    if let Some(b) = beta {
        r = r.header("anthropic-beta", b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn mid_conversation_system_messages_need_the_beta() {
    let s = sim().await;
    let body = json!({
        "model": "m",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "again"},
        ],
    });
    let (status, v) = post_with(&s, None, &body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "messages.1.role: Input should be 'user' or 'assistant'"
    );
    let (status, v) = post_with(
        &s,
        Some("claude-code-20250219,mid-conversation-system-2026-04-07"),
        &body,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // The last request is kept as received, with the beta header.
    let last = s.last_request("m").unwrap();
    assert_eq!(last["path"], "/v1/messages");
    assert_eq!(last["body"], body);
    assert_eq!(
        last["headers"]["anthropic-beta"],
        "claude-code-20250219,mid-conversation-system-2026-04-07"
    );
}

#[tokio::test]
async fn thinking_on_request_and_its_budget_checked() {
    let s = sim().await;
    let mut body = json!({
        "model": "m",
        "max_tokens": 4000,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": "think"}],
    });
    let (status, v) = post_json(&s, "/v1/messages", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"][0]["type"], "thinking", "{v}");
    assert!(
        v["content"][0]["signature"]
            .as_str()
            .unwrap()
            .starts_with("sig_")
    );
    body["max_tokens"] = json!(2000);
    let (status, v) = post_json(&s, "/v1/messages", &body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        v["error"]["message"],
        "`max_tokens` must be greater than `thinking.budget_tokens`"
    );
}

#[tokio::test]
async fn cache_control_writes_the_prefix_then_reads_it() {
    let s = sim_with(ModelBehavior::default()).await;
    let body = |q: &str| {
        json!({
            "model": "m",
            "max_tokens": 50,
            "system": [{"type": "text", "text": "a long stable system prompt with many words in it", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": q}],
        })
    };
    let (_, first) = post_json(&s, "/v1/messages", &body("one")).await;
    let written = first["usage"]["cache_creation_input_tokens"]
        .as_u64()
        .unwrap();
    assert!(written > 0, "{first}");
    assert_eq!(first["usage"]["cache_read_input_tokens"], 0);
    let (_, second) = post_json(&s, "/v1/messages", &body("two")).await;
    assert_eq!(
        second["usage"]["cache_read_input_tokens"], written,
        "{second}"
    );
    assert_eq!(second["usage"]["cache_creation_input_tokens"], 0);
}

#[tokio::test]
async fn structured_output_on_both_apis() {
    let s = sim().await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}}, "required": ["city", "temp"]});
    let (status, v) = post_json(
        &s,
        "/v1/messages",
        &json!({
            "model": "m",
            "max_tokens": 100,
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
            "messages": [{"role": "user", "content": "weather"}],
        }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let out: Value = serde_json::from_str(v["content"][0]["text"].as_str().unwrap()).unwrap();
    assert!(out["city"].is_string() && out["temp"].is_i64(), "{out}");
    let (status, v) = post_json(
        &s,
        "/v1/chat/completions",
        &json!({
            "model": "m",
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": schema}},
            "messages": [{"role": "user", "content": "weather"}],
        }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let out: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(out["city"].is_string() && out["temp"].is_i64(), "{out}");
    let (status, v) = post_json(
        &s,
        "/v1/chat/completions",
        &json!({"model": "m", "response_format": {"type": "xml"}, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'json_schema'"),
        "{v}"
    );
}
