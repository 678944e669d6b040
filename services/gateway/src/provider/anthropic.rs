//! Anthropic Messages (`POST {base_url}/messages`).
//!
//! Layout: wire types, conversions between wire and internal types, the adapter. The SSE parser
//! (generic over the byte stream so it can be tested in memory) is the `stream` submodule; the
//! error-body helpers shared with the OpenAI adapter are in `provider::common`.
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    EventStream, Provider, ProviderError, classify_status,
    client::{Endpoint, HttpClient, UpstreamBody, body_stream, read_body},
    common::{MAX_ERROR_MESSAGE, MAX_RESPONSE_BODY, truncate_chars},
};
use crate::{
    config::ProviderConfig,
    types::{
        ChatRequest, ChatResponse, Part, RequestMeta, ResponseFormat, Role, Shape, StopReason,
        ToolChoice, Usage,
    },
};

mod stream;
use stream::parse_stream;

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
    system: Option<std::borrow::Cow<'a, str>>,
    messages: Vec<AnMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<AnTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<Value>,
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
    /// A mid-conversation system message (the `mid-conversation-system` beta).
    System,
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
    SignatureDelta {
        signature: String,
    },
    /// `citations_delta`, anything newer.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct AnMessageDelta {
    stop_reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Conversions.

/// The smallest thinking budget Anthropic accepts.
pub const MIN_THINKING_BUDGET: u32 = 1024;

/// The thinking budget for an effort level (the inverse of the Anthropic ingress's mapping:
/// ≥16,000 high, ≥4,000 medium, else low); `None` for no thinking.
fn budget_for_effort(effort: &str) -> Option<u32> {
    match effort {
        "none" | "minimal" => None,
        "low" => Some(2_048),
        "medium" => Some(8_192),
        _ => Some(16_384),
    }
}

/// Whether the caller's `anthropic-beta` header turns on mid-conversation system messages.
fn mid_conversation_system(meta: &RequestMeta) -> bool {
    meta.anthropic_beta
        .as_deref()
        .is_some_and(|b| b.contains("mid-conversation-system"))
}

/// The wire request for `req` against upstream model `model`. System messages inside the
/// conversation stay in place when `mid_system` (the caller turned the beta on); otherwise they join
/// the top-level `system`, in order, since Anthropic refuses them there without the beta.
fn to_wire<'a>(
    req: &'a ChatRequest,
    model: &'a str,
    stream: bool,
    mid_system: bool,
) -> Result<AnRequest<'a>, ProviderError> {
    let mut system: Option<std::borrow::Cow<'a, str>> =
        req.system.as_deref().map(std::borrow::Cow::Borrowed);
    let mut messages: Vec<AnMessage<'a>> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let role = match m.role {
            Role::System if !mid_system => {
                let text = m.joined_text();
                if !text.is_empty() {
                    system = Some(match system.take() {
                        Some(s) => std::borrow::Cow::Owned(format!("{s}\n\n{text}")),
                        None => std::borrow::Cow::Owned(text),
                    });
                }
                continue;
            }
            Role::System => AnRole::System,
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
        let mut choice = match req.tool_choice.as_ref() {
            None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
            Some(ToolChoice::None) => json!({"type": "none"}),
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::Tool(name)) => json!({"type": "tool", "name": name}),
        };
        if req.parallel_tool_calls == Some(false) {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        } else if req.tool_choice.is_none() {
            choice = Value::Null;
        }
        Some(choice).filter(|c| !c.is_null())
    };
    if req.seed.is_some() {
        return Err(ProviderError::Unsupported(
            "seed cannot be carried to Anthropic Messages, which has no seed (leave it out, or use a target of the caller's own API)".into(),
        ));
    }
    // Thinking: an explicit budget, else one for the reasoning effort. It must fit below max_tokens.
    let budget = req
        .thinking_budget
        .or_else(|| req.reasoning_effort.as_deref().and_then(budget_for_effort));
    let mut max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let thinking = match budget {
        None => None,
        Some(b) => {
            let b = match req.max_tokens {
                // No limit given: room for the thinking and an answer.
                None => {
                    max_tokens = b.saturating_add(DEFAULT_MAX_TOKENS);
                    b
                }
                Some(m) => b.min(m.saturating_sub(1)),
            };
            if b < MIN_THINKING_BUDGET {
                return Err(ProviderError::Unsupported(format!(
                    "reasoning_effort cannot be carried to Anthropic Messages: max_tokens {max_tokens} leaves no room for its smallest thinking budget ({MIN_THINKING_BUDGET} tokens); raise max_tokens or leave reasoning_effort out"
                )));
            }
            Some(json!({"type": "enabled", "budget_tokens": b}))
        }
    };
    let output_config = req.response_format.as_ref().map(|f| {
        let schema = match f {
            ResponseFormat::JsonObject => json!({"type": "object"}),
            ResponseFormat::JsonSchema { schema, .. } => schema.clone(),
        };
        json!({"format": {"type": "json_schema", "schema": schema}})
    });
    Ok(AnRequest {
        model,
        max_tokens,
        system,
        messages,
        tools,
        tool_choice,
        thinking,
        output_config,
        temperature: req.temperature,
        top_p: req.top_p,
        stop_sequences: &req.stop,
        stream,
    })
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

/// Anthropic counts thinking inside `output_tokens` and does not report it apart: the reasoning share
/// is estimated from the thinking text (about four bytes a token, as the gateway estimates prompts),
/// never more than the output it is part of.
fn reasoning_tokens(thinking_bytes: usize, output: u64) -> u64 {
    (thinking_bytes as u64).div_ceil(4).min(output)
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
    let content: Vec<Part> = blocks
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
    let thinking_bytes = content
        .iter()
        .map(|p| match p {
            Part::Reasoning { text, .. } => text.len(),
            _ => 0,
        })
        .sum();
    usage.reasoning = reasoning_tokens(thinking_bytes, usage.output);
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
// Adapter.

pub struct Anthropic {
    cfg: ProviderConfig,
    client: HttpClient,
    /// The endpoint, parsed once.
    endpoint: Endpoint,
}

impl Anthropic {
    pub fn new(cfg: ProviderConfig, client: HttpClient) -> Self {
        let endpoint = Endpoint::new(format!("{}/messages", cfg.base_url));
        Anthropic {
            cfg,
            client,
            endpoint,
        }
    }

    /// The request body for one attempt: the caller's own body when it is a Messages one (only the
    /// model and streaming flag rewritten), else the translation — refused, naming the fields, when
    /// the caller's API has fields this one cannot honour.
    fn encode(
        req: &ChatRequest,
        model: &str,
        stream: bool,
        meta: &RequestMeta,
    ) -> Result<Vec<u8>, ProviderError> {
        let written = if let Some(p) = req.passthrough(Shape::AnthropicMessages) {
            serde_json::to_vec(&p.attempt_body(model, stream))
        } else {
            super::check_translatable(req, "Anthropic Messages")?;
            serde_json::to_vec(&to_wire(req, model, stream, mid_conversation_system(meta))?)
        };
        written.map_err(|e| ProviderError::Malformed(format!("cannot encode the request: {e}")))
    }

    /// Sends one request; a non-2xx answer becomes `ProviderError::Status`.
    async fn send(
        &self,
        json: Vec<u8>,
        stream: bool,
        meta: &RequestMeta,
    ) -> Result<http::Response<UpstreamBody>, ProviderError> {
        let invalid =
            |what: &str| ProviderError::Connect(format!("the {what} is not a valid header value"));
        let mut headers = http::HeaderMap::new();
        let version = meta
            .anthropic_version
            .as_deref()
            .unwrap_or(DEFAULT_ANTHROPIC_VERSION);
        headers.insert(
            "anthropic-version",
            http::HeaderValue::from_str(version).map_err(|_| invalid("anthropic-version"))?,
        );
        if !self.cfg.api_key.is_empty() {
            let mut key = http::HeaderValue::from_str(self.cfg.api_key.expose())
                .map_err(|_| invalid("API key"))?;
            key.set_sensitive(true);
            headers.insert("x-api-key", key);
        }
        if let Some(beta) = &meta.anthropic_beta {
            headers.insert(
                "anthropic-beta",
                http::HeaderValue::from_str(beta).map_err(|_| invalid("anthropic-beta"))?,
            );
        }
        self.client
            .post_json(&self.endpoint, json, stream, headers, &self.cfg.headers)
            .await
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
        let resp = self
            .send(Self::encode(req, model, false, meta)?, false, meta)
            .await?;
        let body = read_body(resp, MAX_RESPONSE_BODY).await?;
        parse_response(&body, &self.cfg.name, model)
    }

    async fn stream(
        &self,
        req: &ChatRequest,
        model: &str,
        meta: &RequestMeta,
    ) -> Result<EventStream, ProviderError> {
        let resp = self
            .send(Self::encode(req, model, true, meta)?, true, meta)
            .await?;
        Ok(parse_stream(
            body_stream(resp),
            self.cfg.name.clone(),
            model.to_owned(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
