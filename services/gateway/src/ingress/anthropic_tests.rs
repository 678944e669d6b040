#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::types::FailedAttempt;

fn bad(body: &str) -> String {
    match parse(body.as_bytes()) {
        Err(ApiError::BadRequest(m)) => m,
        Err(e @ ApiError::Field(_)) => e.to_string(),
        other => panic!("expected BadRequest for {body}, got {other:?}"),
    }
}

fn claude_code_request() -> Value {
    json!({
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": "Environment: /repo", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                {"type": "text", "text": "Fix the failing test", "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Run tests first.", "signature": "EqQBCkYIBxgC"},
                {"type": "redacted_thinking", "data": "abc"},
                {"type": "text", "text": "Running the tests."},
                {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "cargo test", "timeout": 120000}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "is_error": true, "content": [
                    {"type": "text", "text": "1 failed"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
                ]},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
            ]},
            {"role": "user", "content": "Go on."}
        ],
        "tools": [
            {"name": "Bash", "description": "Run a shell command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            {"type": "custom", "name": "Read", "input_schema": {"type": "object"}}
        ],
        "tool_choice": {"type": "any"},
        "metadata": {"user_id": "user_0f3e_account_7b1c_session_1234abcd-5678-90ef-1234-567890abcdef"},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "temperature": 1,
        "top_k": 40,
        "stop_sequences": ["</done>"],
        "stream": true
    })
}

#[test]
fn parses_a_claude_code_request() {
    let p = parse(claude_code_request().to_string().as_bytes()).unwrap();
    assert_eq!(
        p.session_hint.as_deref(),
        Some("1234abcd-5678-90ef-1234-567890abcdef")
    );
    assert_eq!(p.thinking_budget, Some(31999));
    assert_eq!(p.top_k, Some(40));
    let r = &p.req;
    assert_eq!(r.model, "claude-sonnet-4-5-20250929");
    assert_eq!(r.max_tokens, Some(32000));
    assert_eq!(
        r.system.as_deref(),
        Some("You are Claude Code, Anthropic's official CLI for Claude.\n\nEnvironment: /repo")
    );
    assert_eq!(r.reasoning_effort.as_deref(), Some("high"));
    assert_eq!(r.tool_choice, Some(ToolChoice::Required));
    assert_eq!(r.temperature, Some(1.0));
    assert_eq!(r.stop, vec!["</done>".to_string()]);
    assert!(r.stream);
    let names: Vec<&str> = r.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["Bash", "Read"]);
    assert_eq!(r.tools[0].parameters["required"][0], "command");
    assert_eq!(r.messages.len(), 3);
    assert_eq!(r.messages[0].role, Role::User);
    assert_eq!(r.messages[0].parts.len(), 2);
    assert_eq!(r.messages[1].role, Role::Assistant);
    assert_eq!(
        r.messages[1].parts[0],
        Part::Reasoning {
            text: "Run tests first.".into(),
            signature: Some("EqQBCkYIBxgC".into())
        }
    );
    assert_eq!(
        r.messages[1].parts[1],
        Part::Text {
            text: "Running the tests.".into()
        }
    );
    let Part::ToolCall {
        id,
        name,
        arguments,
    } = &r.messages[1].parts[2]
    else {
        panic!()
    };
    assert_eq!((id.as_str(), name.as_str()), ("toolu_01", "Bash"));
    let args: Value = serde_json::from_str(arguments).unwrap();
    assert_eq!(args, json!({"command": "cargo test", "timeout": 120000}));
    assert_eq!(r.messages[2].role, Role::User);
    assert_eq!(
        r.messages[2].parts,
        vec![
            Part::ToolResult {
                tool_call_id: "toolu_01".into(),
                content: "1 failed\n[image]".into(),
                is_error: true
            },
            Part::Image {
                url: "data:image/png;base64,iVBO".into()
            },
            Part::Image {
                url: "https://x/y.png".into()
            },
            Part::Text {
                text: "Go on.".into()
            },
        ]
    );
}

#[test]
fn session_hint_forms() {
    assert_eq!(
        session_from_user_id("user_a_account_b_session_s-1").as_deref(),
        Some("s-1")
    );
    assert_eq!(
        session_from_user_id(r#"{"device_id":"d","account_uuid":"a","session_id":"s-2"}"#)
            .as_deref(),
        Some("s-2")
    );
    assert_eq!(session_from_user_id("plain-user"), None);
    assert_eq!(session_from_user_id("{not json"), None);
    assert_eq!(effort_for_budget(16_000), "high");
    assert_eq!(effort_for_budget(4_000), "medium");
    assert_eq!(effort_for_budget(1_024), "low");
}

#[test]
fn count_tokens_needs_no_max_tokens() {
    let r = parse_count_tokens(
        br#"{"model":"claude-x","messages":[{"role":"user","content":"hi"}],"system":"s"}"#,
    )
    .unwrap();
    assert_eq!(r.system.as_deref(), Some("s"));
    assert_eq!(r.max_tokens, None);
    assert_eq!(render_count_tokens(42), json!({"input_tokens": 42}));
}

#[test]
fn parse_errors_name_the_field() {
    assert!(bad("{\"model\": ").starts_with("invalid JSON:"));
    let m = bad(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert!(m.contains("max_tokens: field required"), "{m}");
    let m = bad(r#"{"model":"m","max_tokens":"10","messages":[{"role":"user","content":"hi"}]}"#);
    assert!(
        m.contains("max_tokens: invalid type: string \"10\", expected an integer"),
        "{m}"
    );
    let m = bad(r#"{"model":"m","max_tokens":10,"messages":[]}"#);
    assert_eq!(m, "messages must contain at least one message");
    let m = bad(r#"{"model":"m","max_tokens":10,"messages":[{"role":"robot","content":"hi"}]}"#);
    assert!(
        m.contains(
            "messages[0].role: unknown variant \"robot\", expected one of \"user\", \"assistant\", \"system\""
        ),
        "{m}"
    );
    let m = bad(
        r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[{"type":"audio"}]}]}"#,
    );
    assert!(
        m.contains("messages[0].content[0].type: unknown variant \"audio\""),
        "{m}"
    );
    let m = bad(
        r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[{"type":"tool_result","content":"x"}]}]}"#,
    );
    assert!(
        m.contains("messages[0].content[0].tool_use_id: field required"),
        "{m}"
    );
    let m = bad(
        r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"x"}],"system":7}"#,
    );
    assert!(m.contains("system: invalid type: integer `7`"), "{m}");
    let m = bad(
        r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"t"}]}"#,
    );
    assert!(m.contains("tools[0].input_schema: field required"), "{m}");
    let m = bad(
        r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"tool"}}"#,
    );
    assert!(m.contains("tool_choice.name: field required"), "{m}");
    let m = bad(
        r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"x"}],"temperature":1.5}"#,
    );
    assert!(m.contains("temperature must be between 0 and 1"), "{m}");
    let m = bad(
        r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled"}}"#,
    );
    assert!(m.contains("thinking.budget_tokens: field required"), "{m}");
    let m = bad(
        r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"b","input":{}}]}]}"#,
    );
    assert!(
        m.contains("tool_use blocks are only allowed in assistant messages"),
        "{m}"
    );
}

fn sample_response() -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-1".into(),
        provider: "openai".into(),
        model: "gpt-5".into(),
        content: vec![
            Part::Reasoning {
                text: "hm".into(),
                signature: None,
            },
            Part::Text {
                text: "Let me look.".into(),
            },
            Part::ToolCall {
                id: "call_1".into(),
                name: "Read".into(),
                arguments: "{\"path\":\"a.rs\"}".into(),
            },
            Part::ToolCall {
                id: "call_2".into(),
                name: "Read".into(),
                arguments: "{broken".into(),
            },
        ],
        stop_reason: StopReason::ToolUse,
        usage: Usage {
            input: 12,
            output: 34,
            reasoning: 5,
            cache_read: 1000,
            cache_write: 200,
        },
        failed_attempts: vec![FailedAttempt {
            provider: "anthropic".into(),
            model: "claude-sonnet-4-5".into(),
            error: "upstream returned 529".into(),
            status: Some(529),
            duration_ms: 800,
            output_tokens: 0,
        }],
    }
}

#[test]
fn renders_a_message() {
    let v = render(&sample_response());
    assert_eq!(v["id"], "msg_chatcmpl-1");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "gpt-5");
    assert_eq!(
        v["content"][0],
        json!({"type": "thinking", "thinking": "hm", "signature": ""})
    );
    assert_eq!(
        v["content"][1],
        json!({"type": "text", "text": "Let me look."})
    );
    assert_eq!(
        v["content"][2],
        json!({"type": "tool_use", "id": "call_1", "name": "Read", "input": {"path": "a.rs"}})
    );
    assert_eq!(v["content"][3]["input"], json!({}));
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 12, "output_tokens": 34, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200})
    );
    assert_eq!(v["retort"]["provider"], "openai");
    assert_eq!(v["retort"]["model"], "gpt-5");
    assert_eq!(v["retort"]["failed_attempts"][0]["status"], 529);

    let v = render(&ChatResponse {
        stop_reason: StopReason::ContentFilter,
        ..Default::default()
    });
    assert_eq!(v["content"], json!([{"type": "text", "text": ""}]));
    assert_eq!(v["stop_reason"], "refusal");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
}

fn ev(e: &SseEvent) -> (&'static str, Value) {
    let name = e.event.unwrap();
    let v: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(v["type"], name);
    (name, v)
}

#[test]
fn encodes_a_stream() {
    let p = parse(br#"{"model":"sonnet","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"stream":true}"#)
        .unwrap();
    let mut enc = StreamEncoder::new(&p);
    let events = [
        StreamEvent::Start {
            id: "msg_up".into(),
            provider: "sim".into(),
            model: "claude-sonnet-4-5".into(),
        },
        StreamEvent::ReasoningDelta {
            text: "Think.".into(),
        },
        StreamEvent::TextDelta { text: "Hel".into() },
        StreamEvent::TextDelta { text: "lo".into() },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "toolu_1".into(),
            name: "Bash".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{\"command\":".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "\"ls\"}".into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            usage: Usage {
                input: 7,
                output: 9,
                reasoning: 0,
                cache_read: 3,
                cache_write: 1,
            },
            failed_attempts: vec![],
        },
    ];
    let out: Vec<(&str, Value)> = events
        .iter()
        .flat_map(|e| enc.event(e))
        .map(|e| ev(&e))
        .collect();
    let names: Vec<&str> = out.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        vec![
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let m = &out[0].1["message"];
    assert_eq!(m["id"], "msg_up");
    assert_eq!(m["model"], "claude-sonnet-4-5");
    assert_eq!(m["content"], json!([]));
    assert_eq!(m["stop_reason"], Value::Null);
    assert_eq!(m["usage"], json!({"input_tokens": 0, "output_tokens": 0}));
    assert_eq!(out[2].1["index"], 0);
    assert_eq!(out[2].1["content_block"]["type"], "thinking");
    assert_eq!(
        out[3].1["delta"],
        json!({"type": "thinking_delta", "thinking": "Think."})
    );
    assert_eq!(out[4].1["index"], 0);
    assert_eq!(out[5].1["index"], 1);
    assert_eq!(
        out[5].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    assert_eq!(
        out[6].1["delta"],
        json!({"type": "text_delta", "text": "Hel"})
    );
    assert_eq!(out[7].1["index"], 1);
    assert_eq!(out[7].1["delta"]["text"], "lo");
    assert_eq!(out[8].1["index"], 1);
    assert_eq!(out[9].1["index"], 2);
    assert_eq!(
        out[9].1["content_block"],
        json!({"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}})
    );
    assert_eq!(
        out[10].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"command\":"})
    );
    assert_eq!(out[11].1["index"], 2);
    assert_eq!(out[12].1["index"], 2);
    let d = &out[13].1;
    assert_eq!(
        d["delta"],
        json!({"stop_reason": "tool_use", "stop_sequence": null})
    );
    assert_eq!(
        d["usage"],
        json!({"input_tokens": 7, "output_tokens": 9, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 1})
    );
    assert_eq!(d["retort"]["provider"], "sim");
    assert_eq!(d["retort"]["model"], "claude-sonnet-4-5");
    assert_eq!(out[14].1, json!({"type": "message_stop"}));
    assert!(
        enc.event(&StreamEvent::TextDelta {
            text: "late".into()
        })
        .is_empty()
    );
}

#[test]
fn consecutive_tool_calls_get_their_own_blocks() {
    let p = parse(br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#)
        .unwrap();
    let mut enc = StreamEncoder::new(&p);
    let events = [
        StreamEvent::Start {
            id: String::new(),
            provider: "p".into(),
            model: String::new(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "a".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "b".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 1,
            arguments: "{}".into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            usage: Usage::default(),
            failed_attempts: vec![],
        },
    ];
    let out: Vec<(&str, Value)> = events
        .iter()
        .flat_map(|e| enc.event(e))
        .map(|e| ev(&e))
        .collect();
    assert_eq!(out[0].1["message"]["model"], "m");
    assert!(
        out[0].1["message"]["id"]
            .as_str()
            .unwrap()
            .starts_with("msg_")
    );
    let starts: Vec<&Value> = out
        .iter()
        .filter(|(n, _)| *n == "content_block_start")
        .map(|(_, v)| &v["index"])
        .collect();
    assert_eq!(starts, vec![&json!(0), &json!(1)]);
    let stops = out
        .iter()
        .filter(|(n, _)| *n == "content_block_stop")
        .count();
    assert_eq!(stops, 2);
}

#[test]
fn error_event_shape() {
    let p = parse(br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#)
        .unwrap();
    let mut enc = StreamEncoder::new(&p);
    let out = enc.error(&ApiError::Timeout("deadline passed".into()));
    assert_eq!(out.len(), 1);
    let (name, v) = ev(&out[0]);
    assert_eq!(name, "error");
    assert_eq!(
        v["error"],
        json!({"type": "timeout_error", "message": "deadline passed"})
    );
    assert!(
        enc.event(&StreamEvent::TextDelta { text: "x".into() })
            .is_empty()
    );
}

/// Claude Code's `mid-conversation-system` beta: `{"role":"system"}` inside `messages`.
#[test]
fn system_messages_inside_the_conversation() {
    let p = parse(
        json!({
            "model": "frontier",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "top", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "system", "content": [{"type": "text", "text": "be terse now"}]},
                {"role": "user", "content": "again"},
            ],
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let roles: Vec<Role> = p.req.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::System, Role::User]
    );
    assert_eq!(p.req.messages[2].joined_text(), "be terse now");
    assert_eq!(p.req.system.as_deref(), Some("top"));
    // The caller's body is kept whole for an Anthropic upstream, cache_control included.
    let raw = p.req.passthrough(Shape::AnthropicMessages).unwrap();
    assert_eq!(
        raw.body["system"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert!(
        p.req.same_shape_only.is_empty(),
        "{:?}",
        p.req.same_shape_only
    );
}

/// Errors read like Anthropic's own (pydantic-style paths and wording), in Anthropic's shape.
#[test]
fn errors_are_worded_like_anthropics() {
    let body = |b: &str| parse(b.as_bytes()).unwrap_err().anthropic_body();
    let e = body(
        r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"a"},{"role":"robot","content":"b"}]}"#,
    );
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(
        e["error"]["message"],
        "messages.1.role: Input should be 'user', 'assistant' or 'system'"
    );
    let e = body(r#"{"model":"m","messages":[{"role":"user","content":"a"}]}"#);
    assert_eq!(e["error"]["message"], "max_tokens: Field required");
    let e = body(r#"{"model":"m","max_tokens":"10","messages":[{"role":"user","content":"a"}]}"#);
    assert_eq!(
        e["error"]["message"],
        "max_tokens: Input should be a valid integer"
    );
}

/// Fields only Anthropic honours are named, so that a target of another API refuses rather than
/// drops them; hints another API may ignore are not.
#[test]
fn fields_only_anthropic_honours_are_named() {
    let p = parse(
        json!({
            "model": "m",
            "max_tokens": 100,
            "top_k": 5,
            "context_management": {"edits": []},
            "metadata": {"user_id": "u"},
            "tools": [
                {"name": "t", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"},
            ],
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}, {"type": "text", "text": "sum up"}]}],
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        p.req.same_shape_only,
        [
            "messages[0].content[0].type (document)",
            "tools[1].type (web_search_20250305)",
            "top_k"
        ]
    );
    assert_eq!(
        p.req.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "output".into(),
            schema: json!({"type": "object"}),
            strict: Some(true)
        })
    );
    assert_eq!(p.req.thinking_budget, Some(2048));
}

/// A thinking block's signature reaches an Anthropic caller's stream inside that block, so the
/// client can hand the thinking back on its next turn.
#[test]
fn thinking_signatures_are_streamed_in_their_block() {
    let p = parse(br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"x"}]}"#)
        .unwrap();
    let mut enc = StreamEncoder::new(&p);
    let mut out = Vec::new();
    for ev in [
        StreamEvent::Start {
            id: "1".into(),
            provider: "p".into(),
            model: "m".into(),
        },
        StreamEvent::ReasoningDelta { text: "hmm".into() },
        StreamEvent::ReasoningSignature {
            signature: "SIG".into(),
        },
        StreamEvent::TextDelta { text: "ok".into() },
    ] {
        out.extend(enc.event(&ev));
    }
    let data: Vec<Value> = out
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let sig = data
        .iter()
        .position(|d| d["delta"]["type"] == "signature_delta")
        .expect("a signature_delta event");
    assert_eq!(data[sig]["index"], 0, "in the thinking block");
    assert_eq!(data[sig]["delta"]["signature"], "SIG");
    assert_eq!(
        data[sig + 1]["type"],
        "content_block_stop",
        "then the block closes"
    );
}
