#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::{stream::Item, *};
use crate::{
    config::{ProviderKind, Secret},
    provider::{
        StatusKind,
        common::{FINISH_GRACE, error_message},
        test_support::{
            chunked_sse_server, http_response, one_shot_server, streams_share_one_connection,
        },
    },
    types::{StreamEvent, Tool},
};
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;

fn wire(req: &ChatRequest, stream: bool) -> Value {
    serde_json::to_value(to_wire(req, "gpt-up", stream)).unwrap()
}

#[test]
fn request_with_system_tools_and_tool_results() {
    let req = ChatRequest {
        model: "alias".into(),
        system: Some("be brief".into()),
        messages: vec![
            Message::text(Role::User, "weather in Paris and Rome?"),
            Message {
                role: Role::Assistant,
                parts: vec![
                    Part::Reasoning {
                        text: "thinking".into(),
                        signature: Some("sig".into()),
                    },
                    Part::Text {
                        text: "Checking.".into(),
                    },
                    Part::ToolCall {
                        id: "c1".into(),
                        name: "weather".into(),
                        arguments: r#"{"city":"Paris"}"#.into(),
                    },
                    Part::ToolCall {
                        id: "c2".into(),
                        name: "weather".into(),
                        arguments: String::new(),
                    },
                ],
            },
            Message {
                role: Role::User,
                parts: vec![
                    Part::ToolResult {
                        tool_call_id: "c1".into(),
                        content: "sunny".into(),
                        is_error: false,
                    },
                    Part::ToolResult {
                        tool_call_id: "c2".into(),
                        content: "rain".into(),
                        is_error: false,
                    },
                    Part::Text {
                        text: "thanks".into(),
                    },
                ],
            },
        ],
        tools: vec![Tool {
            name: "weather".into(),
            description: Some("current weather".into()),
            parameters: json!({"type":"object"}),
        }],
        tool_choice: Some(ToolChoice::Tool("weather".into())),
        max_tokens: Some(100),
        temperature: Some(0.5),
        stop: vec![],
        reasoning_effort: Some("low".into()),
        ..Default::default()
    };
    let v = wire(&req, false);
    assert_eq!(
        v,
        json!({
            "model": "gpt-up",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "c2", "content": "rain"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "current weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "max_tokens": 100,
            "temperature": 0.5,
            "reasoning_effort": "low"
        })
    );
}

#[test]
fn request_tool_choice_modes_images_and_stream_options() {
    let mut req = ChatRequest {
        messages: vec![
            Message {
                role: Role::User,
                parts: vec![
                    Part::Text {
                        text: "what is this?".into(),
                    },
                    Part::Image {
                        url: "data:image/png;base64,AAAA".into(),
                    },
                ],
            },
            Message {
                role: Role::User,
                parts: vec![Part::ToolResult {
                    tool_call_id: "x".into(),
                    content: "r".into(),
                    is_error: true,
                }],
            },
            Message {
                role: Role::Assistant,
                parts: vec![Part::ToolCall {
                    id: "y".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                }],
            },
        ],
        tools: vec![Tool {
            name: "f".into(),
            description: None,
            parameters: json!({}),
        }],
        stop: vec!["END".into()],
        ..Default::default()
    };
    for (choice, expected) in [
        (ToolChoice::Auto, json!("auto")),
        (ToolChoice::None, json!("none")),
        (ToolChoice::Required, json!("required")),
    ] {
        req.tool_choice = Some(choice);
        assert_eq!(wire(&req, false)["tool_choice"], expected);
    }
    let v = wire(&req, true);
    assert_eq!(v["stream"], json!(true));
    assert_eq!(v["stream_options"], json!({"include_usage": true}));
    assert_eq!(v["stop"], json!(["END"]));
    assert_eq!(
        v["messages"][0]["content"],
        json!([{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    );
    // A user message with only tool results leaves no user message behind.
    assert_eq!(
        v["messages"][1],
        json!({"role": "tool", "tool_call_id": "x", "content": "r"})
    );
    assert_eq!(
        v["messages"][2],
        json!({"role": "assistant", "tool_calls": [{"id": "y", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
    );
    assert!(v["tools"][0]["function"].get("description").is_none());
    // Not streaming: neither field; no tools: no tool_choice.
    req.tools.clear();
    let v = wire(&req, false);
    assert!(
        v.get("stream").is_none()
            && v.get("stream_options").is_none()
            && v.get("tool_choice").is_none()
    );
}

#[test]
fn parses_response_with_cached_usage() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me look.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]
        }}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
                  "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 10}}
    });
    let r = parse_response(body.to_string().as_bytes(), "openai", "gpt-4o").unwrap();
    assert_eq!(r.id, "chatcmpl-1");
    assert_eq!(r.provider, "openai");
    assert_eq!(r.model, "gpt-4o-2024");
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(
        r.content,
        vec![
            Part::Text {
                text: "Let me look.".into()
            },
            Part::ToolCall {
                id: "call_1".into(),
                name: "weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            },
        ]
    );
    assert_eq!(
        r.usage,
        Usage {
            input: 40,
            output: 30,
            reasoning: 10,
            cache_read: 60,
            cache_write: 0
        }
    );
    assert!(r.failed_attempts.is_empty());
}

#[test]
fn parses_minimal_response_and_rejects_garbage() {
    let body = json!({"id": "x", "choices": [{"message": {"content": "hi", "reasoning_content": "hmm"}, "finish_reason": "length"}],
                      "usage": {"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": null}});
    let r = parse_response(body.to_string().as_bytes(), "vllm", "qwen").unwrap();
    assert_eq!(r.model, "qwen");
    assert_eq!(r.stop_reason, StopReason::MaxTokens);
    assert_eq!(
        r.content,
        vec![
            Part::Reasoning {
                text: "hmm".into(),
                signature: None
            },
            Part::Text { text: "hi".into() }
        ]
    );
    assert_eq!(
        r.usage,
        Usage {
            input: 5,
            output: 2,
            ..Default::default()
        }
    );
    assert!(matches!(
        parse_response(b"<html>", "p", "m"),
        Err(ProviderError::Malformed(_))
    ));
    assert!(matches!(
        parse_response(b"{\"choices\":[]}", "p", "m"),
        Err(ProviderError::Malformed(_))
    ));
    let err = parse_response(
        br#"{"error":{"message":"overloaded","code":503}}"#,
        "p",
        "m",
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Status {
                status: 503,
                kind: StatusKind::Unavailable,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn maps_finish_reasons() {
    assert_eq!(stop_reason("stop"), StopReason::EndTurn);
    assert_eq!(stop_reason("length"), StopReason::MaxTokens);
    assert_eq!(stop_reason("tool_calls"), StopReason::ToolUse);
    assert_eq!(stop_reason("function_call"), StopReason::ToolUse);
    assert_eq!(stop_reason("content_filter"), StopReason::ContentFilter);
}

#[test]
fn extracts_error_messages() {
    assert_eq!(
        error_message(r#"{"error":{"message":"bad model","type":"invalid_request_error"}}"#),
        "bad model"
    );
    assert_eq!(
        error_message(
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
        ),
        "Overloaded"
    );
    assert_eq!(
        error_message(r#"{"error":"model not found"}"#),
        "model not found"
    );
    assert_eq!(error_message("  plain text\n"), "plain text");
    assert_eq!(error_message(&"é".repeat(600)).chars().count(), 500);
}

// Streaming ----------------------------------------------------------------------------------

fn sse(lines: &[&str]) -> Vec<Result<bytes::Bytes, std::io::Error>> {
    lines
        .iter()
        .map(|l| Ok(bytes::Bytes::from(format!("data: {l}\n\n"))))
        .collect()
}

async fn collect(chunks: Vec<Result<bytes::Bytes, std::io::Error>>) -> Vec<Item> {
    parse_stream(
        futures::stream::iter(chunks),
        "sim".into(),
        "req-model".into(),
    )
    .collect()
    .await
}

fn text_chunk(text: &str) -> String {
    json!({"id": "c1", "model": "m1", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}).to_string()
}

fn finish_chunk(reason: &str) -> String {
    json!({"id": "c1", "model": "m1", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}], "usage": null}).to_string()
}

fn usage_chunk() -> String {
    json!({"id": "c1", "model": "m1", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 3}}}).to_string()
}

fn start() -> StreamEvent {
    StreamEvent::Start {
        id: "c1".into(),
        provider: "sim".into(),
        model: "m1".into(),
    }
}

#[tokio::test]
async fn stream_with_usage_and_done() {
    let first = json!({"id": "c1", "model": "m1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}).to_string();
    let events = collect(sse(&[
        &first,
        &text_chunk("Hel"),
        &text_chunk("lo"),
        &finish_chunk("stop"),
        &usage_chunk(),
        "[DONE]",
    ]))
    .await;
    let events: Vec<StreamEvent> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        events,
        vec![
            start(),
            StreamEvent::TextDelta { text: "Hel".into() },
            StreamEvent::TextDelta { text: "lo".into() },
            StreamEvent::Finish {
                stop_reason: StopReason::EndTurn,
                usage: Usage {
                    input: 7,
                    output: 4,
                    reasoning: 0,
                    cache_read: 3,
                    cache_write: 0
                },
                failed_attempts: vec![],
            },
        ]
    );
}

#[tokio::test]
async fn stream_finishes_on_finish_and_usage_without_waiting_for_done() {
    // The body never ends after the usage chunk: Finish must come anyway, and promptly.
    let body = futures::stream::iter(sse(&[
        &text_chunk("a"),
        &finish_chunk("length"),
        &usage_chunk(),
    ]))
    .chain(futures::stream::pending());
    let mut s = parse_stream(body, "sim".into(), "req-model".into());
    let mut got = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
    {
        got.push(ev.unwrap());
    }
    assert!(
        matches!(got.last(), Some(StreamEvent::Finish { stop_reason: StopReason::MaxTokens, usage, .. }) if usage.output == 4)
    );
}

#[tokio::test]
async fn stream_missing_done_finalises() {
    // Clean end of body after the finish reason, no usage, no [DONE].
    let events = collect(sse(&[&text_chunk("hi"), &finish_chunk("stop")])).await;
    assert_eq!(events.len(), 3);
    assert!(matches!(
        events[2],
        Ok(StreamEvent::Finish {
            stop_reason: StopReason::EndTurn,
            usage: Usage { output: 0, .. },
            ..
        })
    ));

    // Body stays open after the finish reason: finalised after the grace period.
    let body = futures::stream::iter(sse(&[&text_chunk("hi"), &finish_chunk("stop")]))
        .chain(futures::stream::pending());
    let began = std::time::Instant::now();
    let events: Vec<Item> = tokio::time::timeout(
        Duration::from_secs(5),
        parse_stream(body, "sim".into(), "m".into()).collect(),
    )
    .await
    .unwrap();
    assert!(began.elapsed() >= FINISH_GRACE);
    assert!(matches!(
        events.last(),
        Some(Ok(StreamEvent::Finish { .. }))
    ));
}

#[tokio::test]
async fn stream_cut_before_finish_is_an_error() {
    let events = collect(sse(&[&text_chunk("hi")])).await;
    assert_eq!(events.len(), 3);
    assert!(matches!(events[2], Err(ProviderError::StreamCut(_))));

    let mut chunks = sse(&[&text_chunk("hi")]);
    chunks.push(Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset",
    )));
    chunks.extend(sse(&[&finish_chunk("stop")]));
    let events = collect(chunks).await;
    assert_eq!(events.len(), 3, "nothing after the error: {events:?}");
    assert!(matches!(&events[2], Err(ProviderError::StreamCut(m)) if m.contains("reset")));
}

#[tokio::test]
async fn stream_skips_malformed_lines() {
    let events = collect(sse(&[
        "{not json",
        &text_chunk("ok"),
        "",
        &finish_chunk("stop"),
        "[DONE]",
    ]))
    .await;
    let events: Vec<StreamEvent> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0], start());
    assert_eq!(events[1], StreamEvent::TextDelta { text: "ok".into() });
}

#[tokio::test]
async fn stream_error_chunk() {
    let err = json!({"error": {"message": "model overloaded", "code": 503}}).to_string();
    let events = collect(sse(&[&text_chunk("a"), &err, &finish_chunk("stop")])).await;
    assert_eq!(events.len(), 3);
    assert!(
        matches!(&events[2], Err(ProviderError::Status { status: 503, kind: StatusKind::Unavailable, message, .. }) if message == "model overloaded")
    );
    let err = json!({"error": {"message": "boom", "type": "server_error"}}).to_string();
    let events = collect(sse(&[&err])).await;
    assert!(matches!(
        &events[..],
        [Err(ProviderError::Status { status: 500, .. })]
    ));
}

#[tokio::test]
async fn stream_tool_call_deltas_and_reasoning() {
    let chunks = [
        json!({"id": "c1", "model": "m1", "choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]}),
        json!({"id": "c1", "model": "m1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]}}]}),
        json!({"id": "c1", "model": "m1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{\"city\":"}}]}}]}),
        json!({"id": "c1", "model": "m1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "\"Paris\"}"}}]}}]}),
        // A second call whose first fragment carries id, name and arguments at once.
        json!({"id": "c1", "model": "m1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}}]}}]}),
        json!({"id": "c1", "model": "m1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ]
    .map(|c| c.to_string());
    let refs: Vec<&str> = chunks
        .iter()
        .map(String::as_str)
        .chain(["[DONE]"])
        .collect();
    let events: Vec<StreamEvent> = collect(sse(&refs))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        events,
        vec![
            start(),
            StreamEvent::ReasoningDelta {
                text: "think".into()
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_a".into(),
                name: "weather".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"city\":".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "\"Paris\"}".into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "call_b".into(),
                name: "time".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{}".into()
            },
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                usage: Usage::default(),
                failed_attempts: vec![]
            },
        ]
    );
}

#[tokio::test]
async fn stream_handles_lines_split_across_chunks() {
    let whole = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        text_chunk("héllo"),
        finish_chunk("stop")
    );
    let bytes = whole.into_bytes();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
        .chunks(7)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let events: Vec<StreamEvent> = collect(chunks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        events[1],
        StreamEvent::TextDelta {
            text: "héllo".into()
        }
    );
    assert_eq!(events.len(), 3);
}

// Adapter over HTTP -----------------------------------------------------------------------------

/// Serves one canned HTTP response and returns the base URL and the raw request it received.
fn adapter(base_url: String, key: &str) -> OpenAi {
    let cfg = ProviderConfig {
        name: "oai".into(),
        kind: ProviderKind::Openai,
        base_url,
        api_key: Secret::new(key),
        http2: false,
        connect_timeout: Duration::from_secs(2),
        headers: vec![("x-extra".into(), "yes".into())],
        dir: None,
    };
    let client = crate::provider::client::HttpClient::new(&cfg).expect("client");
    OpenAi::new(cfg, client)
}

#[tokio::test]
async fn complete_over_http() {
    let body = json!({"id": "r1", "model": "up", "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]});
    let (url, req) = one_shot_server(http_response(
        "200 OK",
        &[("content-type", "application/json")],
        &body.to_string(),
    ))
    .await;
    let p = adapter(url, "sk-test");
    let r = p
        .complete(
            &ChatRequest {
                messages: vec![Message::text(Role::User, "hey")],
                ..Default::default()
            },
            "up",
            &RequestMeta::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.text(), "hi");
    assert_eq!(r.provider, "oai");
    let raw = req.await.unwrap().to_ascii_lowercase();
    assert!(raw.starts_with("post /v1/chat/completions "), "{raw}");
    assert!(raw.contains("authorization: bearer sk-test"));
    assert!(raw.contains("x-extra: yes"));
}

#[tokio::test]
async fn status_errors_over_http() {
    let body = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
    let (url, req) = one_shot_server(http_response(
        "429 Too Many Requests",
        &[("retry-after", "3")],
        body,
    ))
    .await;
    let p = adapter(url, "");
    let err = match p
        .stream(&ChatRequest::default(), "up", &RequestMeta::default())
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    };
    match err {
        ProviderError::Status {
            status,
            kind,
            message,
            retry_after,
        } => {
            assert_eq!(
                (status, kind, message.as_str()),
                (429, StatusKind::RateLimited, "Rate limit reached")
            );
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
        }
        other => panic!("unexpected {other:?}"),
    }
    let raw = req.await.unwrap().to_ascii_lowercase();
    assert!(!raw.contains("authorization"), "no key, no header: {raw}");

    let (url, _req) = one_shot_server(http_response(
        "400 Bad Request",
        &[],
        "This model's maximum context length is 8192 tokens",
    ))
    .await;
    let err = adapter(url, "k")
        .complete(&ChatRequest::default(), "up", &RequestMeta::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Status {
                status: 400,
                kind: StatusKind::ContextLength,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn streams_read_their_chunked_body_to_its_end_and_reuse_the_connection() {
    let events: Vec<String> = [text_chunk("hi"), finish_chunk("stop"), "[DONE]".into()]
        .iter()
        .map(|d| format!("data: {d}\n\n"))
        .collect();
    for last_chunk_after in [None, Some(Duration::from_millis(10))] {
        let (url, accepted) = chunked_sse_server(events.clone(), last_chunk_after).await;
        streams_share_one_connection(&adapter(url, "sk-test"), &accepted, "hi").await;
    }
}

/// An Anthropic caller's conversation on an OpenAI target: a system message inside it stays in
/// place; structured output becomes `response_format`; parallel tool calls and the seed are sent.
#[test]
fn translation_of_system_messages_and_structured_output() {
    let req = ChatRequest {
        messages: vec![
            crate::types::Message::text(Role::User, "hi"),
            crate::types::Message::text(Role::System, "be terse"),
        ],
        tools: vec![Tool {
            name: "t".into(),
            description: None,
            parameters: json!({"type": "object"}),
        }],
        parallel_tool_calls: Some(false),
        seed: Some(3),
        response_format: Some(ResponseFormat::JsonSchema {
            name: "output".into(),
            schema: json!({"type": "object"}),
            strict: Some(true),
        }),
        ..Default::default()
    };
    let w = wire(&req, false);
    assert_eq!(
        w["messages"][1],
        json!({"role": "system", "content": "be terse"})
    );
    assert_eq!(
        w["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": true}})
    );
    assert_eq!(w["parallel_tool_calls"], false);
    assert_eq!(w["seed"], 3);
}

/// A Chat Completions body is forwarded as the caller wrote it (streamed: usage asked for).
#[test]
fn chat_bodies_pass_through() {
    let body = json!({
        "model": "frontier",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_object"},
        "logprobs": true,
        "top_logprobs": 2,
        "stream": true,
    });
    let parsed = crate::ingress::openai_chat::parse(body.to_string().as_bytes()).unwrap();
    let sent: Value =
        serde_json::from_slice(&OpenAi::encode(&parsed.req, "gpt-up", true).unwrap()).unwrap();
    let mut expected = body.clone();
    expected["model"] = json!("gpt-up");
    expected["stream_options"] = json!({"include_usage": true});
    assert_eq!(sent, expected);
}
