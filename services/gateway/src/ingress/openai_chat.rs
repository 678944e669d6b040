//! OpenAI Chat Completions (`POST /v1/chat/completions`): parses the request into a
//! [`ChatRequest`], renders a [`ChatResponse`] as a `chat.completion`, encodes a stream as
//! `chat.completion.chunk` server-sent events ending in `data: [DONE]`, and renders mid-stream errors.
//!
//! The [`wire`] helpers (path-tracking JSON access, ids, the `retort` extension object) are shared by
//! the three ingress modules.
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::SseEvent;
use crate::{
    error::ApiError,
    types::{ChatRequest, ChatResponse, Message, Part, Role, StopReason, StreamEvent, Tool, Usage},
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
                if !text.is_empty() {
                    system.push(text);
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
        stream,
    };
    Ok(Parsed {
        req,
        session_hint,
        include_usage,
        user: o.str("user")?.map(str::to_string),
        metadata,
    })
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

fn usage_json(u: &Usage) -> Value {
    let prompt = u.input + u.cache_read + u.cache_write;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output,
        "total_tokens": prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
    })
}

/// Renders a whole answer as a `chat.completion` object.
pub fn render(resp: &ChatResponse) -> Value {
    let text = resp.text();
    let reasoning: String = resp
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Reasoning { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let tool_calls: Vec<Value> = resp
        .content
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            })),
            _ => None,
        })
        .collect();

    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), Value::String(reasoning));
    }
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    message.insert("refusal".into(), Value::Null);

    json!({
        "id": wire::prefixed_id("chatcmpl-", &resp.id),
        "object": "chat.completion",
        "created": wire::unix_now(),
        "model": resp.model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(resp.stop_reason),
            "logprobs": null,
        }],
        "usage": usage_json(&resp.usage),
        "retort": wire::retort(&resp.provider, &resp.model, &resp.failed_attempts),
    })
}

/// Encodes a stream of [`StreamEvent`]s as `chat.completion.chunk` events.
#[derive(Debug, Clone)]
pub struct StreamEncoder {
    id: String,
    created: u64,
    model: String,
    provider: String,
    include_usage: bool,
    finished: bool,
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
        }
    }

    fn chunk(&self, choices: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.clone()));
        m.insert("object".into(), json!("chat.completion.chunk"));
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), Value::String(self.model.clone()));
        m.insert("system_fingerprint".into(), Value::Null);
        m.insert("choices".into(), choices);
        m
    }

    fn delta(&self, delta: Value) -> SseEvent {
        let c = self
            .chunk(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]));
        SseEvent::data(Value::Object(c).to_string())
    }

    /// The chunks for one internal event; nothing after `Finish`.
    pub fn event(&mut self, ev: &StreamEvent) -> Vec<SseEvent> {
        if self.finished {
            return Vec::new();
        }
        match ev {
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
                vec![self.delta(json!({"role": "assistant", "content": ""}))]
            }
            StreamEvent::TextDelta { text } => vec![self.delta(json!({"content": text}))],
            StreamEvent::ReasoningDelta { text } => {
                vec![self.delta(json!({"reasoning_content": text}))]
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                vec![self.delta(json!({"tool_calls": [{
                    "index": index,
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }]}))]
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                vec![self.delta(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                )]
            }
            StreamEvent::Finish {
                stop_reason,
                usage,
                failed_attempts,
            } => {
                self.finished = true;
                let retort = wire::retort(&self.provider, &self.model, failed_attempts);
                let mut out = Vec::with_capacity(3);
                let mut last = self.chunk(json!([{
                    "index": 0,
                    "delta": {},
                    "logprobs": null,
                    "finish_reason": finish_reason(*stop_reason),
                }]));
                last.insert("retort".into(), retort.clone());
                out.push(SseEvent::data(Value::Object(last).to_string()));
                if self.include_usage {
                    let mut u = self.chunk(json!([]));
                    u.insert("usage".into(), usage_json(usage));
                    u.insert("retort".into(), retort);
                    out.push(SseEvent::data(Value::Object(u).to_string()));
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

/// JSON helpers shared by the ingress modules: path-tracking field access that turns wrong shapes
/// into `ApiError::BadRequest` messages naming the field (`messages[2].content[0].type: ...`),
/// message merging, ids and the `retort` extension object.
pub(super) mod wire {
    use std::collections::BTreeMap;

    use serde_json::{Map, Value, json};

    use crate::{
        error::ApiError,
        types::{FailedAttempt, Message, Part, Role, ToolChoice},
    };

    /// Parses the body as JSON; syntax errors become `invalid JSON: ...` with line and column.
    pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
    }

    /// A serde-like description of a JSON value for error messages.
    pub fn describe(v: &Value) -> String {
        match v {
            Value::Null => "null".into(),
            Value::Bool(b) => format!("boolean `{b}`"),
            Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
            Value::Number(n) => format!("integer `{n}`"),
            Value::String(s) => {
                let mut short: String = s.chars().take(40).collect();
                if short.len() < s.len() {
                    short.push('…');
                }
                format!("string {short:?}")
            }
            Value::Array(_) => "array".into(),
            Value::Object(_) => "object".into(),
        }
    }

    pub fn body_error(path: &str, msg: impl std::fmt::Display) -> ApiError {
        if path.is_empty() {
            ApiError::BadRequest(format!("invalid request body: {msg}"))
        } else {
            ApiError::BadRequest(format!("invalid request body: {path}: {msg}"))
        }
    }

    pub fn type_error(path: &str, got: &Value, expected: &str) -> ApiError {
        body_error(
            path,
            format!("invalid type: {}, expected {expected}", describe(got)),
        )
    }

    pub fn missing(path: &str) -> ApiError {
        body_error(path, "field required")
    }

    pub fn unknown_variant(path: &str, got: &str, expected: &[&str]) -> ApiError {
        let list = expected
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        body_error(
            path,
            format!("unknown variant {got:?}, expected one of {list}"),
        )
    }

    /// A JSON object and the path that leads to it.
    pub struct Obj<'a> {
        map: &'a Map<String, Value>,
        path: String,
    }

    impl<'a> Obj<'a> {
        /// The request body itself, which must be an object.
        pub fn root(v: &'a Value) -> Result<Self, ApiError> {
            match v {
                Value::Object(map) => Ok(Obj {
                    map,
                    path: String::new(),
                }),
                other => Err(body_error(
                    "",
                    format!("expected a JSON object, got {}", describe(other)),
                )),
            }
        }

        /// `v`, found at `path`, which must be an object.
        pub fn new(v: &'a Value, path: String) -> Result<Self, ApiError> {
            match v {
                Value::Object(map) => Ok(Obj { map, path }),
                other => Err(type_error(&path, other, "an object")),
            }
        }

        /// The path of `key` inside this object.
        pub fn path(&self, key: &str) -> String {
            if self.path.is_empty() {
                key.to_string()
            } else {
                format!("{}.{key}", self.path)
            }
        }

        /// The value of `key`; missing and `null` are both `None`.
        pub fn get(&self, key: &str) -> Option<&'a Value> {
            self.map.get(key).filter(|v| !v.is_null())
        }

        pub fn str(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
            match self.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(other) => Err(type_error(&self.path(key), other, "a string")),
            }
        }

        pub fn req_str(&self, key: &str) -> Result<&'a str, ApiError> {
            self.str(key)?.ok_or_else(|| missing(&self.path(key)))
        }

        pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
            match self.get(key) {
                None => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(type_error(&self.path(key), other, "a boolean")),
            }
        }

        /// A number that must lie in `lo..=hi`.
        pub fn f32_in(&self, key: &str, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
            match self.get(key) {
                None => Ok(None),
                Some(Value::Number(n)) => {
                    let x = n.as_f64().unwrap_or(f64::NAN);
                    if !(f64::from(lo)..=f64::from(hi)).contains(&x) {
                        return Err(ApiError::BadRequest(format!(
                            "{} must be between {lo} and {hi}, got {n}",
                            self.path(key)
                        )));
                    }
                    Ok(Some(x as f32))
                }
                Some(other) => Err(type_error(&self.path(key), other, "a number")),
            }
        }

        /// An integer that must be at least 1 (token limits).
        pub fn u32_min1(&self, key: &str) -> Result<Option<u32>, ApiError> {
            let Some(v) = self.get(key) else {
                return Ok(None);
            };
            let path = self.path(key);
            let Value::Number(n) = v else {
                return Err(type_error(&path, v, "an integer"));
            };
            let x = match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => u as f64,
                (None, Some(i), _) => i as f64,
                (None, None, Some(f)) if f.fract() == 0.0 => f,
                _ => return Err(type_error(&path, v, "an integer")),
            };
            if x < 1.0 {
                return Err(ApiError::BadRequest(format!(
                    "{path} must be at least 1, got {n}"
                )));
            }
            if x > f64::from(u32::MAX) {
                return Err(ApiError::BadRequest(format!(
                    "{path} must be at most {}, got {n}",
                    u32::MAX
                )));
            }
            Ok(Some(x as u32))
        }

        pub fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, ApiError> {
            self.get(key)
                .map(|v| Obj::new(v, self.path(key)))
                .transpose()
        }

        pub fn req_obj(&self, key: &str) -> Result<Obj<'a>, ApiError> {
            self.obj(key)?.ok_or_else(|| missing(&self.path(key)))
        }

        pub fn arr(&self, key: &str) -> Result<Option<&'a [Value]>, ApiError> {
            match self.get(key) {
                None => Ok(None),
                Some(Value::Array(a)) => Ok(Some(a.as_slice())),
                Some(other) => Err(type_error(&self.path(key), other, "an array")),
            }
        }

        pub fn req_arr(&self, key: &str) -> Result<&'a [Value], ApiError> {
            self.arr(key)?.ok_or_else(|| missing(&self.path(key)))
        }

        /// An object whose values are all strings (`metadata`).
        pub fn string_map(&self, key: &str) -> Result<Option<BTreeMap<String, String>>, ApiError> {
            let Some(o) = self.obj(key)? else {
                return Ok(None);
            };
            let mut out = BTreeMap::new();
            for (k, v) in o.map {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::Null => {}
                    other => return Err(type_error(&o.path(k), other, "a string")),
                }
            }
            Ok(Some(out))
        }

        /// A string or an array of strings (`stop`).
        pub fn str_or_list(&self, key: &str) -> Result<Vec<String>, ApiError> {
            match self.get(key) {
                None => Ok(Vec::new()),
                Some(Value::String(s)) => Ok(vec![s.clone()]),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(type_error(
                            &format!("{}[{i}]", self.path(key)),
                            other,
                            "a string",
                        )),
                    })
                    .collect(),
                Some(other) => Err(type_error(
                    &self.path(key),
                    other,
                    "a string or an array of strings",
                )),
            }
        }

        /// A JSON Schema object; missing means "no parameters".
        pub fn schema(&self, key: &str) -> Result<Value, ApiError> {
            match self.get(key) {
                None => Ok(json!({"type": "object", "properties": {}})),
                Some(v @ Value::Object(_)) => Ok(v.clone()),
                Some(other) => Err(type_error(&self.path(key), other, "a JSON Schema object")),
            }
        }
    }

    /// The required, non-empty `model` field.
    pub fn model(o: &Obj<'_>) -> Result<String, ApiError> {
        let model = o.req_str("model")?;
        if model.trim().is_empty() {
            return Err(ApiError::BadRequest("model must not be empty".into()));
        }
        Ok(model.to_string())
    }

    /// OpenAI's `tool_choice`: `"auto"|"none"|"required"`, `{"type":"function","function":{"name"}}`
    /// (Chat) or `{"type":"function","name"}` (Responses). Hosted-tool choices fall back to auto.
    pub fn tool_choice(o: &Obj<'_>, key: &str) -> Result<Option<ToolChoice>, ApiError> {
        let path = o.path(key);
        match o.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Ok(Some(ToolChoice::Auto)),
                "none" => Ok(Some(ToolChoice::None)),
                "required" => Ok(Some(ToolChoice::Required)),
                other => Err(unknown_variant(&path, other, &["auto", "none", "required"])),
            },
            Some(v @ Value::Object(_)) => {
                let to = Obj::new(v, path)?;
                match to.req_str("type")? {
                    ty @ ("function" | "custom") => {
                        let name = match to.obj(ty)? {
                            Some(inner) => inner.req_str("name")?,
                            None => to.req_str("name")?,
                        };
                        Ok(Some(ToolChoice::Tool(name.to_string())))
                    }
                    "allowed_tools" => {
                        let mode = match to.obj("allowed_tools")? {
                            Some(inner) => inner.str("mode")?,
                            None => to.str("mode")?,
                        };
                        match mode.unwrap_or("auto") {
                            "required" => Ok(Some(ToolChoice::Required)),
                            _ => Ok(Some(ToolChoice::Auto)),
                        }
                    }
                    other => {
                        tracing::debug!(
                            tool_choice = other,
                            "hosted tool choice not supported; using auto"
                        );
                        Ok(Some(ToolChoice::Auto))
                    }
                }
            }
            Some(other) => Err(type_error(&path, other, "a string or an object")),
        }
    }

    /// Appends `parts` as a `role` message, merging into the previous message when it has the same
    /// role (so tool results after an assistant tool call land in one user message).
    pub fn push_message(messages: &mut Vec<Message>, role: Role, parts: Vec<Part>) {
        if parts.is_empty() {
            return;
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => messages.push(Message { role, parts }),
        }
    }

    /// Tool-call arguments, with an empty string normalised to `{}`.
    pub fn non_empty_args(arguments: &str) -> String {
        if arguments.trim().is_empty() {
            "{}".to_string()
        } else {
            arguments.to_string()
        }
    }

    pub fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// `{prefix}{random hex}`.
    pub fn new_id(prefix: &str) -> String {
        format!("{prefix}{}", uuid::Uuid::new_v4().simple())
    }

    /// `id` with the protocol's id prefix (kept when already there; a fresh id when `id` is empty).
    pub fn prefixed_id(prefix: &str, id: &str) -> String {
        if id.is_empty() {
            new_id(prefix)
        } else if id.starts_with(prefix) {
            id.to_string()
        } else {
            format!("{prefix}{id}")
        }
    }

    /// The `retort` extension object naming who served the answer.
    pub fn retort(provider: &str, model: &str, failed: &[FailedAttempt]) -> Value {
        let failed: Vec<Value> = failed
            .iter()
            .map(|f| {
                json!({
                    "provider": f.provider,
                    "model": f.model,
                    "error": f.error,
                    "status": f.status,
                    "duration_ms": f.duration_ms,
                })
            })
            .collect();
        json!({"provider": provider, "model": model, "failed_attempts": failed})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{FailedAttempt, ToolChoice};

    fn bad(body: &str) -> String {
        match parse(body.as_bytes()) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("expected BadRequest for {body}, got {other:?}"),
        }
    }

    fn data(ev: &SseEvent) -> Value {
        assert_eq!(ev.event, None);
        serde_json::from_str(&ev.data).unwrap()
    }

    #[test]
    fn parses_a_tool_conversation() {
        let body = json!({
            "model": "gpt-4.1",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What's the weather in Paris and Rome?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                {"role": "user", "content": "Thanks. Which is warmer?"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Get weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "max_completion_tokens": 512,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "reasoning_effort": "low",
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "end-user-7",
            "metadata": {"session_id": "sess-42", "team": "infra"},
            "parallel_tool_calls": true,
            "some_harness_field": {"x": 1}
        });
        let p = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(p.session_hint.as_deref(), Some("sess-42"));
        assert!(p.include_usage);
        assert_eq!(p.user.as_deref(), Some("end-user-7"));
        assert_eq!(p.metadata.get("team").map(String::as_str), Some("infra"));
        let r = &p.req;
        assert_eq!(r.model, "gpt-4.1");
        assert_eq!(r.system.as_deref(), Some("You are terse.\n\nUse tools."));
        assert_eq!(r.max_tokens, Some(512));
        assert_eq!(r.temperature, Some(0.2));
        assert_eq!(r.top_p, Some(0.9));
        assert_eq!(r.stop, vec!["END".to_string()]);
        assert_eq!(r.reasoning_effort.as_deref(), Some("low"));
        assert!(r.stream);
        assert_eq!(r.tool_choice, Some(ToolChoice::Tool("weather".into())));
        assert_eq!(r.tools.len(), 1);
        assert_eq!(
            r.tools[0].parameters["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[0].role, Role::User);
        assert_eq!(
            r.messages[0].parts[1],
            Part::Image {
                url: "data:image/png;base64,AAAA".into()
            }
        );
        assert_eq!(r.messages[1].role, Role::Assistant);
        assert_eq!(
            r.messages[1].parts,
            vec![
                Part::ToolCall {
                    id: "call_1".into(),
                    name: "weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into()
                },
                Part::ToolCall {
                    id: "call_2".into(),
                    name: "weather".into(),
                    arguments: "{}".into()
                },
            ]
        );
        assert_eq!(r.messages[2].role, Role::User);
        assert_eq!(
            r.messages[2].parts,
            vec![
                Part::ToolResult {
                    tool_call_id: "call_1".into(),
                    content: "18C".into(),
                    is_error: false
                },
                Part::ToolResult {
                    tool_call_id: "call_2".into(),
                    content: "21C".into(),
                    is_error: false
                },
                Part::Text {
                    text: "Thanks. Which is warmer?".into()
                },
            ]
        );
    }

    #[test]
    fn max_tokens_and_stop_list_and_no_session() {
        let p = parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":7,"stop":["a","b"],"user":"u1"}"#,
        )
        .unwrap();
        assert_eq!(p.req.max_tokens, Some(7));
        assert_eq!(p.req.stop, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(p.session_hint, None);
        assert!(!p.include_usage);
        assert!(!p.req.stream);
    }

    #[test]
    fn parse_errors_name_the_field() {
        assert!(bad("{not json").starts_with("invalid JSON:"));
        assert!(bad("[1,2]").contains("expected a JSON object"));
        let m = bad(r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#);
        assert!(
            m.contains("messages[0].role: unknown variant \"robot\""),
            "{m}"
        );
        assert!(m.contains("\"assistant\""), "{m}");
        let m =
            bad(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#);
        assert!(
            m.contains("temperature: invalid type: string \"hot\", expected a number"),
            "{m}"
        );
        let m = bad(r#"{"model":"m","messages":[]}"#);
        assert_eq!(m, "messages must contain at least one message");
        let m = bad(r#"{"messages":[{"role":"user","content":"x"}]}"#);
        assert!(m.contains("model: field required"), "{m}");
        let m = bad(r#"{"model":"","messages":[{"role":"user","content":"x"}]}"#);
        assert!(m.contains("model must not be empty"), "{m}");
        let m = bad(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#);
        assert!(m.contains("temperature must be between 0 and 2"), "{m}");
        let m = bad(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":1.5}"#);
        assert!(m.contains("top_p must be between 0 and 1"), "{m}");
        let m = bad(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#);
        assert!(m.contains("max_tokens must be at least 1"), "{m}");
        let m = bad(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"video","url":"x"}]}]}"#,
        );
        assert!(
            m.contains("messages[0].content[0].type: unknown variant \"video\""),
            "{m}"
        );
        let m = bad(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#);
        assert!(
            m.contains("messages[0].tool_call_id: field required"),
            "{m}"
        );
        let m = bad(r#"{"model":"m","messages":[{"role":"user","content":5}]}"#);
        assert!(
            m.contains("messages[0].content: invalid type: integer `5`"),
            "{m}"
        );
        let m = bad(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#);
        assert!(m.contains("stream: invalid type"), "{m}");
        let m = bad(r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#);
        assert!(m.contains("at least one user or assistant message"), "{m}");
        let m = bad(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#,
        );
        assert!(m.contains("tool_choice: unknown variant"), "{m}");
    }

    fn sample_response() -> ChatResponse {
        ChatResponse {
            id: "abc".into(),
            provider: "openai-eu".into(),
            model: "gpt-4.1-2025-04-14".into(),
            content: vec![
                Part::Reasoning {
                    text: "thinking".into(),
                    signature: None,
                },
                Part::Text {
                    text: "Checking.".into(),
                },
                Part::ToolCall {
                    id: "call_9".into(),
                    name: "weather".into(),
                    arguments: "{\"city\":\"Oslo\"}".into(),
                },
            ],
            stop_reason: StopReason::ToolUse,
            usage: Usage {
                input: 100,
                output: 20,
                reasoning: 5,
                cache_read: 30,
                cache_write: 10,
            },
            failed_attempts: vec![FailedAttempt {
                provider: "openai-us".into(),
                model: "gpt-4.1".into(),
                error: "upstream returned 503".into(),
                status: Some(503),
                duration_ms: 120,
            }],
        }
    }

    #[test]
    fn renders_a_completion() {
        let v = render(&sample_response());
        assert_eq!(v["id"], "chatcmpl-abc");
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
        assert_eq!(v["model"], "gpt-4.1-2025-04-14");
        let c = &v["choices"][0];
        assert_eq!(c["index"], 0);
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(c["message"]["role"], "assistant");
        assert_eq!(c["message"]["content"], "Checking.");
        assert_eq!(c["message"]["reasoning_content"], "thinking");
        assert_eq!(c["message"]["refusal"], Value::Null);
        assert_eq!(c["message"]["tool_calls"][0]["id"], "call_9");
        assert_eq!(c["message"]["tool_calls"][0]["type"], "function");
        assert_eq!(c["message"]["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(
            c["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(v["usage"]["prompt_tokens"], 140);
        assert_eq!(v["usage"]["completion_tokens"], 20);
        assert_eq!(v["usage"]["total_tokens"], 160);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"],
            5
        );
        assert_eq!(v["retort"]["provider"], "openai-eu");
        assert_eq!(v["retort"]["model"], "gpt-4.1-2025-04-14");
        assert_eq!(v["retort"]["failed_attempts"][0]["provider"], "openai-us");
        assert_eq!(v["retort"]["failed_attempts"][0]["status"], 503);

        let plain = ChatResponse {
            content: vec![Part::Text { text: "hi".into() }],
            ..Default::default()
        };
        let v = render(&plain);
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());
        assert!(
            v["choices"][0]["message"]
                .get("reasoning_content")
                .is_none()
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        let empty = ChatResponse {
            stop_reason: StopReason::MaxTokens,
            ..Default::default()
        };
        let v = render(&empty);
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }

    fn stream_events() -> Vec<StreamEvent> {
        vec![
            StreamEvent::Start {
                id: "up-1".into(),
                provider: "openai-eu".into(),
                model: "gpt-4.1-2025-04-14".into(),
            },
            StreamEvent::TextDelta { text: "Hel".into() },
            StreamEvent::TextDelta { text: "lo".into() },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_1".into(),
                name: "weather".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"city\":".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "\"Oslo\"}".into(),
            },
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                usage: Usage {
                    input: 10,
                    output: 5,
                    reasoning: 0,
                    cache_read: 2,
                    cache_write: 0,
                },
                failed_attempts: vec![],
            },
        ]
    }

    #[test]
    fn encodes_a_stream() {
        let p = parse(
            br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        let mut enc = StreamEncoder::new(&p);
        let out: Vec<SseEvent> = stream_events().iter().flat_map(|e| enc.event(e)).collect();
        assert_eq!(out.len(), 9);
        let chunks: Vec<Value> = out[..8].iter().map(data).collect();
        for c in &chunks {
            assert_eq!(c["id"], "chatcmpl-up-1");
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "gpt-4.1-2025-04-14");
            assert_eq!(c["created"], chunks[0]["created"]);
        }
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "lo");
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}})
        );
        assert_eq!(
            chunks[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":"
        );
        assert_eq!(
            chunks[5]["choices"][0]["delta"]["tool_calls"][0]["index"],
            0
        );
        assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
        assert_eq!(chunks[6]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[6]["retort"]["provider"], "openai-eu");
        assert_eq!(chunks[6]["retort"]["model"], "gpt-4.1-2025-04-14");
        assert_eq!(chunks[7]["choices"], json!([]));
        assert_eq!(chunks[7]["usage"]["prompt_tokens"], 12);
        assert_eq!(chunks[7]["usage"]["completion_tokens"], 5);
        assert_eq!(chunks[7]["usage"]["total_tokens"], 17);
        assert_eq!(chunks[7]["retort"]["provider"], "openai-eu");
        assert_eq!(out[8], SseEvent::data("[DONE]"));
        // Nothing after Finish.
        assert!(
            enc.event(&StreamEvent::TextDelta {
                text: "late".into()
            })
            .is_empty()
        );
    }

    #[test]
    fn stream_without_usage_and_with_reasoning() {
        let p = parse(br#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let mut enc = StreamEncoder::new(&p);
        let mut out = enc.event(&StreamEvent::Start {
            id: String::new(),
            provider: "p".into(),
            model: String::new(),
        });
        out.extend(enc.event(&StreamEvent::ReasoningDelta { text: "hmm".into() }));
        out.extend(enc.event(&StreamEvent::Finish {
            stop_reason: StopReason::MaxTokens,
            usage: Usage::default(),
            failed_attempts: vec![],
        }));
        assert_eq!(out.len(), 4);
        let first = data(&out[0]);
        assert_eq!(first["model"], "fast");
        assert_eq!(
            data(&out[1])["choices"][0]["delta"]["reasoning_content"],
            "hmm"
        );
        assert_eq!(data(&out[2])["choices"][0]["finish_reason"], "length");
        assert_eq!(out[3].data, "[DONE]");
    }

    #[test]
    fn error_event_shape() {
        let p = parse(br#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let mut enc = StreamEncoder::new(&p);
        let out = enc.error(&ApiError::Upstream("all targets failed".into()));
        assert_eq!(out.len(), 1);
        let v = data(&out[0]);
        assert_eq!(v["error"]["message"], "all targets failed");
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["code"], "upstream_unavailable");
        assert_eq!(v["error"]["param"], Value::Null);
        assert!(
            enc.event(&StreamEvent::TextDelta { text: "x".into() })
                .is_empty()
        );
    }
}
