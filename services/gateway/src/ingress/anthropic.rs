//! Anthropic Messages (`POST /v1/messages`, `POST /v1/messages/count_tokens`; what Claude Code
//! speaks): parses the request into a [`ChatRequest`], renders a [`ChatResponse`] as a `message`,
//! and encodes a stream as Anthropic's event sequence (`message_start`, `ping`, content blocks,
//! `message_delta`, `message_stop`).
use serde_json::{Value, json};

use super::{SseEvent, openai_chat::wire};
use crate::{
    error::ApiError,
    types::{
        ChatRequest, ChatResponse, Message, Part, Role, StopReason, StreamEvent, Tool, ToolChoice,
        Usage,
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

const ROLES: &[&str] = &["user", "assistant"];
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
    for (i, m) in raw.iter().enumerate() {
        let mo = Obj::new(m, format!("messages[{i}]"))?;
        let role = match mo.req_str("role")? {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => return Err(wire::unknown_variant(&mo.path("role"), other, ROLES)),
        };
        let parts = content_blocks(&mo, role)?;
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
                tracing::debug!(
                    tool_type = ty,
                    "skipping Anthropic server tool: the gateway cannot run it"
                );
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
        reasoning_effort,
        stream: o.bool("stream")?.unwrap_or(false),
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

/// A message's `content`: a string or an array of content blocks.
fn content_blocks(mo: &Obj<'_>, role: Role) -> Result<Vec<Part>, ApiError> {
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
            "redacted_thinking" => {}
            "document" => tracing::debug!("dropping document block: documents are not translated"),
            t if is_server_tool_block(t) => {
                tracing::debug!(block_type = t, "dropping server tool block")
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
            if !self.started {
                if !id.is_empty() {
                    self.id = wire::prefixed_id("msg_", id);
                }
                if !model.is_empty() {
                    self.model = model.clone();
                }
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
                out.push(Self::delta(
                    index,
                    json!({"type": "text_delta", "text": text}),
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
mod tests {
    use super::*;
    use crate::types::FailedAttempt;

    fn bad(body: &str) -> String {
        match parse(body.as_bytes()) {
            Err(ApiError::BadRequest(m)) => m,
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
        let m =
            bad(r#"{"model":"m","max_tokens":"10","messages":[{"role":"user","content":"hi"}]}"#);
        assert!(
            m.contains("max_tokens: invalid type: string \"10\", expected an integer"),
            "{m}"
        );
        let m = bad(r#"{"model":"m","max_tokens":10,"messages":[]}"#);
        assert_eq!(m, "messages must contain at least one message");
        let m =
            bad(r#"{"model":"m","max_tokens":10,"messages":[{"role":"system","content":"hi"}]}"#);
        assert!(m.contains("messages[0].role: unknown variant \"system\", expected one of \"user\", \"assistant\""), "{m}");
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
        let events = vec![
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
        let p =
            parse(br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap();
        let mut enc = StreamEncoder::new(&p);
        let events = vec![
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
        let p =
            parse(br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#)
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
}
