//! Anthropic `POST /v1/messages` (and `/v1/messages/count_tokens`): request parsing, the
//! `message` object and its event stream.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    answer::{Answer, Conversation, Finish, Output, Tail, Tokens, Usage, fnv1a, lorem},
    faults::{Api, ApiError, admit, parse_body, reject},
    openai::Content,
    server::{Sim, new_id},
    stream::{Part, Sse, json_response, sse_response, write_json},
};

#[derive(Debug, Deserialize)]
struct MessagesRequest {
    model: String,
    messages: Vec<Message>,
    system: Option<Content>,
    max_tokens: Option<u64>,
    tools: Option<Vec<Tool>>,
    stream: Option<bool>,
    thinking: Option<Thinking>,
    output_config: Option<OutputConfig>,
}

#[derive(Debug, Deserialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: String,
    budget_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct OutputConfig {
    format: Option<OutputFormat>,
}

#[derive(Debug, Deserialize)]
struct OutputFormat {
    #[serde(rename = "type")]
    kind: String,
    schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: MessageContent,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Blocks(Vec<Block>),
}

/// A content block: text, thinking, tool_use and tool_result count; images and the like do not.
#[derive(Debug, Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    thinking: Option<String>,
    input: Option<Value>,
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
struct Tool {
    name: Option<String>,
}

impl Message {
    /// The text blocks joined by newlines.
    fn text(&self) -> String {
        match &self.content {
            MessageContent::Text(s) => s.clone(),
            MessageContent::Blocks(blocks) => {
                let texts: Vec<&str> = blocks
                    .iter()
                    .filter(|b| b.kind.as_deref() == Some("text"))
                    .filter_map(|b| b.text.as_deref())
                    .collect();
                texts.join("\n")
            }
        }
    }

    fn has_text(&self) -> bool {
        match &self.content {
            MessageContent::Text(_) => true,
            MessageContent::Blocks(blocks) => {
                blocks.iter().any(|b| b.kind.as_deref() == Some("text"))
            }
        }
    }

    fn blocks(&self) -> &[Block] {
        match &self.content {
            MessageContent::Text(_) => &[],
            MessageContent::Blocks(b) => b,
        }
    }
}

impl MessagesRequest {
    /// What the real API checks that clients depend on: roles (`system` only with the
    /// `mid-conversation-system` beta), thinking's budget, structured output's schema.
    fn validate(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let mid_system = headers
            .get("anthropic-beta")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|b| b.contains("mid-conversation-system"));
        for (i, m) in self.messages.iter().enumerate() {
            match m.role.as_str() {
                "user" | "assistant" => {}
                "system" if mid_system && i > 0 => {}
                _ => {
                    return Err(ApiError::invalid_request(format!(
                        "messages.{i}.role: Input should be 'user' or 'assistant'"
                    )));
                }
            }
        }
        if let Some(t) = &self.thinking {
            match t.kind.as_str() {
                "enabled" => {
                    let Some(budget) = t.budget_tokens else {
                        return Err(ApiError::invalid_request(
                            "thinking.enabled.budget_tokens: Field required",
                        ));
                    };
                    if budget < 1024 {
                        return Err(ApiError::invalid_request(
                            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
                        ));
                    }
                    if self.max_tokens.is_some_and(|m| budget >= m) {
                        return Err(ApiError::invalid_request(
                            "`max_tokens` must be greater than `thinking.budget_tokens`",
                        ));
                    }
                }
                "disabled" | "adaptive" => {}
                other => {
                    return Err(ApiError::invalid_request(format!(
                        "thinking.type: Input tag '{other}' found using 'type' does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'"
                    )));
                }
            }
        }
        if let Some(f) = self.output_config.as_ref().and_then(|o| o.format.as_ref()) {
            if f.kind != "json_schema" {
                return Err(ApiError::invalid_request(format!(
                    "output_config.format.type: Input should be 'json_schema', got '{}'",
                    f.kind
                )));
            }
            if f.schema.is_none() {
                return Err(ApiError::invalid_request(
                    "output_config.format.schema: Field required",
                ));
            }
        }
        Ok(())
    }

    /// Whether the caller asked for thinking.
    fn wants_thinking(&self) -> bool {
        self.thinking
            .as_ref()
            .is_some_and(|t| t.kind == "enabled" || t.kind == "adaptive")
    }

    fn conversation(&self, require_max_tokens: bool) -> Result<Conversation, ApiError> {
        if require_max_tokens && self.max_tokens.is_none() {
            return Err(ApiError::invalid_request("max_tokens: Field required"));
        }
        let Some(last) = self.messages.last() else {
            return Err(ApiError::invalid_request(
                "messages: at least one message is required",
            ));
        };
        let mut c = Conversation::default();
        if let Some(s) = &self.system {
            c.count(&s.text());
        }
        for m in &self.messages {
            match &m.content {
                MessageContent::Text(s) => c.count(s),
                MessageContent::Blocks(blocks) => {
                    for b in blocks {
                        match b.kind.as_deref() {
                            Some("text") => c.count(b.text.as_deref().unwrap_or("")),
                            Some("thinking") => c.count(b.thinking.as_deref().unwrap_or("")),
                            Some("tool_use") => {
                                c.count(&b.input.as_ref().map(Value::to_string).unwrap_or_default())
                            }
                            Some("tool_result") => {
                                c.count(&b.content.as_ref().map(|c| c.text()).unwrap_or_default())
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if let Some(u) = self
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user" && m.has_text())
        {
            c.last_user = u.text();
        }
        let tool_result = last
            .blocks()
            .iter()
            .rev()
            .find(|b| b.kind.as_deref() == Some("tool_result"));
        c.tail = match (last.role.as_str(), tool_result) {
            ("user", Some(r)) => Tail::ToolResult(
                r.content
                    .as_ref()
                    .map(|c| c.text().into_owned())
                    .unwrap_or_default(),
            ),
            ("assistant", _) => {
                c.ends_with_assistant = true;
                let t = last.text();
                let tool_use = last
                    .blocks()
                    .iter()
                    .any(|b| b.kind.as_deref() == Some("tool_use"));
                if tool_use || t.is_empty() {
                    Tail::User
                } else {
                    Tail::Prefill(t)
                }
            }
            _ => Tail::User,
        };
        c.first_tool = self.tools.iter().flatten().find_map(|t| t.name.clone());
        c.max_tokens = self.max_tokens;
        Ok(c.finish())
    }
}

fn stop_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
    }
}

/// `usage` of a message; Anthropic reports cache reads and writes apart from `input_tokens`.
#[derive(Serialize)]
struct UsageOut {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
    service_tier: &'static str,
}

/// Prompt caching: the tokens written to the cache (the first time a `cache_control` prefix is
/// seen) or read from it (every later time).
#[derive(Debug, Clone, Copy, Default)]
struct Cache {
    written: u64,
    read: u64,
}

fn usage_out(u: Usage, output: u64, cache: Cache) -> UsageOut {
    let read = u.cached.max(cache.read);
    let written = cache.written;
    UsageOut {
        input_tokens: u.input.saturating_sub(read + written),
        cache_creation_input_tokens: written,
        cache_read_input_tokens: read,
        output_tokens: output,
        service_tier: "standard",
    }
}

/// The prompt prefix up to the last `cache_control` breakpoint, as (hash, tokens): the system
/// prompt, the tools and the messages before the last marked block, roughly as Anthropic caches.
fn cache_prefix(body: &[u8]) -> Option<(u64, u64)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut prefix = String::new();
    let mut marked = None;
    let mut add = |part: &Value, prefix: &mut String| {
        prefix.push_str(&part.to_string());
        if part.to_string().contains("\"cache_control\"") {
            marked = Some(prefix.len());
        }
    };
    for key in ["tools", "system"] {
        if let Some(part) = v.get(key) {
            add(part, &mut prefix);
        }
    }
    for m in v
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(m, &mut prefix);
    }
    let end = marked?;
    let cut = &prefix[..end];
    Some((
        fnv1a(cut.as_bytes()),
        crate::answer::count_words(&cut.replace(['"', ',', ':', '{', '}', '[', ']'], " ")),
    ))
}

#[derive(Serialize)]
struct MessageOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<BlockOut<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    usage: UsageOut,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockOut<'a> {
    Thinking {
        thinking: &'a str,
        signature: String,
    },
    Text {
        text: &'a str,
    },
    ToolUse {
        id: String,
        name: &'a str,
        input: Value,
    },
}

pub(crate) async fn messages(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authed = sim.authorized(&headers);
    let req: MessagesRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return reject(Api::Anthropic, authed, e),
    };
    sim.remember(&req.model, "/v1/messages", &headers, &body);
    let conv = req.validate(&headers).and_then(|()| req.conversation(true));
    let (ticket, conv) = match admit(&sim, Api::Anthropic, &headers, &req.model, authed, conv).await
    {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let b = &ticket.model.behavior;
    let schema = req
        .output_config
        .as_ref()
        .and_then(|o| o.format.as_ref())
        .and_then(|f| f.schema.as_ref());
    let answer = match schema {
        Some(schema) => crate::answer::structured_answer(
            &crate::answer::instance_of(schema, "lorem ipsum").to_string(),
        ),
        None => ticket.model.answer(&conv, &ticket.state.script_cursor),
    };
    let mut usage = Usage::new(b, &conv, &answer);
    // Thinking when the model always thinks, or (a few words) when the caller asked for it.
    let reasoning = match b.reasoning_tokens {
        0 if req.wants_thinking() => 8,
        n => n,
    };
    let thinking = thinking(reasoning, &conv);
    if thinking.is_some() && b.reasoning_tokens == 0 {
        usage.output += reasoning;
        usage.reasoning = reasoning;
    }
    let cache = match cache_prefix(&body) {
        None => Cache::default(),
        Some((key, tokens)) => {
            let tokens = tokens.min(usage.input);
            if sim.cache_hit(key) {
                Cache {
                    written: 0,
                    read: tokens,
                }
            } else {
                Cache {
                    written: tokens,
                    read: 0,
                }
            }
        }
    };
    let id = new_id("msg_");
    if req.stream == Some(true) {
        sse_response(
            stream(&id, &req.model, thinking.as_ref(), &answer, usage, cache),
            ticket.fault,
            b.tokens_per_sec,
        )
    } else {
        let mut buf = Vec::with_capacity(1024);
        write_json(
            &mut buf,
            &message(&id, &req.model, thinking.as_ref(), &answer, usage, cache),
        );
        json_response(buf, ticket.fault)
    }
}

pub(crate) async fn count_tokens(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authed = sim.authorized(&headers);
    let req: MessagesRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return reject(Api::Anthropic, authed, e),
    };
    if !authed {
        return ApiError::unauthorized().render(Api::Anthropic);
    }
    if sim.model(&req.model).is_none() {
        return ApiError::model_not_found(&req.model).render(Api::Anthropic);
    }
    match req.conversation(false) {
        Ok(c) => Json(json!({ "input_tokens": c.input_tokens })).into_response(),
        Err(e) => e.render(Api::Anthropic),
    }
}

fn tool_id(hash: &str) -> String {
    format!("toolu_{hash}")
}

/// The thinking a model with `reasoning_tokens` shows before its answer: that many words, as
/// Anthropic counts thinking in `output_tokens`. None on a prefill (Anthropic refuses prefills
/// with thinking enabled, and a continued answer must not think again).
fn thinking(reasoning_tokens: u64, conv: &Conversation) -> Option<Tokens> {
    if reasoning_tokens == 0 || matches!(conv.tail, Tail::Prefill(_)) {
        return None;
    }
    let n = u32::try_from(reasoning_tokens).unwrap_or(u32::MAX);
    Some(lorem(&format!("thinking: {}", conv.last_user), n))
}

/// A stand-in for the signature Anthropic puts on thinking (opaque to clients, handed back as is).
fn signature(thinking: &Tokens) -> String {
    format!("sig_{:016x}", fnv1a(thinking.text().as_bytes()))
}

fn message<'a>(
    id: &'a str,
    model: &'a str,
    thinking: Option<&'a Tokens>,
    answer: &'a Answer,
    usage: Usage,
    cache: Cache,
) -> MessageOut<'a> {
    let mut content = Vec::with_capacity(2);
    if let Some(t) = thinking {
        content.push(BlockOut::Thinking {
            thinking: t.text(),
            signature: signature(t),
        });
    }
    let block = match &answer.output {
        Output::Text(t) => BlockOut::Text { text: t.text() },
        Output::ToolCall(tc) => BlockOut::ToolUse {
            id: tool_id(&tc.id_hash),
            name: &tc.name,
            input: serde_json::from_str(tc.arguments.text()).unwrap_or_else(|_| json!({})),
        },
    };
    MessageOut {
        id,
        kind: "message",
        role: "assistant",
        model,
        content: {
            content.push(block);
            content
        },
        stop_reason: stop_reason(answer.finish),
        stop_sequence: None,
        usage: usage_out(usage, usage.output, cache),
    }
}

fn stream(
    id: &str,
    model: &str,
    thinking: Option<&Tokens>,
    answer: &Answer,
    usage: Usage,
    cache: Cache,
) -> Sse {
    let mut sse = Sse::new(b"event: content_block_delta\ndata: {broken\n\n");
    let start = json!({
        "type": "message_start",
        "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage_out(usage, 0, cache),
        },
    });
    sse.event(Part::Prelude, Some("message_start"), &start);
    // The thinking block comes first; its deltas are tokens (paced, and counted by the faults), and
    // its end rides in the frame of its last delta, so that no fault finds a place between the
    // two blocks.
    let index = if let Some(t) = thinking {
        let block_start = json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "thinking", "thinking": "" } });
        sse.event(Part::Prelude, Some("content_block_start"), &block_start);
        let n = t.len();
        for (i, tok) in t.iter().enumerate() {
            sse.frame(Part::Token, |b| {
                b.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":");
                write_json(b, tok);
                b.extend_from_slice(b"}}\n\n");
                if i + 1 == n {
                    let sig = json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "signature_delta", "signature": signature(t) } });
                    b.extend_from_slice(b"event: content_block_delta\ndata: ");
                    write_json(b, &sig);
                    b.extend_from_slice(b"\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
                }
            });
        }
        1
    } else {
        0
    };
    let (block, delta_kind, delta_field, tokens) = match &answer.output {
        Output::Text(t) => (
            json!({ "type": "text", "text": "" }),
            "text_delta",
            "text",
            t,
        ),
        Output::ToolCall(tc) => (
            json!({ "type": "tool_use", "id": tool_id(&tc.id_hash), "name": tc.name, "input": {} }),
            "input_json_delta",
            "partial_json",
            &tc.arguments,
        ),
    };
    let block_start =
        json!({ "type": "content_block_start", "index": index, "content_block": block });
    sse.event(Part::Prelude, Some("content_block_start"), &block_start);
    sse.event(Part::Prelude, Some("ping"), &json!({ "type": "ping" }));
    let prefix = format!(
        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{{\"type\":\"{delta_kind}\",\"{delta_field}\":"
    );
    for t in tokens.iter() {
        sse.frame(Part::Token, |b| {
            b.extend_from_slice(prefix.as_bytes());
            write_json(b, t);
            b.extend_from_slice(b"}}\n\n");
        });
    }
    sse.event(
        Part::Tail,
        Some("content_block_stop"),
        &json!({ "type": "content_block_stop", "index": index }),
    );
    let delta = json!({
        "type": "message_delta",
        "delta": { "stop_reason": stop_reason(answer.finish), "stop_sequence": null },
        "usage": usage_out(usage, usage.output, cache),
    });
    sse.event(Part::Tail, Some("message_delta"), &delta);
    sse.event(
        Part::Terminal,
        Some("message_stop"),
        &json!({ "type": "message_stop" }),
    );
    sse
}
