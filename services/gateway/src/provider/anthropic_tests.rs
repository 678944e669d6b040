#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use super::{stream::Item, *};
use crate::{
    config::{ProviderKind, Secret},
    provider::{
        StatusKind,
        common::FINISH_GRACE,
        test_support::{
            chunked_sse_server, http_response, one_shot_server, streams_share_one_connection,
        },
    },
    types::{Message, StreamEvent, Tool},
};

fn wire(req: &ChatRequest, stream: bool) -> Value {
    serde_json::to_value(to_wire(req, "claude-up", stream, false).unwrap()).unwrap()
}

#[test]
fn request_merges_roles_and_converts_blocks() {
    let req = ChatRequest {
        system: Some("be brief".into()),
        messages: vec![
            Message::text(Role::User, "hi"),
            Message {
                role: Role::User,
                parts: vec![
                    Part::Image {
                        url: "data:image/png;base64,AAAA".into(),
                    },
                    Part::Image {
                        url: "https://x/cat.jpg".into(),
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                parts: vec![
                    Part::Reasoning {
                        text: "hmm".into(),
                        signature: Some("sig".into()),
                    },
                    Part::Reasoning {
                        text: "unsigned".into(),
                        signature: None,
                    },
                    Part::Text {
                        text: "Let me check.".into(),
                    },
                    Part::ToolCall {
                        id: "t1".into(),
                        name: "weather".into(),
                        arguments: r#"{"city":"Paris"}"#.into(),
                    },
                    Part::ToolCall {
                        id: "t2".into(),
                        name: "weather".into(),
                        arguments: "not json".into(),
                    },
                ],
            },
            // OpenAI-style: tool results as separate user messages, then more user text.
            Message {
                role: Role::User,
                parts: vec![Part::ToolResult {
                    tool_call_id: "t1".into(),
                    content: "sunny".into(),
                    is_error: false,
                }],
            },
            Message {
                role: Role::User,
                parts: vec![Part::Text {
                    text: "and?".into(),
                }],
            },
            Message {
                role: Role::User,
                parts: vec![Part::ToolResult {
                    tool_call_id: "t2".into(),
                    content: "boom".into(),
                    is_error: true,
                }],
            },
        ],
        temperature: Some(0.25),
        stop: vec!["STOP".into()],
        ..Default::default()
    };
    assert_eq!(
        wire(&req, false),
        json!({
            "model": "claude-up",
            "max_tokens": 4096,
            "system": "be brief",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "t2", "name": "weather", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sunny", "is_error": false},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "boom", "is_error": true},
                    {"type": "text", "text": "and?"}
                ]}
            ],
            "temperature": 0.25,
            "stop_sequences": ["STOP"]
        })
    );
}

#[test]
fn request_tools_choice_and_stream() {
    let mut req = ChatRequest {
        messages: vec![Message::text(Role::User, "go")],
        tools: vec![Tool {
            name: "f".into(),
            description: Some("does f".into()),
            parameters: json!({"type": "object"}),
        }],
        max_tokens: Some(99),
        ..Default::default()
    };
    for (choice, expected) in [
        (ToolChoice::Auto, json!({"type": "auto"})),
        (ToolChoice::None, json!({"type": "none"})),
        (ToolChoice::Required, json!({"type": "any"})),
        (
            ToolChoice::Tool("f".into()),
            json!({"type": "tool", "name": "f"}),
        ),
    ] {
        req.tool_choice = Some(choice);
        assert_eq!(wire(&req, false)["tool_choice"], expected);
    }
    let v = wire(&req, true);
    assert_eq!(
        v["tools"],
        json!([{"name": "f", "description": "does f", "input_schema": {"type": "object"}}])
    );
    assert_eq!(v["max_tokens"], json!(99));
    assert_eq!(v["stream"], json!(true));
    assert!(
        v.get("system").is_none()
            && v.get("stop_sequences").is_none()
            && v.get("reasoning_effort").is_none()
    );
    req.tools.clear();
    let v = wire(&req, false);
    assert!(
        v.get("tool_choice").is_none() && v.get("tools").is_none() && v.get("stream").is_none()
    );
}

#[test]
fn parses_response() {
    let body = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "let me see", "signature": "SIG"},
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 40, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}
    });
    let r = parse_response(body.to_string().as_bytes(), "anthropic", "claude").unwrap();
    assert_eq!(r.id, "msg_1");
    assert_eq!(
        (r.provider.as_str(), r.model.as_str()),
        ("anthropic", "claude-x")
    );
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(
        r.content,
        vec![
            Part::Reasoning {
                text: "let me see".into(),
                signature: Some("SIG".into())
            },
            Part::Text {
                text: "Checking.".into()
            },
            Part::ToolCall {
                id: "toolu_1".into(),
                name: "weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            },
        ]
    );
    assert_eq!(
        r.usage,
        Usage {
            input: 12,
            output: 40,
            // "let me see": 10 bytes of thinking, about 3 tokens of the output.
            reasoning: 3,
            cache_read: 100,
            cache_write: 7
        }
    );
}

#[test]
fn parses_stop_reasons_and_errors() {
    for (s, want) in [
        ("end_turn", StopReason::EndTurn),
        ("max_tokens", StopReason::MaxTokens),
        ("stop_sequence", StopReason::StopSequence),
        ("tool_use", StopReason::ToolUse),
        ("refusal", StopReason::ContentFilter),
        ("pause_turn", StopReason::EndTurn),
    ] {
        assert_eq!(stop_reason(s), want);
    }
    assert!(matches!(
        parse_response(b"nope", "a", "m"),
        Err(ProviderError::Malformed(_))
    ));
    let err = parse_response(
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        "a",
        "m",
    )
    .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Status { status: 529, kind: StatusKind::Unavailable, message, .. } if message == "Overloaded"),
        "{err:?}"
    );
}

// Streaming ----------------------------------------------------------------------------------

fn sse(events: &[Value]) -> Vec<Result<bytes::Bytes, std::io::Error>> {
    events
        .iter()
        .map(|e| {
            let name = e["type"].as_str().unwrap_or("message");
            Ok(bytes::Bytes::from(format!("event: {name}\ndata: {e}\n\n")))
        })
        .collect()
}

async fn collect(chunks: Vec<Result<bytes::Bytes, std::io::Error>>) -> Vec<Item> {
    parse_stream(
        futures::stream::iter(chunks),
        "anthropic".into(),
        "claude".into(),
    )
    .collect()
    .await
}

fn message_start() -> Value {
    json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [], "stop_reason": null,
        "usage": {"input_tokens": 20, "output_tokens": 1, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2}}})
}

fn text_block(index: u32, text: &str) -> Vec<Value> {
    vec![
        json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
        json!({"type": "content_block_stop", "index": index}),
    ]
}

fn message_delta(stop: &str) -> Value {
    json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 42}})
}

fn start() -> StreamEvent {
    StreamEvent::Start {
        id: "msg_1".into(),
        provider: "anthropic".into(),
        model: "claude-x".into(),
    }
}

#[tokio::test]
async fn stream_with_thinking_and_tool_use() {
    let mut evs = vec![message_start(), json!({"type": "ping"})];
    evs.extend([
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me think"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "SIG"}}),
        json!({"type": "content_block_stop", "index": 0}),
    ]);
    evs.extend(text_block(1, "Checking."));
    evs.extend([
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}}}),
        json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        json!({"type": "content_block_stop", "index": 3}),
        message_delta("tool_use"),
        json!({"type": "message_stop"}),
    ]);
    let events: Vec<StreamEvent> = collect(sse(&evs))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        events,
        vec![
            start(),
            StreamEvent::ReasoningDelta {
                text: "Let me think".into()
            },
            StreamEvent::ReasoningSignature {
                signature: "SIG".into()
            },
            StreamEvent::TextDelta {
                text: "Checking.".into()
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "toolu_1".into(),
                name: "weather".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"city\": ".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "\"Paris\"}".into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "toolu_2".into(),
                name: "time".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{}".into()
            },
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                usage: Usage {
                    input: 20,
                    output: 42,
                    // "Let me think": 12 bytes of thinking, 3 tokens of the output.
                    reasoning: 3,
                    cache_read: 5,
                    cache_write: 2
                },
                failed_attempts: vec![],
            },
        ]
    );
}

#[tokio::test]
async fn stream_missing_message_stop_finalises() {
    // Clean end of body after message_delta.
    let mut evs = vec![message_start()];
    evs.extend(text_block(0, "hi"));
    evs.push(message_delta("end_turn"));
    let events = collect(sse(&evs)).await;
    assert!(matches!(
        events.last(),
        Some(Ok(StreamEvent::Finish {
            stop_reason: StopReason::EndTurn,
            usage: Usage {
                output: 42,
                input: 20,
                ..
            },
            ..
        }))
    ));

    // Body left open after message_delta: finalised after the grace period.
    let body = futures::stream::iter(sse(&evs)).chain(futures::stream::pending());
    let began = std::time::Instant::now();
    let events: Vec<Item> = tokio::time::timeout(
        Duration::from_secs(5),
        parse_stream(body, "anthropic".into(), "claude".into()).collect(),
    )
    .await
    .unwrap();
    assert!(began.elapsed() >= FINISH_GRACE);
    assert_eq!(events.len(), 3);
    assert!(matches!(
        events.last(),
        Some(Ok(StreamEvent::Finish {
            stop_reason: StopReason::EndTurn,
            ..
        }))
    ));
}

#[tokio::test]
async fn stream_cut_before_stop_reason_is_an_error() {
    let mut evs = vec![message_start()];
    evs.extend(text_block(0, "hi"));
    let events = collect(sse(&evs)).await;
    assert_eq!(events.len(), 3);
    assert!(matches!(events[2], Err(ProviderError::StreamCut(_))));

    let mut chunks = sse(&evs);
    chunks.push(Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "eof mid-body",
    )));
    let events = collect(chunks).await;
    assert!(matches!(&events[2], Err(ProviderError::StreamCut(m)) if m.contains("eof mid-body")));
}

#[tokio::test]
async fn stream_skips_malformed_data_and_reports_errors() {
    let mut chunks = sse(&[message_start()]);
    chunks.push(Ok(bytes::Bytes::from(
        "event: content_block_delta\ndata: {broken\n\n",
    )));
    chunks.extend(sse(&text_block(0, "ok")));
    chunks.extend(sse(&[
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        message_delta("end_turn"),
    ]));
    let events = collect(chunks).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0].as_ref().unwrap(), &start());
    assert_eq!(
        events[1].as_ref().unwrap(),
        &StreamEvent::TextDelta { text: "ok".into() }
    );
    assert!(
        matches!(&events[2], Err(ProviderError::Status { status: 529, kind: StatusKind::Unavailable, message, .. }) if message == "Overloaded")
    );
    let events = collect(sse(&[
        json!({"type": "error", "error": {"type": "api_error", "message": "Internal"}}),
    ]))
    .await;
    assert!(matches!(
        &events[..],
        [Err(ProviderError::Status {
            status: 500,
            kind: StatusKind::Unavailable,
            ..
        })]
    ));
}

// Adapter over HTTP -----------------------------------------------------------------------------

fn adapter(base_url: String) -> Anthropic {
    let cfg = ProviderConfig {
        name: "anth".into(),
        kind: ProviderKind::Anthropic,
        base_url,
        api_key: Secret::new("sk-ant-test"),
        http2: false,
        connect_timeout: Duration::from_secs(2),
        headers: vec![],
        dir: None,
    };
    let client = crate::provider::client::HttpClient::new(&cfg).expect("client");
    Anthropic::new(cfg, client)
}

#[tokio::test]
async fn stream_over_http_with_headers() {
    let mut evs = vec![message_start()];
    evs.extend(text_block(0, "hello"));
    evs.extend([message_delta("end_turn"), json!({"type": "message_stop"})]);
    let body: String = evs
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    let (url, req) = one_shot_server(http_response(
        "200 OK",
        &[("content-type", "text/event-stream")],
        &body,
    ))
    .await;
    let meta = RequestMeta {
        anthropic_beta: Some("tools-2024".into()),
        ..Default::default()
    };
    let p = adapter(url);
    let req_body = ChatRequest {
        messages: vec![Message::text(Role::User, "hi")],
        ..Default::default()
    };
    let s = p.stream(&req_body, "claude-up", &meta).await.unwrap();
    let events: Vec<StreamEvent> = s.map(Result::unwrap).collect().await;
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[1],
        StreamEvent::TextDelta {
            text: "hello".into()
        }
    );
    let raw = req.await.unwrap().to_ascii_lowercase();
    assert!(raw.starts_with("post /v1/messages "), "{raw}");
    assert!(raw.contains("x-api-key: sk-ant-test"));
    assert!(raw.contains("anthropic-version: 2023-06-01"));
    assert!(raw.contains("anthropic-beta: tools-2024"));
    assert!(raw.contains("content-type: application/json"));
    assert!(raw.contains("\"stream\":true"));
}

#[tokio::test]
async fn streams_read_their_chunked_body_to_its_end_and_reuse_the_connection() {
    let mut evs = vec![message_start()];
    evs.extend(text_block(0, "hello"));
    evs.extend([message_delta("end_turn"), json!({"type": "message_stop"})]);
    let events: Vec<String> = evs
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    for last_chunk_after in [None, Some(Duration::from_millis(10))] {
        let (url, accepted) = chunked_sse_server(events.clone(), last_chunk_after).await;
        streams_share_one_connection(&adapter(url), &accepted, "hello").await;
    }
}

#[tokio::test]
async fn overloaded_status_over_http() {
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let (url, _req) = one_shot_server(http_response(
        "529 Overloaded",
        &[("retry-after", "1")],
        body,
    ))
    .await;
    let err = adapter(url)
        .complete(
            &ChatRequest::default(),
            "claude-up",
            &RequestMeta::default(),
        )
        .await
        .unwrap_err();
    match err {
        ProviderError::Status {
            status,
            kind,
            message,
            retry_after,
        } => {
            assert_eq!(
                (status, kind, message.as_str()),
                (529, StatusKind::Unavailable, "Overloaded")
            );
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn reasoning_is_estimated_from_thinking_and_never_exceeds_the_output() {
    assert_eq!(super::reasoning_tokens(0, 10), 0);
    assert_eq!(super::reasoning_tokens(9, 10), 3);
    assert_eq!(super::reasoning_tokens(4_000, 10), 10);
}

/// An OpenAI caller's conversation on an Anthropic target: system messages inside it join the
/// top-level system (Anthropic refuses them without the beta) or stay in place with it; reasoning
/// effort becomes a thinking budget below max_tokens; structured output becomes
/// `output_config.format`; parallel tool calls and a seed are carried or refused, never dropped.
#[test]
fn translation_of_system_messages_reasoning_and_structured_output() {
    let mut req = ChatRequest {
        system: Some("top".into()),
        messages: vec![
            Message::text(Role::User, "hi"),
            Message::text(Role::System, "be terse"),
            Message::text(Role::User, "go"),
        ],
        tools: vec![Tool {
            name: "t".into(),
            description: None,
            parameters: json!({"type": "object"}),
        }],
        parallel_tool_calls: Some(false),
        reasoning_effort: Some("medium".into()),
        max_tokens: Some(20_000),
        response_format: Some(ResponseFormat::JsonSchema {
            name: "r".into(),
            schema: json!({"type": "object", "properties": {"a": {"type": "string"}}}),
            strict: Some(true),
        }),
        ..Default::default()
    };
    let w = wire(&req, false);
    assert_eq!(w["system"], "top\n\nbe terse");
    assert_eq!(
        w["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "go"}]}])
    );
    assert_eq!(
        w["thinking"],
        json!({"type": "enabled", "budget_tokens": 8192})
    );
    assert_eq!(w["max_tokens"], 20_000);
    assert_eq!(
        w["output_config"],
        json!({"format": {"type": "json_schema", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}})
    );
    assert_eq!(
        w["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    // With the beta, the system message keeps its place.
    let w = serde_json::to_value(to_wire(&req, "claude-up", false, true).unwrap()).unwrap();
    assert_eq!(w["system"], "top");
    assert_eq!(w["messages"][1]["role"], "system");
    // A thinking budget needs room below max_tokens.
    req.max_tokens = Some(1_000);
    let Err(ProviderError::Unsupported(why)) = to_wire(&req, "claude-up", false, false) else {
        panic!("a budget that does not fit is refused");
    };
    assert!(why.contains("reasoning_effort"), "{why}");
    req.max_tokens = None;
    let w = wire(&req, false);
    assert_eq!(w["max_tokens"], 8192 + DEFAULT_MAX_TOKENS);
    // Anthropic has no seed.
    req.seed = Some(1);
    let Err(ProviderError::Unsupported(why)) = to_wire(&req, "claude-up", false, false) else {
        panic!("a seed is refused");
    };
    assert!(why.contains("seed"), "{why}");
}

/// A Messages body is forwarded as the caller wrote it; a body of another API with fields only
/// that API honours is refused naming them.
#[test]
fn same_api_bodies_pass_through_and_untranslatable_ones_are_refused() {
    let body = json!({
        "model": "frontier",
        "max_tokens": 100,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "messages": [{"role": "user", "content": "hi"}],
        "some_future_field": {"x": 1},
    });
    let parsed = crate::ingress::anthropic::parse(body.to_string().as_bytes()).unwrap();
    let sent: Value = serde_json::from_slice(
        &Anthropic::encode(&parsed.req, "claude-up", true, &RequestMeta::default()).unwrap(),
    )
    .unwrap();
    let mut expected = body.clone();
    expected["model"] = json!("claude-up");
    expected["stream"] = json!(true);
    assert_eq!(sent, expected);
    // A Chat Completions body with `logprobs` cannot be carried here.
    let chat = crate::ingress::openai_chat::parse(
        br#"{"model":"m","logprobs":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    let Err(e @ ProviderError::Unsupported(_)) =
        Anthropic::encode(&chat.req, "claude-up", false, &RequestMeta::default())
    else {
        panic!("logprobs cannot be carried to Anthropic");
    };
    assert!(e.to_string().contains("logprobs"), "{e}");
}
