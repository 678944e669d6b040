#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::{
    ingress::SseEvent,
    types::{FailedAttempt, StreamEvent, ToolChoice},
};

fn bad(body: &str) -> String {
    match parse(body.as_bytes()) {
        Err(ApiError::BadRequest(m)) => m,
        Err(e @ ApiError::Field(_)) => e.to_string(),
        other => panic!("expected BadRequest for {body}, got {other:?}"),
    }
}

fn codex_request() -> Value {
    json!({
        "model": "gpt-5-codex",
        "instructions": "You are Codex, a coding agent.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>sandboxed</permissions>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd=/repo</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files."}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need ls"}], "encrypted_content": "gAAAA"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running ls."}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_abc", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"},
            {"type": "function_call_output", "call_id": "call_abc", "output": "README.md\nsrc"},
            {"type": "ghost_snapshot", "ghost_commit": {"id": "x"}},
            {"role": "user", "content": "Now read README.md"}
        ],
        "tools": [
            {"type": "function", "name": "shell", "description": "Run a command", "strict": false,
             "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"]}},
            {"type": "web_search"}
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199a-conversation-id",
        "max_output_tokens": 4096
    })
}

#[test]
fn parses_a_codex_request() {
    let p = parse(codex_request().to_string().as_bytes()).unwrap();
    assert_eq!(p.session_hint.as_deref(), Some("0199a-conversation-id"));
    assert_eq!(p.store, Some(false));
    assert_eq!(p.parallel_tool_calls, Some(false));
    assert_eq!(p.reasoning_summary.as_deref(), Some("auto"));
    let r = &p.req;
    assert_eq!(r.model, "gpt-5-codex");
    assert_eq!(
        r.system.as_deref(),
        Some("You are Codex, a coding agent.\n\n<permissions>sandboxed</permissions>")
    );
    assert_eq!(r.reasoning_effort.as_deref(), Some("medium"));
    assert_eq!(r.max_tokens, Some(4096));
    assert!(r.stream);
    assert_eq!(r.tool_choice, Some(ToolChoice::Auto));
    assert_eq!(r.tools.len(), 1);
    assert_eq!(r.tools[0].name, "shell");
    assert_eq!(r.tools[0].parameters["required"][0], "command");
    // developer → system, reasoning and ghost_snapshot dropped, same-role items merged.
    assert_eq!(r.messages.len(), 3);
    assert_eq!(r.messages[0].role, Role::User);
    assert_eq!(r.messages[0].parts.len(), 2);
    assert_eq!(r.messages[1].role, Role::Assistant);
    assert_eq!(
        r.messages[1].parts,
        vec![
            Part::Text {
                text: "Running ls.".into()
            },
            Part::ToolCall {
                id: "call_abc".into(),
                name: "shell".into(),
                arguments: "{\"command\":[\"ls\"]}".into()
            },
        ]
    );
    assert_eq!(r.messages[2].role, Role::User);
    assert_eq!(
        r.messages[2].parts,
        vec![
            Part::ToolResult {
                tool_call_id: "call_abc".into(),
                content: "README.md\nsrc".into(),
                is_error: false
            },
            Part::Text {
                text: "Now read README.md".into()
            },
        ]
    );
}

#[test]
fn string_input_metadata_session_and_images() {
    let p = parse(
        br#"{"model":"m","input":"hello","metadata":{"session_id":"s-1"},"prompt_cache_key":"pck","tool_choice":{"type":"function","name":"f"}}"#,
    )
    .unwrap();
    assert_eq!(p.session_hint.as_deref(), Some("s-1"));
    assert_eq!(p.req.messages, vec![Message::text(Role::User, "hello")]);
    assert_eq!(p.req.tool_choice, Some(ToolChoice::Tool("f".into())));
    assert_eq!(p.req.system, None);

    let p = parse(
        br#"{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"see"},{"type":"input_image","image_url":"https://x/y.png","detail":"auto"}]}]}"#,
    )
    .unwrap();
    assert_eq!(p.session_hint, None);
    assert_eq!(
        p.req.messages[0].parts[1],
        Part::Image {
            url: "https://x/y.png".into()
        }
    );
}

#[test]
fn parse_errors_name_the_field() {
    assert!(bad("{\"model\":").starts_with("invalid JSON:"));
    let m = bad(r#"{"model":"m","input":"hi","previous_response_id":"resp_1"}"#);
    assert_eq!(
        m,
        "previous_response_id is not supported: send the full conversation in input (store=false)"
    );
    let m = bad(r#"{"model":"m","input":[]}"#);
    assert!(m.contains("input must contain at least one item"), "{m}");
    let m = bad(r#"{"model":"m"}"#);
    assert!(m.contains("input: field required"), "{m}");
    let m = bad(r#"{"model":"m","input":42}"#);
    assert!(m.contains("input: invalid type: integer `42`"), "{m}");
    let m = bad(r#"{"model":"m","input":[{"role":"robot","content":"x"}]}"#);
    assert!(
        m.contains("input[0].role: unknown variant \"robot\""),
        "{m}"
    );
    let m = bad(r#"{"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]}"#);
    assert!(m.contains("input[0].call_id: field required"), "{m}");
    let m = bad(r#"{"model":"m","input":"hi","max_output_tokens":"many"}"#);
    assert!(
        m.contains("max_output_tokens: invalid type: string \"many\", expected an integer"),
        "{m}"
    );
    let m = bad(r#"{"model":"m","input":"hi","reasoning":{"effort":3}}"#);
    assert!(m.contains("reasoning.effort: invalid type"), "{m}");
    let m = bad(r#"{"model":"m","input":"hi","tools":[{"type":"function"}]}"#);
    assert!(m.contains("tools[0].name: field required"), "{m}");
    let m = bad(r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_video"}]}]}"#);
    assert!(
        m.contains("input[0].content[0].type: unknown variant \"input_video\""),
        "{m}"
    );
    let m = bad(r#"{"model":"m","input":"hi","temperature":2.5}"#);
    assert!(m.contains("temperature must be between 0 and 2"), "{m}");
    let m = bad(r#"{"model":"m","input":[{"role":"developer","content":"only rules"}]}"#);
    assert!(m.contains("at least one user or assistant message"), "{m}");
}

fn sample_response(stop: StopReason) -> ChatResponse {
    ChatResponse {
        id: "up-1".into(),
        provider: "anthropic".into(),
        model: "claude-sonnet-4-5".into(),
        content: vec![
            Part::Reasoning {
                text: "Plan.".into(),
                signature: Some("sig".into()),
            },
            Part::Text {
                text: "Reading it.".into(),
            },
            Part::ToolCall {
                id: "toolu_1".into(),
                name: "shell".into(),
                arguments: "{\"command\":[\"cat\"]}".into(),
            },
        ],
        stop_reason: stop,
        usage: Usage {
            input: 50,
            output: 30,
            reasoning: 10,
            cache_read: 100,
            cache_write: 0,
        },
        failed_attempts: vec![FailedAttempt {
            provider: "openai".into(),
            model: "gpt-5".into(),
            error: "timeout".into(),
            status: None,
            duration_ms: 30_000,
            output_tokens: 0,
        }],
    }
}

#[test]
fn renders_a_response() {
    let v = render(&sample_response(StopReason::ToolUse));
    assert_eq!(v["id"], "resp_up-1");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["incomplete_details"], Value::Null);
    assert_eq!(v["model"], "claude-sonnet-4-5");
    let out = v["output"].as_array().unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["type"], "reasoning");
    assert_eq!(
        out[0]["summary"][0],
        json!({"type": "summary_text", "text": "Plan."})
    );
    assert_eq!(out[1]["type"], "message");
    assert!(out[1]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(out[1]["status"], "completed");
    assert_eq!(out[1]["role"], "assistant");
    assert_eq!(
        out[1]["content"][0],
        json!({"type": "output_text", "text": "Reading it.", "annotations": []})
    );
    assert_eq!(out[2]["type"], "function_call");
    assert!(out[2]["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(out[2]["call_id"], "toolu_1");
    assert_eq!(out[2]["name"], "shell");
    assert_eq!(out[2]["arguments"], "{\"command\":[\"cat\"]}");
    assert_eq!(out[2]["status"], "completed");
    assert_eq!(v["usage"]["input_tokens"], 150);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 100);
    assert_eq!(v["usage"]["output_tokens"], 30);
    assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 10);
    assert_eq!(v["usage"]["total_tokens"], 180);
    assert_eq!(v["parallel_tool_calls"], true);
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["tools"], json!([]));
    assert_eq!(v["retort"]["provider"], "anthropic");
    assert_eq!(v["retort"]["model"], "claude-sonnet-4-5");
    assert_eq!(v["retort"]["failed_attempts"][0]["model"], "gpt-5");

    let v = render(&sample_response(StopReason::MaxTokens));
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
}

fn ev(e: &SseEvent) -> (&'static str, Value) {
    let name = e.event.unwrap();
    let v: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(v["type"], name);
    (name, v)
}

#[test]
fn encodes_a_stream() {
    let p = parse(br#"{"model":"codex-alias","input":"hi","stream":true}"#).unwrap();
    let mut enc = StreamEncoder::new(&p);
    let events = [
        StreamEvent::Start {
            id: "up".into(),
            provider: "anthropic".into(),
            model: "claude-sonnet-4-5".into(),
        },
        StreamEvent::ReasoningDelta {
            text: "Think".into(),
        },
        StreamEvent::TextDelta { text: "Hel".into() },
        StreamEvent::TextDelta { text: "lo".into() },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "shell".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{\"command\":".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "[\"ls\"]}".into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            usage: Usage {
                input: 10,
                output: 5,
                reasoning: 1,
                cache_read: 4,
                cache_write: 0,
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
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (_, v)) in out.iter().enumerate() {
        assert_eq!(v["sequence_number"], i as u64);
    }
    assert_eq!(out[0].1["response"]["status"], "in_progress");
    assert_eq!(out[0].1["response"]["output"], json!([]));
    assert_eq!(out[0].1["response"]["model"], "claude-sonnet-4-5");
    let resp_id = out[0].1["response"]["id"].as_str().unwrap().to_string();
    assert!(resp_id.starts_with("resp_"));
    assert_eq!(out[2].1["output_index"], 0);
    assert_eq!(out[2].1["item"]["type"], "reasoning");
    assert_eq!(out[4].1["delta"], "Think");
    assert_eq!(out[7].1["item"]["summary"][0]["text"], "Think");
    // The message item.
    assert_eq!(out[8].1["output_index"], 1);
    assert_eq!(out[8].1["item"]["type"], "message");
    assert_eq!(out[8].1["item"]["status"], "in_progress");
    assert_eq!(out[8].1["item"]["content"], json!([]));
    let msg_id = out[8].1["item"]["id"].clone();
    assert_eq!(out[9].1["part"]["type"], "output_text");
    assert_eq!(out[10].1["item_id"], msg_id);
    assert_eq!(out[10].1["output_index"], 1);
    assert_eq!(out[10].1["content_index"], 0);
    assert_eq!(out[10].1["delta"], "Hel");
    assert_eq!(out[11].1["delta"], "lo");
    assert_eq!(out[12].1["text"], "Hello");
    assert_eq!(out[13].1["part"]["text"], "Hello");
    assert_eq!(out[14].1["item"]["status"], "completed");
    assert_eq!(out[14].1["item"]["content"][0]["text"], "Hello");
    // The function call item.
    assert_eq!(out[15].1["output_index"], 2);
    assert_eq!(out[15].1["item"]["type"], "function_call");
    assert_eq!(out[15].1["item"]["call_id"], "call_1");
    assert_eq!(out[15].1["item"]["name"], "shell");
    assert_eq!(out[15].1["item"]["arguments"], "");
    let fc_id = out[15].1["item"]["id"].clone();
    assert_eq!(out[16].1["item_id"], fc_id);
    assert_eq!(out[16].1["delta"], "{\"command\":");
    assert_eq!(out[18].1["arguments"], "{\"command\":[\"ls\"]}");
    assert_eq!(out[19].1["item"]["arguments"], "{\"command\":[\"ls\"]}");
    assert_eq!(out[19].1["item"]["status"], "completed");
    // The completed response.
    let r = &out[20].1["response"];
    assert_eq!(r["id"], resp_id.as_str());
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "claude-sonnet-4-5");
    assert_eq!(r["output"].as_array().unwrap().len(), 3);
    assert_eq!(r["output"][1]["content"][0]["text"], "Hello");
    assert_eq!(r["output"][2]["arguments"], "{\"command\":[\"ls\"]}");
    assert_eq!(r["usage"]["input_tokens"], 14);
    assert_eq!(r["usage"]["total_tokens"], 19);
    assert_eq!(r["retort"]["provider"], "anthropic");
    assert_eq!(r["retort"]["model"], "claude-sonnet-4-5");
    assert!(
        enc.event(&StreamEvent::TextDelta {
            text: "late".into()
        })
        .is_empty()
    );
}

#[test]
fn stream_ends_incomplete_on_max_tokens() {
    let p = parse(br#"{"model":"m","input":"hi"}"#).unwrap();
    let mut enc = StreamEncoder::new(&p);
    let mut out = enc.event(&StreamEvent::Start {
        id: "x".into(),
        provider: "p".into(),
        model: "up".into(),
    });
    out.extend(enc.event(&StreamEvent::TextDelta { text: "par".into() }));
    out.extend(enc.event(&StreamEvent::Finish {
        stop_reason: StopReason::MaxTokens,
        usage: Usage::default(),
        failed_attempts: vec![],
    }));
    let (name, v) = ev(out.last().unwrap());
    assert_eq!(name, "response.incomplete");
    assert_eq!(v["response"]["status"], "incomplete");
    assert_eq!(
        v["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(v["response"]["output"][0]["content"][0]["text"], "par");
}

#[test]
fn error_event_shape() {
    let p = parse(br#"{"model":"m","input":"hi"}"#).unwrap();
    let mut enc = StreamEncoder::new(&p);
    let mut out = enc.event(&StreamEvent::Start {
        id: "x".into(),
        provider: "p".into(),
        model: "up".into(),
    });
    out.extend(enc.error(&ApiError::RateLimited {
        message: "slow down".into(),
        retry_after: None,
    }));
    assert_eq!(out.len(), 4);
    let (name, v) = ev(&out[2]);
    assert_eq!(name, "error");
    assert_eq!(v["sequence_number"], 2);
    assert_eq!(v["code"], "rate_limit_exceeded");
    assert_eq!(v["message"], "slow down");
    assert_eq!(v["param"], Value::Null);
    let (name, v) = ev(&out[3]);
    assert_eq!(name, "response.failed");
    assert_eq!(v["sequence_number"], 3);
    assert_eq!(v["response"]["status"], "failed");
    assert_eq!(
        v["response"]["error"],
        json!({"code": "rate_limit_exceeded", "message": "slow down"})
    );
    assert!(
        enc.event(&StreamEvent::TextDelta { text: "x".into() })
            .is_empty()
    );
}
