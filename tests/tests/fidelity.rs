//! Pass-through fidelity (#19): a corpus of real-shaped request bodies per ingress (Claude Code's
//! and Codex's among them) goes through the gateway to the simulator, and what the simulator
//! received is compared field by field with what the caller sent (same API: only the model and
//! the streaming flags may change) or with the expected translation (across APIs). A field the
//! target's API cannot honour is refused naming it, in the caller's error shape.
#![allow(clippy::expect_used, clippy::unwrap_used)]
use retort_tests::*;
use serde_json::{Value, json};

/// Aliases over the one simulator: `frontier` on the Anthropic API, `codex` on the OpenAI API.
const MODELS: &str = r#"
[models."claude-up"]
provider = "an"
[models."gpt-up"]
provider = "oa"
[aliases.frontier]
targets = ["claude-up"]
[aliases.codex]
targets = ["gpt-up"]
[circuit]
failure_threshold = 1000
"#;

const BETA: &str = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,mid-conversation-system-2026-04-07";

async fn env() -> Env {
    env_with("strict_models = false", MODELS).await
}

/// Sends `body` to `path` and returns (status, JSON body or the raw SSE text as a string).
async fn send(e: &Env, path: &str, body: &Value) -> (u16, Value) {
    let r = e
        .http
        .post(e.url(path))
        .bearer_auth(KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", BETA)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// What the simulator last received for `model`: (body, headers).
fn received(e: &Env, model: &str) -> (Value, Value) {
    let r = e
        .sim
        .last_request(model)
        .unwrap_or_else(|| panic!("the simulator received nothing for {model}"));
    (r["body"].clone(), r["headers"].clone())
}

/// Field by field: every field of `sent` reached the upstream unchanged, but for `changed` (which
/// must hold the given values), and nothing else was added.
fn assert_same(sent: &Value, got: &Value, changed: &[(&str, Value)]) {
    let (s, g) = (sent.as_object().unwrap(), got.as_object().unwrap());
    for (k, v) in s {
        if changed.iter().any(|(c, _)| c == k) {
            continue;
        }
        assert_eq!(g.get(k), Some(v), "field {k} changed on the way");
    }
    for (k, v) in changed {
        assert_eq!(g.get(*k), Some(v), "field {k}");
    }
    for k in g.keys() {
        assert!(
            s.contains_key(k) || changed.iter().any(|(c, _)| c == k),
            "field {k} was added: {got}"
        );
    }
}

/// Claude Code's request, as captured (abridged): tools, thinking, cache_control on system blocks
/// and messages, context_management, metadata, a mid-conversation system message.
fn claude_code(stream: bool) -> Value {
    json!({
        "model": "frontier",
        "max_tokens": 32000,
        "stream": stream,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "user_abc_account_def_session_0f6c2a4e-1b7e-4d3b-9b1a-2f1c0e7d9a11"},
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering tasks.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "tools": [
            {"name": "Bash", "description": "Executes a bash command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"], "additionalProperties": false, "$schema": "http://json-schema.org/draft-07/schema#"}},
            {"name": "Read", "description": "Reads a file", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}, "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                {"type": "text", "text": "list the files", "cache_control": {"type": "ephemeral"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should run ls.", "signature": "sig_abc"},
                {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "README.md\nsrc"}]},
            ]},
            {"role": "system", "content": "The user switched to plan mode."},
            {"role": "user", "content": "now summarise"},
        ],
    })
}

#[tokio::test]
async fn same_api_bodies_reach_the_upstream_unchanged() {
    let e = env().await;

    // Anthropic → Anthropic, whole and streamed: Claude Code's body.
    for stream in [false, true] {
        let sent = claude_code(stream);
        let (status, resp) = send(&e, "/v1/messages", &sent).await;
        assert_eq!(status, 200, "{resp}");
        let (got, headers) = received(&e, "claude-up");
        assert_same(&sent, &got, &[("model", json!("claude-up"))]);
        assert_eq!(
            headers["anthropic-beta"], BETA,
            "the beta header is forwarded"
        );
    }

    // Anthropic structured output and a field added after this gateway was written.
    let sent = json!({
        "model": "frontier",
        "max_tokens": 200,
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"], "additionalProperties": false}}},
        "a_future_field": {"enabled": true},
        "messages": [{"role": "user", "content": "title this"}],
    });
    let (status, resp) = send(&e, "/v1/messages", &sent).await;
    assert_eq!(status, 200, "{resp}");
    let title: Value = serde_json::from_str(resp["content"][0]["text"].as_str().unwrap()).unwrap();
    assert!(title["title"].is_string(), "{resp}");
    assert_same(
        &sent,
        &received(&e, "claude-up").0,
        &[("model", json!("claude-up"))],
    );

    // Chat Completions → Chat Completions: structured output, logprobs, seed, tools, whole and
    // streamed (a stream asks the upstream for usage, which metering needs).
    let chat = json!({
        "model": "codex",
        "messages": [
            {"role": "developer", "content": "be exact"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "strict": true, "schema": {"type": "object", "properties": {"t": {"type": "number"}}, "required": ["t"], "additionalProperties": false}}},
        "tools": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object", "properties": {}}}}],
        "parallel_tool_calls": false,
        "logprobs": true,
        "top_logprobs": 2,
        "seed": 42,
        "frequency_penalty": 0.5,
        "max_completion_tokens": 300,
        "prompt_cache_key": "abc",
    });
    let (status, resp) = send(&e, "/v1/chat/completions", &chat).await;
    assert_eq!(status, 200, "{resp}");
    let w: Value =
        serde_json::from_str(resp["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(w["t"].is_number(), "{resp}");
    assert_same(
        &chat,
        &received(&e, "gpt-up").0,
        &[("model", json!("gpt-up"))],
    );
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let (status, _) = send(&e, "/v1/chat/completions", &streamed).await;
    assert_eq!(status, 200);
    assert_same(
        &streamed,
        &received(&e, "gpt-up").0,
        &[
            ("model", json!("gpt-up")),
            ("stream_options", json!({"include_usage": true})),
        ],
    );
    e.shutdown().await;
}

#[tokio::test]
async fn across_apis_the_translation_carries_every_field_it_can() {
    let e = env().await;

    // Claude Code's body on an OpenAI-shaped upstream.
    let mut sent = claude_code(false);
    sent["model"] = json!("codex");
    let (status, resp) = send(&e, "/v1/messages", &sent).await;
    assert_eq!(status, 200, "{resp}");
    let (got, _) = received(&e, "gpt-up");
    assert_eq!(got["model"], "gpt-up");
    assert_eq!(got["max_tokens"], 32000);
    assert_eq!(got["reasoning_effort"], "high", "thinking budget → effort");
    let msgs = got["messages"].as_array().unwrap();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "system", "user"],
        "{got}"
    );
    assert_eq!(msgs[4]["content"], "The user switched to plan mode.");
    assert_eq!(msgs[2]["tool_calls"][0]["function"]["name"], "Bash");
    assert_eq!(msgs[3]["tool_call_id"], "toolu_01");
    let tools: Vec<&str> = got["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["Bash", "Read"]);

    // Anthropic structured output on an OpenAI upstream, and back.
    let sent = json!({
        "model": "codex",
        "max_tokens": 100,
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
        "stop_sequences": ["END"],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "x"}],
    });
    let (status, resp) = send(&e, "/v1/messages", &sent).await;
    assert_eq!(status, 200, "{resp}");
    let (got, _) = received(&e, "gpt-up");
    assert_eq!(
        got["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}, "strict": true}})
    );
    assert_eq!(got["stop"], json!(["END"]));
    assert_eq!(got["tool_choice"], "required");
    assert_eq!(got["parallel_tool_calls"], false);

    // Chat Completions structured output, effort and a late system message on Anthropic.
    let chat = json!({
        "model": "frontier",
        "max_tokens": 20000,
        "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object", "properties": {"t": {"type": "number"}}}}},
        "stop": "DONE",
        "messages": [
            {"role": "system", "content": "top"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": "now terse"},
            {"role": "user", "content": "again"},
        ],
    });
    let (status, resp) = send(&e, "/v1/chat/completions", &chat).await;
    assert_eq!(status, 200, "{resp}");
    let (got, _) = received(&e, "claude-up");
    assert_eq!(
        got["output_config"],
        json!({"format": {"type": "json_schema", "schema": {"type": "object", "properties": {"t": {"type": "number"}}}}})
    );
    assert_eq!(
        got["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    assert_eq!(got["stop_sequences"], json!(["DONE"]));
    // The caller's anthropic-beta turns mid-conversation system messages on: kept in place.
    assert_eq!(got["system"], "top");
    assert_eq!(got["messages"][2]["role"], "system", "{got}");

    // Codex (Responses) on an OpenAI Chat upstream: instructions, text.format, tools.
    let codex = json!({
        "model": "codex",
        "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]},
        ],
        "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}}}],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "patch", "schema": {"type": "object", "properties": {"diff": {"type": "string"}}}, "strict": true}},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "conv-1",
    });
    let (status, _) = send(&e, "/v1/responses", &codex).await;
    assert_eq!(status, 200);
    let (got, _) = received(&e, "gpt-up");
    assert_eq!(
        got["messages"][0],
        json!({"role": "system", "content": "You are Codex."})
    );
    assert_eq!(got["reasoning_effort"], "medium");
    assert_eq!(got["parallel_tool_calls"], false);
    assert_eq!(
        got["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "patch", "schema": {"type": "object", "properties": {"diff": {"type": "string"}}}, "strict": true}})
    );
    assert_eq!(got["tools"][0]["function"]["name"], "shell");
    e.shutdown().await;
}

#[tokio::test]
async fn a_field_the_target_cannot_honour_is_refused_by_name() {
    let e = env().await;
    let before = e.sim.total_attempts();
    let (status, resp) = send(
        &e,
        "/v1/messages",
        &json!({"model": "codex", "max_tokens": 10, "top_k": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(resp["type"], "error");
    assert_eq!(resp["error"]["type"], "invalid_request_error");
    assert!(
        resp["error"]["message"].as_str().unwrap().contains("top_k"),
        "{resp}"
    );
    let (status, resp) = send(
        &e,
        "/v1/chat/completions",
        &json!({"model": "frontier", "logprobs": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("logprobs"),
        "{resp}"
    );
    assert_eq!(
        e.sim.total_attempts(),
        before,
        "nothing reached an upstream"
    );
    e.shutdown().await;
}
