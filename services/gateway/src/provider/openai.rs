//! OpenAI Chat Completions (`POST {base_url}/chat/completions`), and every server that speaks it:
//! vLLM, Ollama, llama.cpp, the simulator.
//!
//! Layout: wire types, conversions between wire and internal types, the SSE parser (generic over the
//! byte stream so it can be tested in memory), the adapter, tests. The error-body helpers at the end of
//! the conversions are shared with the Anthropic adapter.
use std::{collections::HashSet, time::Duration};

use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EventStream, Provider, ProviderError, classify_status, parse_retry_after};
use crate::{
    config::ProviderConfig,
    types::{
        ChatRequest, ChatResponse, Message, Part, RequestMeta, Role, StopReason, StreamEvent,
        ToolChoice, Usage,
    },
};

/// How long a stream that has seen its finish reason (but not yet its usage or `[DONE]`) waits for
/// more before it is finalised with what it has.
pub(crate) const FINISH_GRACE: Duration = Duration::from_millis(500);
/// Largest error body read from an upstream.
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;
/// Longest error message passed on.
pub(crate) const MAX_ERROR_MESSAGE: usize = 500;

// ---------------------------------------------------------------------------------------------
// Wire types: request.

#[derive(Debug, Serialize)]
struct OaRequest<'a> {
    model: &'a str,
    messages: Vec<OaMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OaTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OaToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OaStreamOptions>,
}

#[derive(Debug, Serialize)]
struct OaStreamOptions {
    include_usage: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum OaMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: OaUserContent<'a>,
    },
    Assistant {
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<OaToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum OaUserContent<'a> {
    Text(String),
    Parts(Vec<OaContentPart<'a>>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OaContentPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: OaImageUrl<'a> },
}

#[derive(Debug, Serialize)]
struct OaImageUrl<'a> {
    url: &'a str,
}

#[derive(Debug, Serialize)]
struct OaToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OaFunctionCall<'a>,
}

#[derive(Debug, Serialize)]
struct OaFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct OaTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OaFunctionDef<'a>,
}

#[derive(Debug, Serialize)]
struct OaFunctionDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum OaToolChoice<'a> {
    Mode(&'static str),
    Function {
        #[serde(rename = "type")]
        kind: &'static str,
        function: OaNamedFunction<'a>,
    },
}

#[derive(Debug, Serialize)]
struct OaNamedFunction<'a> {
    name: &'a str,
}

// ---------------------------------------------------------------------------------------------
// Wire types: response and stream chunks.

#[derive(Debug, Deserialize)]
struct OaResponse {
    id: Option<String>,
    model: Option<String>,
    choices: Option<Vec<OaChoice>>,
    usage: Option<OaUsage>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OaChoice {
    #[serde(default)]
    index: u32,
    message: OaResponseMessage,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OaResponseMessage {
    /// A string, or (some servers) an array of `{"type":"text","text"}` parts.
    content: Option<Value>,
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<OaResponseToolCall>>,
}

#[derive(Debug, Deserialize)]
struct OaResponseToolCall {
    id: Option<String>,
    function: OaResponseFunction,
}

#[derive(Debug, Deserialize)]
struct OaResponseFunction {
    name: String,
    arguments: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct OaUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<OaPromptDetails>,
    completion_tokens_details: Option<OaCompletionDetails>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct OaPromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct OaCompletionDetails {
    reasoning_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct OaChunk {
    id: Option<String>,
    model: Option<String>,
    choices: Option<Vec<OaChunkChoice>>,
    usage: Option<OaUsage>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OaChunkChoice {
    #[serde(default)]
    index: u32,
    delta: Option<OaDelta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct OaDelta {
    content: Option<String>,
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<OaToolCallDelta>>,
}

#[derive(Debug, Deserialize)]
struct OaToolCallDelta {
    index: Option<u32>,
    id: Option<String>,
    function: Option<OaFunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct OaFunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Conversions.

/// The wire request for `req` against upstream model `model`.
fn to_wire<'a>(req: &'a ChatRequest, model: &'a str, stream: bool) -> OaRequest<'a> {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        messages.push(OaMessage::System { content: system });
    }
    for m in &req.messages {
        push_message(&mut messages, m);
    }
    let tools: Vec<OaTool<'a>> = req
        .tools
        .iter()
        .map(|t| OaTool {
            kind: "function",
            function: OaFunctionDef {
                name: &t.name,
                description: t.description.as_deref(),
                parameters: &t.parameters,
            },
        })
        .collect();
    // OpenAI rejects `tool_choice` without `tools`.
    let tool_choice = if tools.is_empty() {
        None
    } else {
        req.tool_choice.as_ref().map(|c| match c {
            ToolChoice::Auto => OaToolChoice::Mode("auto"),
            ToolChoice::None => OaToolChoice::Mode("none"),
            ToolChoice::Required => OaToolChoice::Mode("required"),
            ToolChoice::Tool(name) => OaToolChoice::Function {
                kind: "function",
                function: OaNamedFunction { name },
            },
        })
    };
    OaRequest {
        model,
        messages,
        tools,
        tool_choice,
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: &req.stop,
        reasoning_effort: req.reasoning_effort.as_deref(),
        stream,
        stream_options: stream.then_some(OaStreamOptions {
            include_usage: true,
        }),
    }
}

/// Appends the wire messages of one internal message: tool results become `role: tool` messages.
fn push_message<'a>(out: &mut Vec<OaMessage<'a>>, m: &'a Message) {
    let tool_results = m.parts.iter().filter_map(|p| match p {
        Part::ToolResult {
            tool_call_id,
            content,
            ..
        } => Some(OaMessage::Tool {
            tool_call_id,
            content,
        }),
        _ => None,
    });
    match m.role {
        Role::User => {
            // Tool results answer the previous assistant turn, so they go first.
            out.extend(tool_results);
            let has_image = m.parts.iter().any(|p| matches!(p, Part::Image { .. }));
            let texts: Vec<&str> = m
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            if has_image {
                let parts = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text { text } => Some(OaContentPart::Text { text }),
                        Part::Image { url } => Some(OaContentPart::ImageUrl {
                            image_url: OaImageUrl { url },
                        }),
                        _ => None,
                    })
                    .collect();
                out.push(OaMessage::User {
                    content: OaUserContent::Parts(parts),
                });
            } else if !texts.is_empty() {
                out.push(OaMessage::User {
                    content: OaUserContent::Text(texts.join("\n")),
                });
            }
        }
        Role::Assistant => {
            let texts: Vec<&str> = m
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            let tool_calls: Vec<OaToolCall<'a>> = m
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::ToolCall {
                        id,
                        name,
                        arguments,
                    } => Some(OaToolCall {
                        id,
                        kind: "function",
                        function: OaFunctionCall {
                            name,
                            // Some servers parse the arguments for their chat template; "" is not JSON.
                            arguments: if arguments.trim().is_empty() {
                                "{}"
                            } else {
                                arguments
                            },
                        },
                    }),
                    _ => None,
                })
                .collect();
            let content = if texts.is_empty() {
                if tool_calls.is_empty() {
                    Some(String::new())
                } else {
                    None
                }
            } else {
                Some(texts.join("\n"))
            };
            out.push(OaMessage::Assistant {
                content,
                tool_calls,
            });
            // Tool results do not belong in an assistant message; keep them, after the call.
            out.extend(tool_results);
        }
    }
}

fn stop_reason(finish_reason: &str) -> StopReason {
    match finish_reason {
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

fn usage(u: &OaUsage) -> Usage {
    let cached = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0);
    Usage {
        input: u.prompt_tokens.unwrap_or(0).saturating_sub(cached),
        output: u.completion_tokens.unwrap_or(0),
        reasoning: u
            .completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0),
        cache_read: cached,
        cache_write: 0,
    }
}

/// Text of a response `content`: a string, or the text parts of an array.
fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn generated_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Parses a whole (non-streamed) 2xx response body.
fn parse_response(
    body: &[u8],
    provider: &str,
    requested_model: &str,
) -> Result<ChatResponse, ProviderError> {
    let resp: OaResponse = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("chat completion: {e}")))?;
    let choices = resp.choices.unwrap_or_default();
    let Some(choice) = choices.iter().find(|c| c.index == 0).or(choices.first()) else {
        if let Some(err) = &resp.error {
            return Err(error_object_status(err, &String::from_utf8_lossy(body)));
        }
        return Err(ProviderError::Malformed(
            "chat completion without choices".into(),
        ));
    };
    let msg = &choice.message;
    let mut content = Vec::new();
    if let Some(r) = msg
        .reasoning_content
        .as_ref()
        .or(msg.reasoning.as_ref())
        .filter(|r| !r.is_empty())
    {
        content.push(Part::Reasoning {
            text: r.clone(),
            signature: None,
        });
    }
    let text = msg.content.as_ref().map(content_text).unwrap_or_default();
    if !text.is_empty() {
        content.push(Part::Text { text });
    } else if let Some(refusal) = msg.refusal.as_ref().filter(|r| !r.is_empty()) {
        content.push(Part::Text {
            text: refusal.clone(),
        });
    }
    for tc in msg.tool_calls.iter().flatten() {
        content.push(Part::ToolCall {
            id: tc
                .id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| generated_id("call_")),
            name: tc.function.name.clone(),
            arguments: tc.function.arguments.clone().unwrap_or_default(),
        });
    }
    Ok(ChatResponse {
        id: resp
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| generated_id("chatcmpl-")),
        provider: provider.to_owned(),
        model: resp
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| requested_model.to_owned()),
        content,
        stop_reason: choice
            .finish_reason
            .as_deref()
            .map(stop_reason)
            .unwrap_or_default(),
        usage: resp.usage.as_ref().map(usage).unwrap_or_default(),
        failed_attempts: Vec::new(),
    })
}

// Error helpers, shared with the Anthropic adapter.

/// Truncates to at most `max` characters.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// The human-readable message of an upstream error body: `error.message` (OpenAI and Anthropic
/// shapes), `error` as a string, `message` or `detail`; else the body text. At most 500 characters.
pub(crate) fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        s(v.pointer("/error/message"))
            .or_else(|| s(v.get("error")))
            .or_else(|| s(v.get("message")))
            .or_else(|| s(v.get("detail")))
    });
    truncate_chars(
        from_json.as_deref().unwrap_or(body).trim(),
        MAX_ERROR_MESSAGE,
    )
}

/// Reads at most `cap` bytes of a response body; a body that breaks off yields what was read.
pub(crate) async fn read_capped(mut resp: reqwest::Response, cap: usize) -> String {
    let mut buf = Vec::new();
    while buf.len() < cap {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(cap - buf.len());
                buf.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The error for a non-2xx response: status, classification, message and `Retry-After`.
pub(crate) async fn status_error(resp: reqwest::Response) -> ProviderError {
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers());
    let body = read_capped(resp, MAX_ERROR_BODY).await;
    let mut message = error_message(&body);
    if message.is_empty() {
        message = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no error body")
            .to_owned();
    }
    ProviderError::Status {
        status,
        kind: classify_status(status, &body),
        message,
        retry_after,
    }
}

/// The error for an `error` object inside a 2xx body or a stream chunk. `body` is the whole text it
/// came in, for classification. The status comes from a numeric `code`, else 500.
fn error_object_status(err: &Value, body: &str) -> ProviderError {
    let code = err.get("code").and_then(|c| match c {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.parse::<u16>().ok(),
        _ => None,
    });
    let status = code.filter(|c| (400..=599).contains(c)).unwrap_or(500);
    let message = match err {
        Value::String(s) => s.clone(),
        _ => err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("upstream error")
            .to_owned(),
    };
    ProviderError::Status {
        status,
        kind: classify_status(status, body),
        message: truncate_chars(&message, MAX_ERROR_MESSAGE),
        retry_after: None,
    }
}

/// `error` and its sources, joined.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Describes an SSE-level error (transport, UTF-8 or parser).
pub(crate) fn sse_error<E: std::error::Error>(e: &EventStreamError<E>) -> String {
    match e {
        EventStreamError::Transport(e) => error_chain(e),
        EventStreamError::Utf8(e) => format!("invalid UTF-8 in event stream: {e}"),
        EventStreamError::Parser(e) => format!("invalid event stream: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming.

/// Folds the `data:` payloads of one Chat Completions stream into [`StreamEvent`]s.
struct ChunkParser {
    provider: String,
    requested_model: String,
    started: bool,
    finish_reason: Option<StopReason>,
    usage: Option<Usage>,
    /// A usage object arrived in the finish chunk or after it (so it is the final count).
    final_usage: bool,
    tool_calls_started: HashSet<u32>,
}

type Item = Result<StreamEvent, ProviderError>;

impl ChunkParser {
    fn new(provider: String, requested_model: String) -> Self {
        ChunkParser {
            provider,
            requested_model,
            started: false,
            finish_reason: None,
            usage: None,
            final_usage: false,
            tool_calls_started: HashSet::new(),
        }
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<Item>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(Ok(StreamEvent::Start {
            id: id
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| generated_id("chatcmpl-")),
            provider: self.provider.clone(),
            model: model
                .filter(|s| !s.is_empty())
                .unwrap_or(&self.requested_model)
                .to_owned(),
        }));
    }

    /// The closing event (preceded by `Start` if none was sent).
    fn finish(&mut self, out: &mut Vec<Item>) {
        self.start(None, None, out);
        out.push(Ok(StreamEvent::Finish {
            stop_reason: self.finish_reason.unwrap_or_default(),
            usage: self.usage.unwrap_or_default(),
            failed_attempts: Vec::new(),
        }));
    }

    /// Whether the finish reason was seen, so the stream may be finalised at its end.
    fn finishable(&self) -> bool {
        self.finish_reason.is_some()
    }

    /// Handles one `data:` payload; returns true when the stream is over (after `Finish` or `Err`).
    fn on_data(&mut self, data: &str, out: &mut Vec<Item>) -> bool {
        let data = data.trim();
        if data.is_empty() {
            return false;
        }
        if data == "[DONE]" {
            self.finish(out);
            return true;
        }
        let chunk: OaChunk = match serde_json::from_str(data) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(provider = %self.provider, error = %e, "skipping unparsable stream chunk");
                return false;
            }
        };
        if let Some(err) = &chunk.error {
            out.push(Err(error_object_status(err, data)));
            return true;
        }
        self.start(chunk.id.as_deref(), chunk.model.as_deref(), out);
        for choice in chunk.choices.iter().flatten().filter(|c| c.index == 0) {
            if let Some(delta) = &choice.delta {
                self.on_delta(delta, out);
            }
            if let Some(fr) = choice.finish_reason.as_deref().filter(|f| !f.is_empty()) {
                self.finish_reason = Some(stop_reason(fr));
            }
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(usage(u));
            self.final_usage = self.finish_reason.is_some();
        }
        if self.finish_reason.is_some() && self.final_usage {
            self.finish(out);
            return true;
        }
        false
    }

    fn on_delta(&mut self, delta: &OaDelta, out: &mut Vec<Item>) {
        let reasoning = delta
            .reasoning_content
            .as_ref()
            .or(delta.reasoning.as_ref());
        if let Some(text) = reasoning.filter(|t| !t.is_empty()) {
            out.push(Ok(StreamEvent::ReasoningDelta { text: text.clone() }));
        }
        if let Some(text) = delta.content.as_ref().filter(|t| !t.is_empty()) {
            out.push(Ok(StreamEvent::TextDelta { text: text.clone() }));
        } else if let Some(text) = delta.refusal.as_ref().filter(|t| !t.is_empty()) {
            out.push(Ok(StreamEvent::TextDelta { text: text.clone() }));
        }
        for (pos, tc) in delta.tool_calls.iter().flatten().enumerate() {
            let index = tc.index.unwrap_or(pos as u32);
            let name = tc
                .function
                .as_ref()
                .and_then(|f| f.name.as_deref())
                .filter(|n| !n.is_empty());
            let id = tc.id.as_deref().filter(|id| !id.is_empty());
            if !self.tool_calls_started.contains(&index) && (id.is_some() || name.is_some()) {
                self.tool_calls_started.insert(index);
                out.push(Ok(StreamEvent::ToolCallStart {
                    index,
                    id: id
                        .map(str::to_owned)
                        .unwrap_or_else(|| generated_id("call_")),
                    name: name.unwrap_or_default().to_owned(),
                }));
            }
            if let Some(args) = tc
                .function
                .as_ref()
                .and_then(|f| f.arguments.as_ref())
                .filter(|a| !a.is_empty())
            {
                out.push(Ok(StreamEvent::ToolCallDelta {
                    index,
                    arguments: args.clone(),
                }));
            }
        }
    }
}

/// Turns the body of a Chat Completions SSE response into [`StreamEvent`]s. See the module tests for
/// the end-of-stream rules: `[DONE]`, finish reason plus usage, a clean end after the finish reason, or
/// [`FINISH_GRACE`] of silence after it finalise; an end before any finish reason is a `StreamCut`.
pub(crate) fn parse_stream<S, B, E>(
    body: S,
    provider: String,
    requested_model: String,
) -> EventStream
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    Box::pin(async_stream::stream! {
        let mut events = Box::pin(body.eventsource());
        let mut parser = ChunkParser::new(provider, requested_model);
        let mut out: Vec<Item> = Vec::new();
        loop {
            let next = if parser.finishable() {
                match tokio::time::timeout(FINISH_GRACE, events.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        parser.finish(&mut out);
                        for item in out.drain(..) {
                            yield item;
                        }
                        return;
                    }
                }
            } else {
                events.next().await
            };
            let done = match next {
                Some(Ok(event)) => parser.on_data(&event.data, &mut out),
                Some(Err(e)) if parser.finishable() => {
                    tracing::debug!(provider = %parser.provider, error = %sse_error(&e), "stream broke off after its finish reason");
                    parser.finish(&mut out);
                    true
                }
                Some(Err(e)) => {
                    out.push(Err(ProviderError::StreamCut(sse_error(&e))));
                    true
                }
                None if parser.finishable() => {
                    parser.finish(&mut out);
                    true
                }
                None => {
                    out.push(Err(ProviderError::StreamCut("upstream stream ended before a finish reason".into())));
                    true
                }
            };
            for item in out.drain(..) {
                yield item;
            }
            if done {
                return;
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Adapter.

pub struct OpenAi {
    cfg: ProviderConfig,
    client: reqwest::Client,
}

impl OpenAi {
    pub fn new(cfg: ProviderConfig, client: reqwest::Client) -> Self {
        OpenAi { cfg, client }
    }

    /// Sends one request; a non-2xx answer becomes `ProviderError::Status`.
    async fn send(&self, body: &OaRequest<'_>) -> Result<reqwest::Response, ProviderError> {
        let mut rb = self
            .client
            .post(format!("{}/chat/completions", self.cfg.base_url))
            .json(body);
        if !self.cfg.api_key.is_empty() {
            rb = rb.bearer_auth(self.cfg.api_key.expose());
        }
        if body.stream {
            rb = rb.header(http::header::ACCEPT, "text/event-stream");
        }
        for (k, v) in &self.cfg.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| ProviderError::from_reqwest(&e))?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        Ok(resp)
    }
}

#[async_trait::async_trait]
impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn complete(
        &self,
        req: &ChatRequest,
        model: &str,
        _meta: &RequestMeta,
    ) -> Result<ChatResponse, ProviderError> {
        let resp = self.send(&to_wire(req, model, false)).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| ProviderError::from_reqwest(&e))?;
        parse_response(&body, &self.cfg.name, model)
    }

    async fn stream(
        &self,
        req: &ChatRequest,
        model: &str,
        _meta: &RequestMeta,
    ) -> Result<EventStream, ProviderError> {
        let resp = self.send(&to_wire(req, model, true)).await?;
        Ok(parse_stream(
            resp.bytes_stream(),
            self.cfg.name.clone(),
            model.to_owned(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{
        config::{ProviderKind, Secret},
        provider::StatusKind,
        types::Tool,
    };
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    pub(crate) async fn one_shot_server(
        response: String,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            loop {
                let n = sock.read(&mut tmp).await.unwrap();
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            sock.write_all(response.as_bytes()).await.unwrap();
            sock.shutdown().await.unwrap();
            String::from_utf8_lossy(&buf).into_owned()
        });
        (format!("http://{addr}/v1"), handle)
    }

    pub(crate) fn http_response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
        let mut s = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.push_str(body);
        s
    }

    fn adapter(base_url: String, key: &str) -> OpenAi {
        let cfg = ProviderConfig {
            name: "oai".into(),
            kind: ProviderKind::Openai,
            base_url,
            api_key: Secret::new(key),
            http2: false,
            connect_timeout: Duration::from_secs(2),
            headers: vec![("x-extra".into(), "yes".into())],
        };
        OpenAi::new(cfg, reqwest::Client::new())
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
}
