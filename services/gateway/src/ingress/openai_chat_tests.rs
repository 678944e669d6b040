#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::types::{FailedAttempt, ToolChoice};
use serde_json::json;

fn bad(body: &str) -> String {
    match parse(body.as_bytes()) {
        Err(ApiError::BadRequest(m)) => m,
        Err(e @ ApiError::Field(_)) => e.to_string(),
        other => panic!("expected BadRequest for {body}, got {other:?}"),
    }
}

fn data(ev: &SseEvent) -> Value {
    assert_eq!(ev.event, None);
    serde_json::from_str(&ev.data).unwrap()
}

#[test]
fn parses_a_tool_conversation() {
    let body = json!({
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What's the weather in Paris and Rome?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
            {"role": "user", "content": "Thanks. Which is warmer?"}
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Get weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "max_completion_tokens": 512,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "reasoning_effort": "low",
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "end-user-7",
        "metadata": {"session_id": "sess-42", "team": "infra"},
        "parallel_tool_calls": true,
        "some_harness_field": {"x": 1}
    });
    let p = parse(body.to_string().as_bytes()).unwrap();
    assert_eq!(p.session_hint.as_deref(), Some("sess-42"));
    assert!(p.include_usage);
    assert_eq!(p.user.as_deref(), Some("end-user-7"));
    assert_eq!(p.metadata.get("team").map(String::as_str), Some("infra"));
    let r = &p.req;
    assert_eq!(r.model, "gpt-4.1");
    assert_eq!(r.system.as_deref(), Some("You are terse.\n\nUse tools."));
    assert_eq!(r.max_tokens, Some(512));
    assert_eq!(r.temperature, Some(0.2));
    assert_eq!(r.top_p, Some(0.9));
    assert_eq!(r.stop, vec!["END".to_string()]);
    assert_eq!(r.reasoning_effort.as_deref(), Some("low"));
    assert!(r.stream);
    assert_eq!(r.tool_choice, Some(ToolChoice::Tool("weather".into())));
    assert_eq!(r.tools.len(), 1);
    assert_eq!(
        r.tools[0].parameters["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(r.messages.len(), 3);
    assert_eq!(r.messages[0].role, Role::User);
    assert_eq!(
        r.messages[0].parts[1],
        Part::Image {
            url: "data:image/png;base64,AAAA".into()
        }
    );
    assert_eq!(r.messages[1].role, Role::Assistant);
    assert_eq!(
        r.messages[1].parts,
        vec![
            Part::ToolCall {
                id: "call_1".into(),
                name: "weather".into(),
                arguments: "{\"city\":\"Paris\"}".into()
            },
            Part::ToolCall {
                id: "call_2".into(),
                name: "weather".into(),
                arguments: "{}".into()
            },
        ]
    );
    assert_eq!(r.messages[2].role, Role::User);
    assert_eq!(
        r.messages[2].parts,
        vec![
            Part::ToolResult {
                tool_call_id: "call_1".into(),
                content: "18C".into(),
                is_error: false
            },
            Part::ToolResult {
                tool_call_id: "call_2".into(),
                content: "21C".into(),
                is_error: false
            },
            Part::Text {
                text: "Thanks. Which is warmer?".into()
            },
        ]
    );
}

#[test]
fn max_tokens_and_stop_list_and_no_session() {
    let p = parse(
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":7,"stop":["a","b"],"user":"u1"}"#,
    )
    .unwrap();
    assert_eq!(p.req.max_tokens, Some(7));
    assert_eq!(p.req.stop, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(p.session_hint, None);
    assert!(!p.include_usage);
    assert!(!p.req.stream);
}

#[test]
fn parse_errors_name_the_field() {
    assert!(bad("{not json").starts_with("invalid JSON:"));
    assert!(bad("[1,2]").contains("expected a JSON object"));
    let m = bad(r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#);
    assert!(
        m.contains("messages[0].role: unknown variant \"robot\""),
        "{m}"
    );
    assert!(m.contains("\"assistant\""), "{m}");
    let m = bad(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#);
    assert!(
        m.contains("temperature: invalid type: string \"hot\", expected a number"),
        "{m}"
    );
    let m = bad(r#"{"model":"m","messages":[]}"#);
    assert_eq!(m, "messages must contain at least one message");
    let m = bad(r#"{"messages":[{"role":"user","content":"x"}]}"#);
    assert!(m.contains("model: field required"), "{m}");
    let m = bad(r#"{"model":"","messages":[{"role":"user","content":"x"}]}"#);
    assert!(m.contains("model must not be empty"), "{m}");
    let m = bad(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#);
    assert!(m.contains("temperature must be between 0 and 2"), "{m}");
    let m = bad(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":1.5}"#);
    assert!(m.contains("top_p must be between 0 and 1"), "{m}");
    let m = bad(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#);
    assert!(m.contains("max_tokens must be at least 1"), "{m}");
    let m =
        bad(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"video","url":"x"}]}]}"#);
    assert!(
        m.contains("messages[0].content[0].type: unknown variant \"video\""),
        "{m}"
    );
    let m = bad(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#);
    assert!(
        m.contains("messages[0].tool_call_id: field required"),
        "{m}"
    );
    let m = bad(r#"{"model":"m","messages":[{"role":"user","content":5}]}"#);
    assert!(
        m.contains("messages[0].content: invalid type: integer `5`"),
        "{m}"
    );
    let m = bad(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#);
    assert!(m.contains("stream: invalid type"), "{m}");
    let m = bad(r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#);
    assert!(m.contains("at least one user or assistant message"), "{m}");
    let m = bad(
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#,
    );
    assert!(m.contains("tool_choice: unknown variant"), "{m}");
}

fn sample_response() -> ChatResponse {
    ChatResponse {
        id: "abc".into(),
        provider: "openai-eu".into(),
        model: "gpt-4.1-2025-04-14".into(),
        content: vec![
            Part::Reasoning {
                text: "thinking".into(),
                signature: None,
            },
            Part::Text {
                text: "Checking.".into(),
            },
            Part::ToolCall {
                id: "call_9".into(),
                name: "weather".into(),
                arguments: "{\"city\":\"Oslo\"}".into(),
            },
        ],
        stop_reason: StopReason::ToolUse,
        usage: Usage {
            input: 100,
            output: 20,
            reasoning: 5,
            cache_read: 30,
            cache_write: 10,
        },
        failed_attempts: vec![FailedAttempt {
            provider: "openai-us".into(),
            model: "gpt-4.1".into(),
            error: "upstream returned 503".into(),
            status: Some(503),
            duration_ms: 120,
            output_tokens: 0,
        }],
    }
}

#[test]
fn renders_a_completion() {
    let v = render(&sample_response());
    assert_eq!(v["id"], "chatcmpl-abc");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-4.1-2025-04-14");
    let c = &v["choices"][0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["finish_reason"], "tool_calls");
    assert_eq!(c["message"]["role"], "assistant");
    assert_eq!(c["message"]["content"], "Checking.");
    assert_eq!(c["message"]["reasoning_content"], "thinking");
    assert_eq!(c["message"]["refusal"], Value::Null);
    assert_eq!(c["message"]["tool_calls"][0]["id"], "call_9");
    assert_eq!(c["message"]["tool_calls"][0]["type"], "function");
    assert_eq!(c["message"]["tool_calls"][0]["function"]["name"], "weather");
    assert_eq!(
        c["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    assert_eq!(v["usage"]["prompt_tokens"], 140);
    assert_eq!(v["usage"]["completion_tokens"], 20);
    assert_eq!(v["usage"]["total_tokens"], 160);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        5
    );
    assert_eq!(v["retort"]["provider"], "openai-eu");
    assert_eq!(v["retort"]["model"], "gpt-4.1-2025-04-14");
    assert_eq!(v["retort"]["failed_attempts"][0]["provider"], "openai-us");
    assert_eq!(v["retort"]["failed_attempts"][0]["status"], 503);

    let plain = ChatResponse {
        content: vec![Part::Text { text: "hi".into() }],
        ..Default::default()
    };
    let v = render(&plain);
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    assert!(
        v["choices"][0]["message"]
            .get("reasoning_content")
            .is_none()
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let empty = ChatResponse {
        stop_reason: StopReason::MaxTokens,
        ..Default::default()
    };
    let v = render(&empty);
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

fn stream_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "up-1".into(),
            provider: "openai-eu".into(),
            model: "gpt-4.1-2025-04-14".into(),
        },
        StreamEvent::TextDelta { text: "Hel".into() },
        StreamEvent::TextDelta { text: "lo".into() },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "weather".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{\"city\":".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "\"Oslo\"}".into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            usage: Usage {
                input: 10,
                output: 5,
                reasoning: 0,
                cache_read: 2,
                cache_write: 0,
            },
            failed_attempts: vec![],
        },
    ]
}

#[test]
fn encodes_a_stream() {
    let p = parse(
        br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .unwrap();
    let mut enc = StreamEncoder::new(&p);
    let out: Vec<SseEvent> = stream_events().iter().flat_map(|e| enc.event(e)).collect();
    assert_eq!(out.len(), 9);
    let chunks: Vec<Value> = out[..8].iter().map(data).collect();
    for c in &chunks {
        assert_eq!(c["id"], "chatcmpl-up-1");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-4.1-2025-04-14");
        assert_eq!(c["created"], chunks[0]["created"]);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hel");
    assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "lo");
    assert_eq!(
        chunks[3]["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}})
    );
    assert_eq!(
        chunks[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":"
    );
    assert_eq!(
        chunks[5]["choices"][0]["delta"]["tool_calls"][0]["index"],
        0
    );
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[6]["retort"]["provider"], "openai-eu");
    assert_eq!(chunks[6]["retort"]["model"], "gpt-4.1-2025-04-14");
    assert_eq!(chunks[7]["choices"], json!([]));
    assert_eq!(chunks[7]["usage"]["prompt_tokens"], 12);
    assert_eq!(chunks[7]["usage"]["completion_tokens"], 5);
    assert_eq!(chunks[7]["usage"]["total_tokens"], 17);
    assert_eq!(chunks[7]["retort"]["provider"], "openai-eu");
    assert_eq!(out[8], SseEvent::data("[DONE]"));
    // Nothing after Finish.
    assert!(
        enc.event(&StreamEvent::TextDelta {
            text: "late".into()
        })
        .is_empty()
    );
}

#[test]
fn stream_without_usage_and_with_reasoning() {
    let p = parse(br#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    let mut enc = StreamEncoder::new(&p);
    let mut out = enc.event(&StreamEvent::Start {
        id: String::new(),
        provider: "p".into(),
        model: String::new(),
    });
    out.extend(enc.event(&StreamEvent::ReasoningDelta { text: "hmm".into() }));
    out.extend(enc.event(&StreamEvent::Finish {
        stop_reason: StopReason::MaxTokens,
        usage: Usage::default(),
        failed_attempts: vec![],
    }));
    assert_eq!(out.len(), 4);
    let first = data(&out[0]);
    assert_eq!(first["model"], "fast");
    assert_eq!(
        data(&out[1])["choices"][0]["delta"]["reasoning_content"],
        "hmm"
    );
    assert_eq!(data(&out[2])["choices"][0]["finish_reason"], "length");
    assert_eq!(out[3].data, "[DONE]");
}

#[test]
fn error_event_shape() {
    let p = parse(br#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    let mut enc = StreamEncoder::new(&p);
    let out = enc.error(&ApiError::Upstream("all targets failed".into()));
    assert_eq!(out.len(), 1);
    let v = data(&out[0]);
    assert_eq!(v["error"]["message"], "all targets failed");
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["code"], "upstream_unavailable");
    assert_eq!(v["error"]["param"], Value::Null);
    assert!(
        enc.event(&StreamEvent::TextDelta { text: "x".into() })
            .is_empty()
    );
}

#[test]
fn text_chunks_from_the_cached_prefix_match_the_typed_rendering() {
    let p = parse(br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"stream":true}"#)
        .unwrap();
    let mut enc = StreamEncoder::new(&p);
    enc.event(&StreamEvent::Start {
        id: "up-\"1".into(),
        provider: "oa".into(),
        model: "m\n2".into(),
    });
    for text in [
        "plain",
        "quote \" backslash \\ newline \n tab \t",
        "unicode é 😀 \u{1}",
        "",
    ] {
        let fast = enc.text(text);
        let typed = enc.delta(Delta {
            content: Some(text),
            ..Delta::default()
        });
        assert_eq!(fast, typed, "{text:?}");
        assert_eq!(data(&fast)["choices"][0]["delta"]["content"], text);
    }
}

/// A system or developer message after the conversation began stays in its place; structured
/// output, parallel tool calls and seed are read; fields no translation carries are named.
#[test]
fn mid_conversation_system_structured_output_and_untranslated_fields() {
    let p = parse(
        json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "top"},
                {"role": "user", "content": "hi"},
                {"role": "developer", "content": "answer in JSON"},
                {"role": "user", "content": "go"},
            ],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": true}},
            "parallel_tool_calls": false,
            "seed": 7,
            "logprobs": true,
            "frequency_penalty": 0,
            "store": true,
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(p.req.system.as_deref(), Some("top"));
    let roles: Vec<Role> = p.req.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::System, Role::User]);
    assert_eq!(
        p.req.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "r".into(),
            schema: json!({"type": "object"}),
            strict: Some(true)
        })
    );
    assert_eq!(p.req.parallel_tool_calls, Some(false));
    assert_eq!(p.req.seed, Some(7));
    // `frequency_penalty: 0` is the default and `store` a hint: only `logprobs` needs OpenAI.
    assert_eq!(p.req.same_shape_only, ["logprobs"]);
    assert!(p.req.passthrough(Shape::OpenAiChat).is_some());
}

/// Errors read like OpenAI's own, with `param` naming the field.
#[test]
fn errors_are_worded_like_openais() {
    let body = |b: &str| parse(b.as_bytes()).unwrap_err().openai_body();
    let e = body(r#"{"messages":[{"role":"user","content":"a"}]}"#);
    assert_eq!(
        e["error"]["message"],
        "Missing required parameter: 'model'."
    );
    assert_eq!(e["error"]["param"], "model");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    let e = body(r#"{"model":"m","messages":[{"role":"robot","content":"a"}]}"#);
    assert_eq!(
        e["error"]["message"],
        "Invalid value for 'messages[0].role': 'robot'. Supported values are: 'system', 'developer', 'user', 'assistant' or 'tool'."
    );
    assert_eq!(e["error"]["param"], "messages[0].role");
    let e = body(r#"{"model":"m","max_tokens":"9","messages":[{"role":"user","content":"a"}]}"#);
    assert_eq!(
        e["error"]["message"],
        "Invalid type for 'max_tokens': expected an integer, but got string \"9\" instead."
    );
}
