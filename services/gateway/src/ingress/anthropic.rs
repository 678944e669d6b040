//! Anthropic Messages (`POST /v1/messages`, `POST /v1/messages/count_tokens`; what Claude Code
//! speaks): parses the request into a [`ChatRequest`], renders a [`ChatResponse`] as a `message`,
//! and encodes a stream as Anthropic's event sequence (`message_start`, `ping`, content blocks,
//! `message_delta`, `message_stop`).
use serde_json::{Value, json};

use super::{SseEvent, wire};
use crate::{
    error::ApiError,
    types::{
        ChatRequest, ChatResponse, Message, Part, Passthrough, ResponseFormat, Role, Shape,
        StopReason, StreamEvent, Tool, ToolChoice, Usage,
    },
};
use wire::Obj;

/// A parsed Messages request.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub req: ChatRequest,
    /// The session id Claude Code embeds in `metadata.user_id` (`..._session_<uuid>`, or a JSON
    /// string with `session_id`).
    pub session_hint: Option<String>,
    /// `metadata.user_id`, as sent.
    pub user_id: Option<String>,
    /// `thinking.budget_tokens` when extended thinking is enabled (also mapped to
    /// `req.reasoning_effort`: ≥16000 high, ≥4000 medium, else low).
    pub thinking_budget: Option<u32>,
    /// `top_k`, accepted but not passed upstream.
    pub top_k: Option<u32>,
}

const ROLES: &[&str] = &["user", "assistant", "system"];

/// Top-level fields the translation to another API carries (or that are hints another API may
/// ignore without changing the answer: `metadata`, `cache_control`, `context_management`,
/// `service_tier`). Any other field — `top_k`, `container`, `mcp_servers`, and every field added
/// after this list — needs an Anthropic upstream.
const TRANSLATED: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "metadata",
    "output_config",
    "cache_control",
    "context_management",
    "service_tier",
];
const BLOCK_TYPES: &[&str] = &[
    "text",
    "image",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "document",
];

/// Parses a Messages request body (`max_tokens` required).
pub fn parse(body: &[u8]) -> Result<Parsed, ApiError> {
    parse_inner(body, true)
}

/// Parses a `count_tokens` request body: the same shape, `max_tokens` not required.
pub fn parse_count_tokens(body: &[u8]) -> Result<ChatRequest, ApiError> {
    parse_inner(body, false).map(|p| p.req)
}

/// The `count_tokens` response body.
pub fn render_count_tokens(n: u64) -> Value {
    json!({"input_tokens": n})
}

fn parse_inner(body: &[u8], require_max_tokens: bool) -> Result<Parsed, ApiError> {
    let root = wire::parse_body(body)?;
    let o = Obj::root(&root)?;

    let model = wire::model(&o)?;
    let max_tokens = o.u32_min1("max_tokens")?;
    if require_max_tokens && max_tokens.is_none() {
        return Err(wire::missing("max_tokens"));
    }

    let raw = o.req_arr("messages")?;
    if raw.is_empty() {
        return Err(ApiError::BadRequest(
            "messages must contain at least one message".into(),
        ));
    }
    let mut messages: Vec<Message> = Vec::new();
    let mut same_shape_only: Vec<String> = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        let mo = Obj::new(m, format!("messages[{i}]"))?;
        let role = match mo.req_str("role")? {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            // Mid-conversation system messages (Claude Code's `mid-conversation-system` beta).
            "system" => Role::System,
            other => return Err(wire::unknown_variant(&mo.path("role"), other, ROLES)),
        };
        let parts = content_blocks(&mo, role, &mut same_shape_only)?;
        wire::push_message(&mut messages, role, parts);
    }
    if messages.is_empty() {
        return Err(ApiError::BadRequest(
            "messages must contain at least one non-empty message".into(),
        ));
    }

    let system = match o.get("system") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                let bo = Obj::new(b, format!("system[{i}]"))?;
                match bo.req_str("type")? {
                    "text" => texts.push(bo.req_str("text")?.to_string()),
                    other => return Err(wire::unknown_variant(&bo.path("type"), other, &["text"])),
                }
            }
            Some(texts.join("\n\n"))
        }
        Some(other) => {
            return Err(wire::type_error(
                "system",
                other,
                "a string or an array of text blocks",
            ));
        }
    }
    .filter(|s| !s.is_empty());

    let mut tools = Vec::new();
    if let Some(raw) = o.arr("tools")? {
        for (i, t) in raw.iter().enumerate() {
            let to = Obj::new(t, format!("tools[{i}]"))?;
            if let Some(ty) = to.str("type")?
                && ty != "custom"
            {
                // A server tool (web search, code execution...): only Anthropic runs it.
                same_shape_only.push(format!("{} ({ty})", to.path("type")));
                continue;
            }
            let name = to.req_str("name")?;
            if name.is_empty() {
                return Err(ApiError::BadRequest(format!(
                    "{} must not be empty",
                    to.path("name")
                )));
            }
            if to.get("input_schema").is_none() {
                return Err(wire::missing(&to.path("input_schema")));
            }
            tools.push(Tool {
                name: name.to_string(),
                description: to.str("description")?.map(str::to_string),
                parameters: to.schema("input_schema")?,
            });
        }
    }

    let parallel_tool_calls = match o.obj("tool_choice")? {
        Some(tc) => tc.bool("disable_parallel_tool_use")?.map(|d| !d),
        None => None,
    };
    let tool_choice = match o.obj("tool_choice")? {
        None => None,
        Some(tc) => Some(match tc.req_str("type")? {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Required,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Tool(tc.req_str("name")?.to_string()),
            other => {
                return Err(wire::unknown_variant(
                    &tc.path("type"),
                    other,
                    &["auto", "any", "tool", "none"],
                ));
            }
        }),
    };

    let (reasoning_effort, thinking_budget) = match o.obj("thinking")? {
        None => (None, None),
        Some(t) => match t.req_str("type")? {
            "enabled" => {
                let budget = t
                    .u32_min1("budget_tokens")?
                    .ok_or_else(|| wire::missing(&t.path("budget_tokens")))?;
                (Some(effort_for_budget(budget).to_string()), Some(budget))
            }
            "adaptive" => (Some("medium".to_string()), None),
            "disabled" => (None, None),
            other => {
                return Err(wire::unknown_variant(
                    &t.path("type"),
                    other,
                    &["enabled", "disabled", "adaptive"],
                ));
            }
        },
    };

    let (response_format, output_effort) = match o.obj("output_config")? {
        None => (None, None),
        Some(oc) => {
            let format = match oc.obj("format")? {
                None => None,
                Some(f) => match f.req_str("type")? {
                    "json_schema" => Some(ResponseFormat::JsonSchema {
                        name: "output".to_string(),
                        schema: f
                            .get("schema")
                            .cloned()
                            .ok_or_else(|| wire::missing(&f.path("schema")))?,
                        strict: Some(true),
                    }),
                    other => {
                        return Err(wire::unknown_variant(
                            &f.path("type"),
                            other,
                            &["json_schema"],
                        ));
                    }
                },
            };
            (format, oc.str("effort")?.map(str::to_string))
        }
    };
    for key in root.as_object().into_iter().flat_map(|m| m.keys()) {
        if !TRANSLATED.contains(&key.as_str()) && o.get(key).is_some() {
            same_shape_only.push(key.clone());
        }
    }

    let top_k = match o.get("top_k") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(k) => Some(u32::try_from(k).unwrap_or(u32::MAX)),
            None => return Err(wire::type_error("top_k", v, "a non-negative integer")),
        },
    };

    let user_id = match o.obj("metadata")? {
        Some(m) => m.str("user_id")?.map(str::to_string),
        None => None,
    };
    let session_hint = user_id.as_deref().and_then(session_from_user_id);

    let req = ChatRequest {
        model,
        system,
        messages,
        tools,
        tool_choice,
        max_tokens,
        temperature: o.f32_in("temperature", 0.0, 1.0)?,
        top_p: o.f32_in("top_p", 0.0, 1.0)?,
        stop: o.str_or_list("stop_sequences")?,
        reasoning_effort: output_effort.or(reasoning_effort),
        thinking_budget,
        response_format,
        parallel_tool_calls,
        seed: None,
        stream: o.bool("stream")?.unwrap_or(false),
        same_shape_only,
        raw: match root {
            Value::Object(body) => Some(std::sync::Arc::new(Passthrough {
                shape: Shape::AnthropicMessages,
                body,
            })),
            _ => None,
        },
    };
    Ok(Parsed {
        req,
        session_hint,
        user_id,
        thinking_budget,
        top_k,
    })
}

/// Maps a thinking budget to an effort level.
fn effort_for_budget(budget: u32) -> &'static str {
    match budget {
        16_000.. => "high",
        4_000.. => "medium",
        _ => "low",
    }
}

/// The session id in Claude Code's `metadata.user_id`: the part after `_session_`, or the
/// `session_id` of a JSON-encoded user id.
fn session_from_user_id(user_id: &str) -> Option<String> {
    if let Some((_, session)) = user_id.split_once("_session_") {
        return (!session.is_empty()).then(|| session.to_string());
    }
    if user_id.trim_start().starts_with('{')
        && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(user_id)
        && let Some(Value::String(s)) = m.get("session_id")
        && !s.is_empty()
    {
        return Some(s.clone());
    }
    None
}

/// Server-tool blocks (and their results) that can only come from Anthropic-run tools.
fn is_server_tool_block(ty: &str) -> bool {
    ty == "server_tool_use" || ty == "mcp_tool_use" || ty.ends_with("_tool_result")
}

/// A message's `content`: a string or an array of content blocks. Blocks only an Anthropic upstream
/// can take (documents, server tool blocks) are named in `same_shape_only`.
fn content_blocks(
    mo: &Obj<'_>,
    role: Role,
    same_shape_only: &mut Vec<String>,
) -> Result<Vec<Part>, ApiError> {
    let path = mo.path("content");
    let blocks = match mo.get("content") {
        None => return Err(wire::missing(&path)),
        Some(Value::String(s)) if s.is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![Part::Text { text: s.clone() }]),
        Some(Value::Array(blocks)) => blocks,
        Some(other) => {
            return Err(wire::type_error(
                &path,
                other,
                "a string or an array of content blocks",
            ));
        }
    };
    let mut parts = Vec::new();
    for (k, b) in blocks.iter().enumerate() {
        let bo = Obj::new(b, format!("{path}[{k}]"))?;
        let ty = bo.req_str("type")?;
        let only = |allowed: Role| {
            if role == allowed {
                Ok(())
            } else {
                let r = if allowed == Role::User {
                    "user"
                } else {
                    "assistant"
                };
                Err(ApiError::BadRequest(format!(
                    "{}: {ty} blocks are only allowed in {r} messages",
                    bo.path("type")
                )))
            }
        };
        match ty {
            "text" => {
                let text = bo.req_str("text")?;
                if !text.is_empty() {
                    parts.push(Part::Text {
                        text: text.to_string(),
                    });
                }
            }
            "image" => {
                let src = bo.req_obj("source")?;
                let url = match src.req_str("type")? {
                    "base64" => format!(
                        "data:{};base64,{}",
                        src.req_str("media_type")?,
                        src.req_str("data")?
                    ),
                    "url" => src.req_str("url")?.to_string(),
                    other => {
                        return Err(wire::unknown_variant(
                            &src.path("type"),
                            other,
                            &["base64", "url"],
                        ));
                    }
                };
                parts.push(Part::Image { url });
            }
            "tool_use" => {
                only(Role::Assistant)?;
                let arguments = match bo.get("input") {
                    None => "{}".to_string(),
                    Some(v @ Value::Object(_)) => v.to_string(),
                    Some(other) => {
                        return Err(wire::type_error(&bo.path("input"), other, "an object"));
                    }
                };
                parts.push(Part::ToolCall {
                    id: bo.req_str("id")?.to_string(),
                    name: bo.req_str("name")?.to_string(),
                    arguments,
                });
            }
            "tool_result" => {
                only(Role::User)?;
                let tool_call_id = bo.req_str("tool_use_id")?.to_string();
                let cpath = bo.path("content");
                let content = match bo.get("content") {
                    None => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(inner)) => {
                        let mut texts = Vec::new();
                        for (j, c) in inner.iter().enumerate() {
                            let co = Obj::new(c, format!("{cpath}[{j}]"))?;
                            match co.req_str("type")? {
                                "text" => texts.push(co.req_str("text")?.to_string()),
                                "image" => texts.push("[image]".to_string()),
                                other => texts.push(format!("[{other}]")),
                            }
                        }
                        texts.join("\n")
                    }
                    Some(other) => {
                        return Err(wire::type_error(
                            &cpath,
                            other,
                            "a string or an array of blocks",
                        ));
                    }
                };
                let is_error = bo.bool("is_error")?.unwrap_or(false);
                parts.push(Part::ToolResult {
                    tool_call_id,
                    content,
                    is_error,
                });
            }
            "thinking" => {
                let text = bo.req_str("thinking")?.to_string();
                let signature = bo
                    .str("signature")?
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                parts.push(Part::Reasoning { text, signature });
            }
            // Encrypted reasoning state only Anthropic can read; another API's model re-reasons
            // from the visible conversation.
            "redacted_thinking" => {}
            "document" => same_shape_only.push(format!("{} (document)", bo.path("type"))),
            t if is_server_tool_block(t) => {
                same_shape_only.push(format!("{} ({t})", bo.path("type")))
            }
            other => return Err(wire::unknown_variant(&bo.path("type"), other, BLOCK_TYPES)),
        }
    }
    Ok(parts)
}

fn stop_reason_str(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter => "refusal",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "output_tokens": u.output,
        "cache_read_input_tokens": u.cache_read,
        "cache_creation_input_tokens": u.cache_write,
    })
}

/// Tool-call arguments as a `tool_use` input object (`{}` when they are not a JSON object).
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// Renders a whole answer as a `message` object.
pub fn render(resp: &ChatResponse) -> Value {
    let mut content: Vec<Value> = resp
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Reasoning { text, signature } => Some(json!({
                "type": "thinking",
                "thinking": text,
                "signature": signature.as_deref().unwrap_or(""),
            })),
            Part::Text { text } if !text.is_empty() => Some(json!({"type": "text", "text": text})),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(
                json!({"type": "tool_use", "id": id, "name": name, "input": tool_input(arguments)}),
            ),
            _ => None,
        })
        .collect();
    if content.is_empty() {
        content.push(json!({"type": "text", "text": ""}));
    }
    json!({
        "id": wire::prefixed_id("msg_", &resp.id),
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": content,
        "stop_reason": stop_reason_str(resp.stop_reason),
        "stop_sequence": null,
        "usage": usage_json(&resp.usage),
        "retort": wire::retort(&resp.provider, &resp.model, &resp.failed_attempts),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool_use block for the tool call with this stream index.
    Tool(u32),
}

/// Encodes a stream of [`StreamEvent`]s as Anthropic Messages events.
#[derive(Debug, Clone)]
pub struct StreamEncoder {
    id: String,
    model: String,
    provider: String,
    started: bool,
    finished: bool,
    next_index: u32,
    /// The open content block and its index.
    open: Option<(Block, u32)>,
}

impl StreamEncoder {
    pub fn new(parsed: &Parsed) -> Self {
        StreamEncoder {
            id: wire::new_id("msg_"),
            model: parsed.req.model.clone(),
            provider: String::new(),
            started: false,
            finished: false,
            next_index: 0,
            open: None,
        }
    }

    fn emit(ty: &'static str, v: Value) -> SseEvent {
        SseEvent::named(ty, v.to_string())
    }

    fn start(&mut self, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(Self::emit(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
        out.push(Self::emit("ping", json!({"type": "ping"})));
    }

    fn close(&mut self, out: &mut Vec<SseEvent>) {
        if let Some((_, index)) = self.open.take() {
            out.push(Self::emit(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    /// Makes `block` the open block (closing another one), returning its index.
    fn ensure_open(
        &mut self,
        block: Block,
        content_block: impl FnOnce() -> Value,
        out: &mut Vec<SseEvent>,
    ) -> u32 {
        if let Some((b, index)) = self.open
            && b == block
        {
            return index;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((block, index));
        out.push(Self::emit(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": content_block()}),
        ));
        index
    }

    fn delta(index: u32, delta: Value) -> SseEvent {
        Self::emit(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    }

    /// The events for one internal event; nothing after `Finish`.
    pub fn event(&mut self, ev: &StreamEvent) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        if let StreamEvent::Start {
            id,
            provider,
            model,
        } = ev
        {
            if !self.started && !id.is_empty() {
                self.id = wire::prefixed_id("msg_", id);
            }
            // A later start (a continuation on another target) names who finishes the answer.
            if !model.is_empty() {
                self.model = model.clone();
            }
            self.provider = provider.clone();
        }
        self.start(&mut out);
        match ev {
            StreamEvent::Start { .. } => {}
            StreamEvent::TextDelta { text } => {
                let index = self.ensure_open(
                    Block::Text,
                    || json!({"type": "text", "text": ""}),
                    &mut out,
                );
                // The hot path of every stream: written directly, one allocation.
                out.push(SseEvent::named(
                    "content_block_delta",
                    format!(
                        r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"text_delta","text":{}}}}}"#,
                        Value::from(text.as_str())
                    ),
                ));
            }
            StreamEvent::ReasoningDelta { text } => {
                let index = self.ensure_open(
                    Block::Thinking,
                    || json!({"type": "thinking", "thinking": "", "signature": ""}),
                    &mut out,
                );
                out.push(Self::delta(
                    index,
                    json!({"type": "thinking_delta", "thinking": text}),
                ));
            }
            StreamEvent::ReasoningSignature { signature } => {
                if let Some((Block::Thinking, index)) = self.open {
                    out.push(Self::delta(
                        index,
                        json!({"type": "signature_delta", "signature": signature}),
                    ));
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.close(&mut out);
                self.ensure_open(
                    Block::Tool(*index),
                    || json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    &mut out,
                );
            }
            StreamEvent::ToolCallDelta { index, arguments } => match self.open {
                Some((Block::Tool(open), block_index)) if open == *index => {
                    out.push(Self::delta(
                        block_index,
                        json!({"type": "input_json_delta", "partial_json": arguments}),
                    ));
                }
                _ => tracing::warn!(
                    index,
                    "tool call arguments arrived for a tool_use block that is not open (interleaved tool calls); dropped"
                ),
            },
            StreamEvent::Finish {
                stop_reason,
                usage,
                failed_attempts,
            } => {
                self.finished = true;
                self.close(&mut out);
                out.push(Self::emit(
                    "message_delta",
                    json!({
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason_str(*stop_reason), "stop_sequence": null},
                        "usage": usage_json(usage),
                        "retort": wire::retort(&self.provider, &self.model, failed_attempts),
                    }),
                ));
                out.push(Self::emit("message_stop", json!({"type": "message_stop"})));
            }
        }
        out
    }

    /// A mid-stream error: `event: error` with Anthropic's error body.
    pub fn error(&mut self, err: &ApiError) -> Vec<SseEvent> {
        self.finished = true;
        vec![Self::emit("error", err.anthropic_body())]
    }
}

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
