//! Anthropic Messages (`POST {base_url}/messages`).
//!
//! Layout: wire types, conversions between wire and internal types, the SSE parser (generic over the
//! byte stream so it can be tested in memory), the adapter, tests. Error-body helpers are shared with
//! the OpenAI adapter.
use std::collections::HashMap;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    EventStream, Provider, ProviderError, classify_status,
    openai::{FINISH_GRACE, MAX_ERROR_MESSAGE, sse_error, status_error, truncate_chars},
};
use crate::{
    config::ProviderConfig,
    types::{
        ChatRequest, ChatResponse, Part, RequestMeta, Role, StopReason, StreamEvent, ToolChoice,
        Usage,
    },
};

/// Anthropic requires `max_tokens`; used when the caller gave none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

// ---------------------------------------------------------------------------------------------
// Wire types: request.

#[derive(Debug, Serialize)]
struct AnRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<AnMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<AnTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<AnToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Serialize)]
struct AnMessage<'a> {
    role: AnRole,
    content: Vec<AnBlock<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum AnRole {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnBlock<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: AnImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
        is_error: bool,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Debug, Serialize)]
struct AnTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a Value,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnToolChoice<'a> {
    Auto,
    Any,
    None,
    Tool { name: &'a str },
}

// ---------------------------------------------------------------------------------------------
// Wire types: response and stream events.

#[derive(Debug, Deserialize)]
struct AnResponse {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    model: Option<String>,
    content: Option<Vec<AnResponseBlock>>,
    stop_reason: Option<String>,
    usage: Option<AnUsage>,
    error: Option<AnError>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnResponseBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        thinking: String,
        signature: Option<String>,
    },
    /// `redacted_thinking`, server tool blocks and anything newer.
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct AnUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct AnError {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnEvent {
    MessageStart {
        message: AnStreamMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: AnStartBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: AnDelta,
    },
    MessageDelta {
        delta: AnMessageDelta,
        usage: Option<AnUsage>,
    },
    MessageStop,
    Error {
        error: AnError,
    },
    /// `ping`, `content_block_stop` and anything newer.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct AnStreamMessage {
    id: Option<String>,
    model: Option<String>,
    usage: Option<AnUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnStartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    /// `signature_delta` (no place for it in [`StreamEvent`]), `citations_delta`, anything newer.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct AnMessageDelta {
    stop_reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Conversions.

/// The wire request for `req` against upstream model `model`.
fn to_wire<'a>(req: &'a ChatRequest, model: &'a str, stream: bool) -> AnRequest<'a> {
    let mut messages: Vec<AnMessage<'a>> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let role = match m.role {
            Role::User => AnRole::User,
            Role::Assistant => AnRole::Assistant,
        };
        let blocks: Vec<AnBlock<'a>> = m.parts.iter().filter_map(|p| to_block(p, role)).collect();
        if blocks.is_empty() {
            continue;
        }
        // Anthropic requires alternating roles: merge consecutive messages of one role.
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(AnMessage {
                role,
                content: blocks,
            }),
        }
    }
    // In a user turn, tool results must come before any other content.
    for m in messages.iter_mut().filter(|m| m.role == AnRole::User) {
        m.content
            .sort_by_key(|b| !matches!(b, AnBlock::ToolResult { .. }));
    }
    let tools: Vec<AnTool<'a>> = req
        .tools
        .iter()
        .map(|t| AnTool {
            name: &t.name,
            description: t.description.as_deref(),
            input_schema: &t.parameters,
        })
        .collect();
    // Anthropic rejects `tool_choice` without `tools`.
    let tool_choice = if tools.is_empty() {
        None
    } else {
        req.tool_choice.as_ref().map(|c| match c {
            ToolChoice::Auto => AnToolChoice::Auto,
            ToolChoice::None => AnToolChoice::None,
            ToolChoice::Required => AnToolChoice::Any,
            ToolChoice::Tool(name) => AnToolChoice::Tool { name },
        })
    };
    AnRequest {
        model,
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system: req.system.as_deref(),
        messages,
        tools,
        tool_choice,
        temperature: req.temperature,
        top_p: req.top_p,
        stop_sequences: &req.stop,
        // `reasoning_effort` is not sent: Anthropic takes a `thinking` budget in tokens instead, and
        // there is no agreed mapping from an effort level to a budget.
        stream,
    }
}

/// One content block, or `None` for parts Anthropic cannot take here.
fn to_block(p: &Part, role: AnRole) -> Option<AnBlock<'_>> {
    Some(match p {
        // Anthropic rejects empty text blocks.
        Part::Text { text } if text.is_empty() => return None,
        Part::Text { text } => AnBlock::Text { text },
        Part::Image { url } => AnBlock::Image {
            source: image_source(url),
        },
        Part::ToolCall {
            id,
            name,
            arguments,
        } => AnBlock::ToolUse {
            id,
            name,
            input: tool_input(arguments),
        },
        Part::ToolResult {
            tool_call_id,
            content,
            is_error,
        } => AnBlock::ToolResult {
            tool_use_id: tool_call_id,
            content,
            is_error: *is_error,
        },
        // Thinking can only be handed back (in an assistant turn) with its signature.
        Part::Reasoning {
            text,
            signature: Some(signature),
        } if role == AnRole::Assistant => AnBlock::Thinking {
            thinking: text,
            signature,
        },
        Part::Reasoning { .. } => return None,
    })
}

/// A data URL (`data:image/png;base64,...`) becomes a base64 source; anything else a URL source.
fn image_source(url: &str) -> AnImageSource<'_> {
    let base64 = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(','))
        .and_then(|(meta, data)| {
            let mut params = meta.split(';');
            let media_type = params.next().filter(|m| !m.is_empty())?;
            params
                .any(|p| p == "base64")
                .then_some(AnImageSource::Base64 { media_type, data })
        });
    base64.unwrap_or(AnImageSource::Url { url })
}

/// Tool-call arguments as the JSON object Anthropic wants; anything else becomes `{}`.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(serde_json::Map::new()),
    }
}

fn stop_reason(s: &str) -> StopReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::ContentFilter,
        // end_turn, pause_turn, anything newer.
        _ => StopReason::EndTurn,
    }
}

/// Overwrites the fields of `usage` that `u` carries.
fn merge_usage(usage: &mut Usage, u: &AnUsage) {
    if let Some(v) = u.input_tokens {
        usage.input = v;
    }
    if let Some(v) = u.output_tokens {
        usage.output = v;
    }
    if let Some(v) = u.cache_read_input_tokens {
        usage.cache_read = v;
    }
    if let Some(v) = u.cache_creation_input_tokens {
        usage.cache_write = v;
    }
}

/// The HTTP status an Anthropic error type stands for (used for errors inside 2xx bodies and streams).
fn error_type_status(kind: Option<&str>) -> u16 {
    match kind.unwrap_or_default() {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// The error for an `error` object inside a 2xx body or a stream event; `body` is the whole text it
/// came in, for classification.
fn error_status(err: &AnError, body: &str) -> ProviderError {
    let status = error_type_status(err.kind.as_deref());
    ProviderError::Status {
        status,
        kind: classify_status(status, body),
        message: truncate_chars(
            err.message.as_deref().unwrap_or("upstream error"),
            MAX_ERROR_MESSAGE,
        ),
        retry_after: None,
    }
}

fn generated_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// Parses a whole (non-streamed) 2xx response body.
fn parse_response(
    body: &[u8],
    provider: &str,
    requested_model: &str,
) -> Result<ChatResponse, ProviderError> {
    let resp: AnResponse = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("messages response: {e}")))?;
    if resp.kind.as_deref() == Some("error") || (resp.content.is_none() && resp.error.is_some()) {
        return Err(error_status(
            &resp.error.unwrap_or_default(),
            &String::from_utf8_lossy(body),
        ));
    }
    let Some(blocks) = resp.content else {
        return Err(ProviderError::Malformed(
            "messages response without content".into(),
        ));
    };
    let content = blocks
        .into_iter()
        .filter_map(|b| match b {
            AnResponseBlock::Text { text } => Some(Part::Text { text }),
            AnResponseBlock::ToolUse { id, name, input } => {
                let input = if input.is_null() {
                    Value::Object(serde_json::Map::new())
                } else {
                    input
                };
                Some(Part::ToolCall {
                    id,
                    name,
                    arguments: input.to_string(),
                })
            }
            AnResponseBlock::Thinking {
                thinking,
                signature,
            } => Some(Part::Reasoning {
                text: thinking,
                signature,
            }),
            AnResponseBlock::Other => None,
        })
        .collect();
    let mut usage = Usage::default();
    if let Some(u) = &resp.usage {
        merge_usage(&mut usage, u);
    }
    Ok(ChatResponse {
        id: resp
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(generated_id),
        provider: provider.to_owned(),
        model: resp
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| requested_model.to_owned()),
        content,
        stop_reason: resp
            .stop_reason
            .as_deref()
            .map(stop_reason)
            .unwrap_or_default(),
        usage,
        failed_attempts: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// Streaming.

type Item = Result<StreamEvent, ProviderError>;

/// Folds the events of one Messages stream into [`StreamEvent`]s.
struct EventParser {
    provider: String,
    requested_model: String,
    started: bool,
    stop_reason: Option<StopReason>,
    usage: Usage,
    /// Content block index → tool-call ordinal (counting only `tool_use` blocks).
    tool_calls: HashMap<u32, u32>,
}

impl EventParser {
    fn new(provider: String, requested_model: String) -> Self {
        EventParser {
            provider,
            requested_model,
            started: false,
            stop_reason: None,
            usage: Usage::default(),
            tool_calls: HashMap::new(),
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
                .map_or_else(generated_id, str::to_owned),
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
            stop_reason: self.stop_reason.unwrap_or_default(),
            usage: self.usage,
            failed_attempts: Vec::new(),
        }));
    }

    /// Whether a stop reason was seen, so the stream may be finalised at its end.
    fn finishable(&self) -> bool {
        self.stop_reason.is_some()
    }

    /// Handles one event's data; returns true when the stream is over (after `Finish` or `Err`).
    fn on_data(&mut self, data: &str, out: &mut Vec<Item>) -> bool {
        let data = data.trim();
        if data.is_empty() {
            return false;
        }
        let event: AnEvent = match serde_json::from_str(data) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(provider = %self.provider, error = %e, "skipping unparsable stream event");
                return false;
            }
        };
        match event {
            AnEvent::MessageStart { message } => {
                if let Some(u) = &message.usage {
                    merge_usage(&mut self.usage, u);
                }
                self.start(message.id.as_deref(), message.model.as_deref(), out);
            }
            AnEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                self.start(None, None, out);
                match content_block {
                    AnStartBlock::Text { text } if !text.is_empty() => {
                        out.push(Ok(StreamEvent::TextDelta { text }))
                    }
                    AnStartBlock::Thinking { thinking } if !thinking.is_empty() => {
                        out.push(Ok(StreamEvent::ReasoningDelta { text: thinking }));
                    }
                    AnStartBlock::ToolUse { id, name, input } => {
                        let ordinal = self.tool_calls.len() as u32;
                        self.tool_calls.insert(index, ordinal);
                        out.push(Ok(StreamEvent::ToolCallStart {
                            index: ordinal,
                            id,
                            name,
                        }));
                        // Anthropic starts with `{}` and streams the input; a server that sends the
                        // whole input up front gets it passed on as the first fragment.
                        if input.as_object().is_some_and(|o| !o.is_empty()) {
                            out.push(Ok(StreamEvent::ToolCallDelta {
                                index: ordinal,
                                arguments: input.to_string(),
                            }));
                        }
                    }
                    _ => {}
                }
            }
            AnEvent::ContentBlockDelta { index, delta } => {
                self.start(None, None, out);
                match delta {
                    AnDelta::TextDelta { text } if !text.is_empty() => {
                        out.push(Ok(StreamEvent::TextDelta { text }))
                    }
                    AnDelta::ThinkingDelta { thinking } if !thinking.is_empty() => {
                        out.push(Ok(StreamEvent::ReasoningDelta { text: thinking }));
                    }
                    AnDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                        match self.tool_calls.get(&index) {
                            Some(&ordinal) => {
                                out.push(Ok(StreamEvent::ToolCallDelta {
                                    index: ordinal,
                                    arguments: partial_json,
                                }));
                            }
                            None => {
                                tracing::warn!(provider = %self.provider, index, "input_json_delta for a block that is no tool_use");
                            }
                        }
                    }
                    _ => {}
                }
            }
            AnEvent::MessageDelta { delta, usage } => {
                if let Some(u) = &usage {
                    merge_usage(&mut self.usage, u);
                }
                if let Some(sr) = delta.stop_reason.as_deref().filter(|s| !s.is_empty()) {
                    self.stop_reason = Some(stop_reason(sr));
                }
            }
            AnEvent::MessageStop => {
                self.finish(out);
                return true;
            }
            AnEvent::Error { error } => {
                out.push(Err(error_status(&error, data)));
                return true;
            }
            AnEvent::Other => {}
        }
        false
    }
}

/// Turns the body of a Messages SSE response into [`StreamEvent`]s: `message_stop` finalises; so do a
/// clean end of the body, or [`FINISH_GRACE`] of silence, after a `message_delta` with a stop reason.
/// An end before any stop reason is a `StreamCut`.
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
        let mut parser = EventParser::new(provider, requested_model);
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
                    tracing::debug!(provider = %parser.provider, error = %sse_error(&e), "stream broke off after its stop reason");
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
                    out.push(Err(ProviderError::StreamCut("upstream stream ended before a stop reason".into())));
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

pub struct Anthropic {
    cfg: ProviderConfig,
    client: reqwest::Client,
}

impl Anthropic {
    pub fn new(cfg: ProviderConfig, client: reqwest::Client) -> Self {
        Anthropic { cfg, client }
    }

    /// Sends one request; a non-2xx answer becomes `ProviderError::Status`.
    async fn send(
        &self,
        body: &AnRequest<'_>,
        meta: &RequestMeta,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut rb = self
            .client
            .post(format!("{}/messages", self.cfg.base_url))
            .json(body)
            .header(
                "anthropic-version",
                meta.anthropic_version
                    .as_deref()
                    .unwrap_or(DEFAULT_ANTHROPIC_VERSION),
            );
        if !self.cfg.api_key.is_empty() {
            let mut key = http::HeaderValue::from_str(self.cfg.api_key.expose()).map_err(|_| {
                ProviderError::Connect("the API key is not a valid header value".into())
            })?;
            key.set_sensitive(true);
            rb = rb.header("x-api-key", key);
        }
        if let Some(beta) = &meta.anthropic_beta {
            rb = rb.header("anthropic-beta", beta.as_str());
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
impl Provider for Anthropic {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn complete(
        &self,
        req: &ChatRequest,
        model: &str,
        meta: &RequestMeta,
    ) -> Result<ChatResponse, ProviderError> {
        let resp = self.send(&to_wire(req, model, false), meta).await?;
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
        meta: &RequestMeta,
    ) -> Result<EventStream, ProviderError> {
        let resp = self.send(&to_wire(req, model, true), meta).await?;
        Ok(parse_stream(
            resp.bytes_stream(),
            self.cfg.name.clone(),
            model.to_owned(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::{
        config::{ProviderKind, Secret},
        provider::{
            StatusKind,
            openai::tests::{http_response, one_shot_server},
        },
        types::{Message, Tool},
    };

    fn wire(req: &ChatRequest, stream: bool) -> Value {
        serde_json::to_value(to_wire(req, "claude-up", stream)).unwrap()
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
            reasoning_effort: Some("high".into()),
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
                reasoning: 0,
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
                        reasoning: 0,
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
        assert!(
            matches!(&events[2], Err(ProviderError::StreamCut(m)) if m.contains("eof mid-body"))
        );
    }

    #[tokio::test]
    async fn stream_skips_malformed_data_and_reports_errors() {
        let mut chunks = sse(&[message_start()]);
        chunks.push(Ok(bytes::Bytes::from(
            "event: content_block_delta\ndata: {broken\n\n",
        )));
        chunks.extend(sse(&text_block(0, "ok")));
        chunks.extend(sse(&[json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), message_delta("end_turn")]));
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
        };
        Anthropic::new(cfg, reqwest::Client::new())
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
}
