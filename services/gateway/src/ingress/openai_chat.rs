//! OpenAI Chat Completions (`POST /v1/chat/completions`): parses the request into a
//! [`ChatRequest`], renders a [`ChatResponse`] as a `chat.completion`, encodes a stream as
//! `chat.completion.chunk` server-sent events ending in `data: [DONE]`, and renders mid-stream errors.
//!
//! The JSON helpers it shares with the other ingress modules (path-tracking field access, ids, the
//! `retort` extension object) live in `ingress/wire.rs`.
use std::collections::BTreeMap;

use serde_json::Value;

use super::{SseEvent, wire};
use crate::{
    error::ApiError,
    types::{
        ChatRequest, ChatResponse, Message, Part, Passthrough, ResponseFormat, Role, Shape,
        StopReason, StreamEvent, Tool, Usage,
    },
};
use wire::Obj;

/// A parsed Chat Completions request.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub req: ChatRequest,
    /// `metadata.session_id`, when the caller sent one.
    pub session_hint: Option<String>,
    /// `stream_options.include_usage`: end the stream with a `choices: []` chunk carrying `usage`.
    pub include_usage: bool,
    /// `user`: the caller's end-user id (for logs; not a session).
    pub user: Option<String>,
    /// `metadata`: string key/value pairs.
    pub metadata: BTreeMap<String, String>,
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// Top-level fields the translation to another API carries, or hints another API may ignore
/// without changing the answer (`store`, `prompt_cache_key`, `service_tier`, `user`, ...). Any
/// other field set to a non-default value — `logprobs`, `frequency_penalty`, `logit_bias`, `audio`,
/// and every field added after this list — needs an OpenAI-shaped upstream.
const TRANSLATED: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stream",
    "stream_options",
    "metadata",
    "temperature",
    "top_p",
    "stop",
    "reasoning_effort",
    "user",
    "response_format",
    "parallel_tool_calls",
    "seed",
    "store",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
];

/// Whether `v` is the value a field has when it is not set (`null`, `false`, `0`, empty).
pub(crate) fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Parses a Chat Completions request body.
pub fn parse(body: &[u8]) -> Result<Parsed, ApiError> {
    let root = wire::parse_body(body)?;
    let o = Obj::root(&root)?;

    let model = wire::model(&o)?;
    let raw = o.req_arr("messages")?;
    if raw.is_empty() {
        return Err(ApiError::BadRequest(
            "messages must contain at least one message".into(),
        ));
    }

    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        let mo = Obj::new(m, format!("messages[{i}]"))?;
        let role = mo.req_str("role")?;
        match role {
            "system" | "developer" => {
                let text = content_parts(&mo, ContentKind::System)?
                    .into_iter()
                    .filter_map(|p| match p {
                        Part::Text { text } => Some(text),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n\n");
                if text.is_empty() {
                } else if messages.is_empty() {
                    system.push(text);
                } else {
                    // After the conversation began: a system message in its place.
                    wire::push_message(&mut messages, Role::System, vec![Part::Text { text }]);
                }
            }
            "user" => {
                let parts = content_parts(&mo, ContentKind::User)?;
                wire::push_message(&mut messages, Role::User, parts);
            }
            "assistant" => {
                let mut parts = Vec::new();
                if let Some(reasoning) = mo.str("reasoning_content")?
                    && !reasoning.is_empty()
                {
                    parts.push(Part::Reasoning {
                        text: reasoning.to_string(),
                        signature: None,
                    });
                }
                parts.extend(content_parts(&mo, ContentKind::Assistant)?);
                if let Some(calls) = mo.arr("tool_calls")? {
                    for (j, c) in calls.iter().enumerate() {
                        let co = Obj::new(c, format!("{}[{j}]", mo.path("tool_calls")))?;
                        if let Some(ty) = co.str("type")?
                            && ty != "function"
                        {
                            return Err(wire::unknown_variant(&co.path("type"), ty, &["function"]));
                        }
                        let id = co.req_str("id")?;
                        let f = co.req_obj("function")?;
                        let name = f.req_str("name")?;
                        let arguments = f.str("arguments")?.unwrap_or_default();
                        parts.push(Part::ToolCall {
                            id: id.to_string(),
                            name: name.to_string(),
                            arguments: wire::non_empty_args(arguments),
                        });
                    }
                }
                wire::push_message(&mut messages, Role::Assistant, parts);
            }
            "tool" => {
                let tool_call_id = mo.req_str("tool_call_id")?;
                let content = content_parts(&mo, ContentKind::Tool)?
                    .into_iter()
                    .filter_map(|p| match p {
                        Part::Text { text } => Some(text),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                let part = Part::ToolResult {
                    tool_call_id: tool_call_id.to_string(),
                    content,
                    is_error: false,
                };
                wire::push_message(&mut messages, Role::User, vec![part]);
            }
            other => return Err(wire::unknown_variant(&mo.path("role"), other, ROLES)),
        }
    }
    if messages.is_empty() {
        return Err(ApiError::BadRequest(
            "messages must contain at least one user or assistant message".into(),
        ));
    }

    let tools = parse_tools(&o)?;
    let tool_choice = wire::tool_choice(&o, "tool_choice")?;
    let max_tokens = match o.u32_min1("max_completion_tokens")? {
        Some(n) => Some(n),
        None => o.u32_min1("max_tokens")?,
    };
    if let Some(n) = o.get("n") {
        match n.as_u64() {
            Some(1) => {}
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "n must be 1: multiple choices are not supported".into(),
                ));
            }
            None => return Err(wire::type_error(&o.path("n"), n, "an integer")),
        }
    }
    let stream = o.bool("stream")?.unwrap_or(false);
    let include_usage = match o.obj("stream_options")? {
        Some(so) => so.bool("include_usage")?.unwrap_or(false),
        None => false,
    };
    let metadata = o.string_map("metadata")?.unwrap_or_default();
    let session_hint = metadata
        .get("session_id")
        .filter(|s| !s.is_empty())
        .cloned();
    let response_format = response_format(&o, "response_format")?;
    let seed = match o.get("seed") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| wire::type_error(&o.path("seed"), v, "an integer"))?,
        ),
    };
    let same_shape_only: Vec<String> = root
        .as_object()
        .into_iter()
        .flat_map(|m| m.iter())
        .filter(|(k, v)| !TRANSLATED.contains(&k.as_str()) && !is_default(v))
        .map(|(k, _)| k.clone())
        .collect();

    let req = ChatRequest {
        model,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        tools,
        tool_choice,
        max_tokens,
        temperature: o.f32_in("temperature", 0.0, 2.0)?,
        top_p: o.f32_in("top_p", 0.0, 1.0)?,
        stop: o.str_or_list("stop")?,
        reasoning_effort: o.str("reasoning_effort")?.map(str::to_string),
        thinking_budget: None,
        response_format,
        parallel_tool_calls: o.bool("parallel_tool_calls")?,
        seed,
        stream,
        same_shape_only,
        raw: None,
    };
    let user = o.str("user")?.map(str::to_string);
    let req = ChatRequest {
        raw: match root {
            Value::Object(body) => Some(std::sync::Arc::new(Passthrough {
                shape: Shape::OpenAiChat,
                body,
            })),
            _ => None,
        },
        ..req
    };
    Ok(Parsed {
        req,
        session_hint,
        include_usage,
        user,
        metadata,
    })
}

/// OpenAI's `response_format` (Chat) : `{"type": "text" | "json_object" | "json_schema",
/// "json_schema": {"name", "schema", "strict"}}`.
pub(crate) fn response_format(o: &Obj<'_>, key: &str) -> Result<Option<ResponseFormat>, ApiError> {
    let Some(f) = o.obj(key)? else {
        return Ok(None);
    };
    match f.req_str("type")? {
        "text" => Ok(None),
        "json_object" => Ok(Some(ResponseFormat::JsonObject)),
        "json_schema" => {
            let js = f.req_obj("json_schema")?;
            Ok(Some(ResponseFormat::JsonSchema {
                name: js.req_str("name")?.to_string(),
                schema: js.schema("schema")?,
                strict: js.bool("strict")?,
            }))
        }
        other => Err(wire::unknown_variant(
            &f.path("type"),
            other,
            &["text", "json_object", "json_schema"],
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ContentKind {
    System,
    User,
    Assistant,
    Tool,
}

/// A message's `content`: a string, null, or an array of content parts.
fn content_parts(mo: &Obj<'_>, kind: ContentKind) -> Result<Vec<Part>, ApiError> {
    let path = mo.path("content");
    let Some(content) = mo.get("content") else {
        return Ok(Vec::new());
    };
    match content {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![Part::Text { text: s.clone() }]),
        Value::Array(items) => {
            let mut parts = Vec::new();
            for (k, item) in items.iter().enumerate() {
                let po = Obj::new(item, format!("{path}[{k}]"))?;
                let ty = po.req_str("type")?;
                match (ty, kind) {
                    ("text", _) => {
                        let text = po.req_str("text")?;
                        if !text.is_empty() {
                            parts.push(Part::Text {
                                text: text.to_string(),
                            });
                        }
                    }
                    ("refusal", ContentKind::Assistant) => {
                        let text = po.req_str("refusal")?;
                        parts.push(Part::Text {
                            text: text.to_string(),
                        });
                    }
                    ("image_url", ContentKind::User) => {
                        let url = match po.get("image_url") {
                            Some(Value::String(s)) => s.as_str(),
                            Some(_) => po.req_obj("image_url")?.req_str("url")?,
                            None => return Err(wire::missing(&po.path("image_url"))),
                        };
                        parts.push(Part::Image {
                            url: url.to_string(),
                        });
                    }
                    ("input_audio" | "file", ContentKind::User) => {
                        return Err(ApiError::BadRequest(format!(
                            "{}: content part type \"{ty}\" is not supported",
                            po.path("type")
                        )));
                    }
                    _ => {
                        let expected: &[&str] = match kind {
                            ContentKind::User => &["text", "image_url"],
                            ContentKind::Assistant => &["text", "refusal"],
                            ContentKind::System | ContentKind::Tool => &["text"],
                        };
                        return Err(wire::unknown_variant(&po.path("type"), ty, expected));
                    }
                }
            }
            Ok(parts)
        }
        other => Err(wire::type_error(
            &path,
            other,
            "a string, an array of content parts or null",
        )),
    }
}

fn parse_tools(o: &Obj<'_>) -> Result<Vec<Tool>, ApiError> {
    let mut tools = Vec::new();
    let Some(raw) = o.arr("tools")? else {
        return Ok(tools);
    };
    for (i, t) in raw.iter().enumerate() {
        let to = Obj::new(t, format!("tools[{i}]"))?;
        let ty = to.str("type")?.unwrap_or("function");
        if ty != "function" {
            tracing::debug!(
                tool_type = ty,
                "skipping non-function tool in chat completions request"
            );
            continue;
        }
        let f = to.req_obj("function")?;
        let name = f.req_str("name")?;
        if name.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "{} must not be empty",
                f.path("name")
            )));
        }
        tools.push(Tool {
            name: name.to_string(),
            description: f.str("description")?.map(str::to_string),
            parameters: f.schema("parameters")?,
        });
    }
    Ok(tools)
}

fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
    }
}

#[derive(serde::Serialize)]
struct OaUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedTokens,
    completion_tokens_details: ReasoningTokens,
}

#[derive(serde::Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(serde::Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

impl OaUsage {
    fn new(u: &Usage) -> Self {
        let prompt = u.input + u.cache_read + u.cache_write;
        OaUsage {
            prompt_tokens: prompt,
            completion_tokens: u.output,
            total_tokens: prompt + u.output,
            prompt_tokens_details: CachedTokens {
                cached_tokens: u.cache_read,
            },
            completion_tokens_details: ReasoningTokens {
                reasoning_tokens: u.reasoning,
            },
        }
    }
}

/// A whole answer as a `chat.completion` object, serialised straight from the borrowed answer (no
/// intermediate `Value`: this is on every non-streaming request's path).
#[derive(serde::Serialize)]
pub struct Completion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: OaUsage,
    retort: wire::Served<'a>,
}

#[derive(serde::Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    finish_reason: &'static str,
    logprobs: Option<()>,
}

#[derive(serde::Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OaToolCall<'a>>,
    refusal: Option<()>,
}

#[derive(serde::Serialize)]
struct OaToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OaFunction<'a>,
}

#[derive(serde::Serialize)]
struct OaFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// The `chat.completion` object of a whole answer.
pub fn completion(resp: &ChatResponse) -> Completion<'_> {
    let text = resp.text();
    let reasoning: String = resp
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Reasoning { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let tool_calls = resp
        .content
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(OaToolCall {
                id,
                kind: "function",
                function: OaFunction { name, arguments },
            }),
            _ => None,
        })
        .collect();
    Completion {
        id: wire::prefixed_id("chatcmpl-", &resp.id),
        object: "chat.completion",
        created: wire::unix_now(),
        model: &resp.model,
        choices: [Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: (!text.is_empty()).then_some(text),
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls,
                refusal: None,
            },
            finish_reason: finish_reason(resp.stop_reason),
            logprobs: None,
        }],
        usage: OaUsage::new(&resp.usage),
        retort: wire::served(&resp.provider, &resp.model, &resp.failed_attempts),
    }
}

/// Renders a whole answer as a `chat.completion` object.
pub fn render(resp: &ChatResponse) -> Value {
    serde_json::to_value(completion(resp)).unwrap_or(Value::Null)
}

/// Serialises a chunk. These types cannot fail to serialise (string keys, no non-finite floats).
fn to_json<T: serde::Serialize>(v: &T) -> String {
    let mut out = Vec::with_capacity(384);
    match serde_json::to_writer(&mut out, v) {
        // serde_json writes UTF-8 only.
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Encodes a stream of [`StreamEvent`]s as `chat.completion.chunk` events, serialised from typed
/// borrowing structs (no `serde_json::Value` tree per chunk).
#[derive(Debug, Clone)]
pub struct StreamEncoder {
    id: String,
    created: u64,
    model: String,
    provider: String,
    include_usage: bool,
    finished: bool,
    /// A text chunk up to its `content` value, rendered once per stream (ids and model are fixed
    /// after `Start`): each text delta then costs one copy and the escaping of its own text.
    text_prefix: String,
}

/// What follows a text chunk's `content` value.
const TEXT_SUFFIX: &str = r#"},"logprobs":null,"finish_reason":null}]}"#;

/// One `chat.completion.chunk`.
#[derive(serde::Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: Option<()>,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OaUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retort: Option<wire::Served<'a>>,
}

#[derive(serde::Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// A chunk's `delta`: only the fields the event sets (`{}` on the finishing chunk).
#[derive(Default, serde::Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(serde::Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(serde::Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl StreamEncoder {
    pub fn new(parsed: &Parsed) -> Self {
        StreamEncoder {
            id: wire::new_id("chatcmpl-"),
            created: wire::unix_now(),
            model: parsed.req.model.clone(),
            provider: String::new(),
            include_usage: parsed.include_usage,
            finished: false,
            text_prefix: String::new(),
        }
    }

    /// A text delta's chunk: the same JSON as [`Self::delta`] renders, from the cached prefix.
    fn text(&mut self, text: &str) -> SseEvent {
        if self.text_prefix.is_empty() {
            let choice = [ChunkChoice {
                index: 0,
                delta: Delta {
                    content: Some(""),
                    ..Delta::default()
                },
                logprobs: None,
                finish_reason: None,
            }];
            let whole = to_json(&self.chunk(&choice));
            // `...{"content":""},"logprobs":...`: keep what precedes the empty string.
            self.text_prefix = whole
                .strip_suffix(TEXT_SUFFIX)
                .and_then(|w| w.strip_suffix(r#""""#))
                .unwrap_or_default()
                .to_owned();
            if self.text_prefix.is_empty() {
                return self.delta(Delta {
                    content: Some(text),
                    ..Delta::default()
                });
            }
        }
        let mut out =
            Vec::with_capacity(self.text_prefix.len() + text.len() + TEXT_SUFFIX.len() + 8);
        out.extend_from_slice(self.text_prefix.as_bytes());
        if serde_json::to_writer(&mut out, text).is_err() {
            return self.delta(Delta {
                content: Some(text),
                ..Delta::default()
            });
        }
        out.extend_from_slice(TEXT_SUFFIX.as_bytes());
        SseEvent::data(String::from_utf8(out).unwrap_or_default())
    }

    fn chunk<'a>(&'a self, choices: &'a [ChunkChoice<'a>]) -> Chunk<'a> {
        Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: None,
            choices,
            usage: None,
            retort: None,
        }
    }

    fn delta(&self, delta: Delta<'_>) -> SseEvent {
        let choice = [ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: None,
        }];
        SseEvent::data(to_json(&self.chunk(&choice)))
    }

    /// The chunks for one internal event; nothing after `Finish`.
    pub fn event(&mut self, ev: &StreamEvent) -> Vec<SseEvent> {
        if self.finished {
            return Vec::new();
        }
        match ev {
            // A later start (a continuation on another target) only changes who is named.
            StreamEvent::Start {
                provider, model, ..
            } if !self.provider.is_empty() => {
                if !model.is_empty() {
                    self.model = model.clone();
                }
                self.provider = provider.clone();
                Vec::new()
            }
            StreamEvent::Start {
                id,
                provider,
                model,
            } => {
                if !id.is_empty() {
                    self.id = wire::prefixed_id("chatcmpl-", id);
                }
                if !model.is_empty() {
                    self.model = model.clone();
                }
                self.provider = provider.clone();
                self.text_prefix.clear();
                vec![self.delta(Delta {
                    role: Some("assistant"),
                    content: Some(""),
                    ..Delta::default()
                })]
            }
            StreamEvent::TextDelta { text } => vec![self.text(text)],
            StreamEvent::ReasoningDelta { text } => {
                vec![self.delta(Delta {
                    reasoning_content: Some(text),
                    ..Delta::default()
                })]
            }
            // OpenAI has no place for Anthropic's thinking signatures.
            StreamEvent::ReasoningSignature { .. } => Vec::new(),
            StreamEvent::ToolCallStart { index, id, name } => {
                let call = ToolCallDelta {
                    index: *index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(name),
                        arguments: "",
                    },
                };
                vec![self.delta(Delta {
                    tool_calls: Some([call]),
                    ..Delta::default()
                })]
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let call = ToolCallDelta {
                    index: *index,
                    id: None,
                    kind: None,
                    function: FunctionDelta {
                        name: None,
                        arguments,
                    },
                };
                vec![self.delta(Delta {
                    tool_calls: Some([call]),
                    ..Delta::default()
                })]
            }
            StreamEvent::Finish {
                stop_reason,
                usage,
                failed_attempts,
            } => {
                self.finished = true;
                let mut out = Vec::with_capacity(3);
                let last = [ChunkChoice {
                    index: 0,
                    delta: Delta::default(),
                    logprobs: None,
                    finish_reason: Some(finish_reason(*stop_reason)),
                }];
                let served = || Some(wire::served(&self.provider, &self.model, failed_attempts));
                out.push(SseEvent::data(to_json(&Chunk {
                    retort: served(),
                    ..self.chunk(&last)
                })));
                if self.include_usage {
                    let u = Chunk {
                        usage: Some(OaUsage::new(usage)),
                        retort: served(),
                        ..self.chunk(&[])
                    };
                    out.push(SseEvent::data(to_json(&u)));
                }
                out.push(SseEvent::data("[DONE]"));
                out
            }
        }
    }

    /// A mid-stream error: `data: {"error": {...}}`, and no `[DONE]`.
    pub fn error(&mut self, err: &ApiError) -> Vec<SseEvent> {
        self.finished = true;
        vec![SseEvent::data(err.openai_body().to_string())]
    }
}

#[cfg(test)]
#[path = "openai_chat_tests.rs"]
mod tests;
