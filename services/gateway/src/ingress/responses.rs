//! OpenAI Responses (`POST /v1/responses`, what Codex speaks): parses the request (stateless only:
//! the whole conversation in `input`) into a [`ChatRequest`], renders a [`ChatResponse`] as a
//! `response` object, and encodes a stream as the Responses API's named events (`response.created`
//! ... `response.completed`), each with a `sequence_number`.
use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use super::{SseEvent, openai_chat::wire};
use crate::{
    error::ApiError,
    types::{ChatRequest, ChatResponse, Message, Part, Role, StopReason, StreamEvent, Tool, Usage},
};
use wire::Obj;

/// A parsed Responses request.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub req: ChatRequest,
    /// `metadata.session_id`, else `prompt_cache_key` (Codex sets it to its conversation id).
    pub session_hint: Option<String>,
    /// `metadata`: string key/value pairs.
    pub metadata: BTreeMap<String, String>,
    /// `store`; the gateway never stores responses, whatever the caller asks.
    pub store: Option<bool>,
    /// `parallel_tool_calls`, as sent (not passed upstream).
    pub parallel_tool_calls: Option<bool>,
    /// `reasoning.summary` (`auto`, `concise`, `detailed`), as sent.
    pub reasoning_summary: Option<String>,
}

const ITEM_ROLES: &[&str] = &["user", "assistant", "system", "developer"];

/// Parses a Responses request body.
pub fn parse(body: &[u8]) -> Result<Parsed, ApiError> {
    let root = wire::parse_body(body)?;
    let o = Obj::root(&root)?;

    let model = wire::model(&o)?;
    if o.str("previous_response_id")?
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::BadRequest(
            "previous_response_id is not supported: send the full conversation in input (store=false)".into(),
        ));
    }

    let mut system: Vec<String> = Vec::new();
    if let Some(instructions) = o.str("instructions")?
        && !instructions.is_empty()
    {
        system.push(instructions.to_string());
    }

    let mut messages: Vec<Message> = Vec::new();
    match o.get("input") {
        None => return Err(wire::missing("input")),
        Some(Value::String(s)) => {
            if s.is_empty() {
                return Err(ApiError::BadRequest("input must not be empty".into()));
            }
            messages.push(Message::text(Role::User, s.clone()));
        }
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ApiError::BadRequest(
                    "input must contain at least one item".into(),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                parse_item(
                    Obj::new(item, format!("input[{i}]"))?,
                    &mut system,
                    &mut messages,
                )?;
            }
        }
        Some(other) => {
            return Err(wire::type_error(
                "input",
                other,
                "a string or an array of input items",
            ));
        }
    }
    if messages.is_empty() {
        return Err(ApiError::BadRequest(
            "input must contain at least one user or assistant message".into(),
        ));
    }

    let mut tools = Vec::new();
    if let Some(raw) = o.arr("tools")? {
        for (i, t) in raw.iter().enumerate() {
            let to = Obj::new(t, format!("tools[{i}]"))?;
            let ty = to.req_str("type")?;
            if ty != "function" {
                tracing::debug!(
                    tool_type = ty,
                    "skipping non-function tool in responses request"
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
            tools.push(Tool {
                name: name.to_string(),
                description: to.str("description")?.map(str::to_string),
                parameters: to.schema("parameters")?,
            });
        }
    }

    let (reasoning_effort, reasoning_summary) = match o.obj("reasoning")? {
        Some(r) => (
            r.str("effort")?.map(str::to_string),
            r.str("summary")?.map(str::to_string),
        ),
        None => (None, None),
    };
    if let Some(text) = o.obj("text")?
        && let Some(format) = text.obj("format")?
        && let Some(ty) = format.str("type")?
        && ty != "text"
    {
        tracing::debug!(
            format = ty,
            "text.format is not translated; answering in plain text"
        );
    }

    let metadata = o.string_map("metadata")?.unwrap_or_default();
    let prompt_cache_key = o.str("prompt_cache_key")?.filter(|s| !s.is_empty());
    let session_hint = metadata
        .get("session_id")
        .filter(|s| !s.is_empty())
        .cloned()
        .or_else(|| prompt_cache_key.map(str::to_string));

    let req = ChatRequest {
        model,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        tools,
        tool_choice: wire::tool_choice(&o, "tool_choice")?,
        max_tokens: o.u32_min1("max_output_tokens")?,
        temperature: o.f32_in("temperature", 0.0, 2.0)?,
        top_p: o.f32_in("top_p", 0.0, 1.0)?,
        stop: Vec::new(),
        reasoning_effort,
        stream: o.bool("stream")?.unwrap_or(false),
    };
    Ok(Parsed {
        req,
        session_hint,
        metadata,
        store: o.bool("store")?,
        parallel_tool_calls: o.bool("parallel_tool_calls")?,
        reasoning_summary,
    })
}

/// One `input` item: a message, a function call or its output; reasoning and unknown items are
/// dropped.
fn parse_item(
    it: Obj<'_>,
    system: &mut Vec<String>,
    messages: &mut Vec<Message>,
) -> Result<(), ApiError> {
    match it.str("type")? {
        None | Some("message") => {
            let role = it.req_str("role")?;
            let parts = item_content(&it)?;
            match role {
                "system" | "developer" => {
                    let text = parts
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
                "user" => wire::push_message(messages, Role::User, parts),
                "assistant" => wire::push_message(messages, Role::Assistant, parts),
                other => return Err(wire::unknown_variant(&it.path("role"), other, ITEM_ROLES)),
            }
        }
        Some("function_call") => {
            let call_id = it.req_str("call_id")?;
            let name = it.req_str("name")?;
            let arguments = it.str("arguments")?.unwrap_or_default();
            let part = Part::ToolCall {
                id: call_id.to_string(),
                name: name.to_string(),
                arguments: wire::non_empty_args(arguments),
            };
            wire::push_message(messages, Role::Assistant, vec![part]);
        }
        Some("function_call_output") => {
            let call_id = it.req_str("call_id")?;
            let content = match it.get("output") {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut texts = Vec::new();
                    for (k, p) in parts.iter().enumerate() {
                        let po = Obj::new(p, format!("{}[{k}]", it.path("output")))?;
                        match po.req_str("type")? {
                            "input_text" | "output_text" | "text" => {
                                texts.push(po.req_str("text")?.to_string())
                            }
                            "input_image" => texts.push("[image]".to_string()),
                            other => texts.push(format!("[{other}]")),
                        }
                    }
                    texts.join("\n")
                }
                Some(other) => {
                    return Err(wire::type_error(
                        &it.path("output"),
                        other,
                        "a string or an array",
                    ));
                }
            };
            let part = Part::ToolResult {
                tool_call_id: call_id.to_string(),
                content,
                is_error: false,
            };
            wire::push_message(messages, Role::User, vec![part]);
        }
        Some("reasoning") => {
            // Summaries and encrypted content are OpenAI-specific and cannot be replayed to other
            // providers; the model re-reasons from the visible conversation.
            tracing::debug!("dropping reasoning input item");
        }
        Some(other) => tracing::debug!(
            item_type = other,
            "ignoring unsupported responses input item"
        ),
    }
    Ok(())
}

/// A message item's `content`: a string or an array of content parts.
fn item_content(it: &Obj<'_>) -> Result<Vec<Part>, ApiError> {
    let path = it.path("content");
    match it.get("content") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::Text { text: s.clone() }]),
        Some(Value::Array(items)) => {
            let mut parts = Vec::new();
            for (k, item) in items.iter().enumerate() {
                let po = Obj::new(item, format!("{path}[{k}]"))?;
                match po.req_str("type")? {
                    "input_text" | "output_text" | "text" => {
                        let text = po.req_str("text")?;
                        if !text.is_empty() {
                            parts.push(Part::Text {
                                text: text.to_string(),
                            });
                        }
                    }
                    "refusal" => parts.push(Part::Text {
                        text: po.req_str("refusal")?.to_string(),
                    }),
                    "input_image" => {
                        let url = match (po.get("image_url"), po.get("file_id")) {
                            (Some(Value::String(u)), _) => u.as_str(),
                            (Some(Value::Object(_)), _) => {
                                po.req_obj("image_url")?.req_str("url")?
                            }
                            (Some(other), _) => {
                                return Err(wire::type_error(
                                    &po.path("image_url"),
                                    other,
                                    "a string",
                                ));
                            }
                            (None, Some(_)) => {
                                return Err(ApiError::BadRequest(format!(
                                    "{}: input_image by file_id is not supported; send image_url",
                                    po.path("file_id")
                                )));
                            }
                            (None, None) => return Err(wire::missing(&po.path("image_url"))),
                        };
                        parts.push(Part::Image {
                            url: url.to_string(),
                        });
                    }
                    ty @ ("input_file" | "input_audio") => {
                        return Err(ApiError::BadRequest(format!(
                            "{}: content part type \"{ty}\" is not supported",
                            po.path("type")
                        )));
                    }
                    other => {
                        return Err(wire::unknown_variant(
                            &po.path("type"),
                            other,
                            &[
                                "input_text",
                                "output_text",
                                "text",
                                "input_image",
                                "refusal",
                            ],
                        ));
                    }
                }
            }
            Ok(parts)
        }
        Some(other) => Err(wire::type_error(
            &path,
            other,
            "a string or an array of content parts",
        )),
    }
}

fn usage_json(u: &Usage) -> Value {
    let input = u.input + u.cache_read + u.cache_write;
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u.cache_read},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": input + u.output,
    })
}

/// The response `status`, the `incomplete_details.reason` and the final stream event for a stop.
fn status_for(stop: StopReason) -> (&'static str, Option<&'static str>, &'static str) {
    match stop {
        StopReason::MaxTokens => (
            "incomplete",
            Some("max_output_tokens"),
            "response.incomplete",
        ),
        StopReason::ContentFilter => ("incomplete", Some("content_filter"), "response.incomplete"),
        StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse => {
            ("completed", None, "response.completed")
        }
    }
}

/// A `response` object. `usage` and `retort` are null/absent while in progress.
struct ResponseObject<'a> {
    id: &'a str,
    created_at: u64,
    model: &'a str,
    status: &'a str,
    incomplete_reason: Option<&'a str>,
    error: Option<Value>,
    output: Vec<Value>,
    usage: Option<&'a Usage>,
    retort: Option<Value>,
}

impl ResponseObject<'_> {
    fn into_json(self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!("response"));
        m.insert("created_at".into(), json!(self.created_at));
        m.insert("status".into(), json!(self.status));
        m.insert("error".into(), self.error.unwrap_or(Value::Null));
        m.insert(
            "incomplete_details".into(),
            self.incomplete_reason
                .map_or(Value::Null, |r| json!({"reason": r})),
        );
        m.insert("model".into(), json!(self.model));
        m.insert("output".into(), Value::Array(self.output));
        m.insert("usage".into(), self.usage.map_or(Value::Null, usage_json));
        m.insert("parallel_tool_calls".into(), json!(true));
        m.insert("tool_choice".into(), json!("auto"));
        m.insert("tools".into(), json!([]));
        if let Some(r) = self.retort {
            m.insert("retort".into(), r);
        }
        Value::Object(m)
    }
}

fn reasoning_item(id: &str, text: &str, done: bool) -> Value {
    let summary = if done {
        json!([{"type": "summary_text", "text": text}])
    } else {
        json!([])
    };
    json!({"type": "reasoning", "id": id, "summary": summary})
}

fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

fn message_item(id: &str, text: &str, done: bool) -> Value {
    let (status, content) = if done {
        ("completed", json!([output_text_part(text)]))
    } else {
        ("in_progress", json!([]))
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, done: bool) -> Value {
    let status = if done { "completed" } else { "in_progress" };
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "arguments": if done { arguments } else { "" },
        "status": status,
    })
}

/// Renders a whole answer as a `response` object.
pub fn render(resp: &ChatResponse) -> Value {
    let mut output = Vec::new();
    let reasoning: String = resp
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Reasoning { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    if !reasoning.is_empty() {
        output.push(reasoning_item(&wire::new_id("rs_"), &reasoning, true));
    }
    let text = resp.text();
    if !text.is_empty() {
        output.push(message_item(&wire::new_id("msg_"), &text, true));
    }
    for p in &resp.content {
        if let Part::ToolCall {
            id,
            name,
            arguments,
        } = p
        {
            output.push(call_item(&wire::new_id("fc_"), id, name, arguments, true));
        }
    }
    let (status, incomplete_reason, _) = status_for(resp.stop_reason);
    ResponseObject {
        id: &wire::prefixed_id("resp_", &resp.id),
        created_at: wire::unix_now(),
        model: &resp.model,
        status,
        incomplete_reason,
        error: None,
        output,
        usage: Some(&resp.usage),
        retort: Some(wire::retort(
            &resp.provider,
            &resp.model,
            &resp.failed_attempts,
        )),
    }
    .into_json()
}

#[derive(Debug, Clone)]
enum ItemKind {
    Reasoning {
        text: String,
    },
    Message {
        text: String,
    },
    Call {
        call_id: String,
        name: String,
        arguments: String,
    },
}

#[derive(Debug, Clone)]
struct Item {
    id: String,
    kind: ItemKind,
    done: bool,
}

impl Item {
    fn json(&self, done: bool) -> Value {
        match &self.kind {
            ItemKind::Reasoning { text } => reasoning_item(&self.id, text, done),
            ItemKind::Message { text } => message_item(&self.id, text, done),
            ItemKind::Call {
                call_id,
                name,
                arguments,
            } => call_item(&self.id, call_id, name, arguments, done),
        }
    }
}

/// Encodes a stream of [`StreamEvent`]s as Responses API events.
#[derive(Debug, Clone)]
pub struct StreamEncoder {
    seq: u64,
    id: String,
    created_at: u64,
    model: String,
    provider: String,
    started: bool,
    finished: bool,
    /// Output items in `output_index` order.
    items: Vec<Item>,
    /// The open reasoning or message item, by output index.
    open: Option<usize>,
    /// Tool-call stream index → output index.
    calls: HashMap<u32, usize>,
}

impl StreamEncoder {
    pub fn new(parsed: &Parsed) -> Self {
        StreamEncoder {
            seq: 0,
            id: wire::new_id("resp_"),
            created_at: wire::unix_now(),
            model: parsed.req.model.clone(),
            provider: String::new(),
            started: false,
            finished: false,
            items: Vec::new(),
            open: None,
            calls: HashMap::new(),
        }
    }

    fn emit(&mut self, ty: &'static str, fields: Value) -> SseEvent {
        let mut m = Map::new();
        m.insert("type".into(), json!(ty));
        m.insert("sequence_number".into(), json!(self.seq));
        self.seq += 1;
        if let Value::Object(f) = fields {
            m.extend(f);
        }
        SseEvent::named(ty, Value::Object(m).to_string())
    }

    fn response(&self, status: &str) -> Value {
        ResponseObject {
            id: &self.id,
            created_at: self.created_at,
            model: &self.model,
            status,
            incomplete_reason: None,
            error: None,
            output: Vec::new(),
            usage: None,
            retort: None,
        }
        .into_json()
    }

    fn start(&mut self, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.response("in_progress");
        out.push(self.emit("response.created", json!({"response": r})));
        out.push(self.emit("response.in_progress", json!({"response": r})));
    }

    fn open_item(&mut self, kind: ItemKind, out: &mut Vec<SseEvent>) -> usize {
        let prefix = match kind {
            ItemKind::Reasoning { .. } => "rs_",
            ItemKind::Message { .. } => "msg_",
            ItemKind::Call { .. } => "fc_",
        };
        let idx = self.items.len();
        self.items.push(Item {
            id: wire::new_id(prefix),
            kind,
            done: false,
        });
        let Some(item) = self.items.get(idx) else {
            return idx;
        };
        let (id, added) = (item.id.clone(), item.json(false));
        let (is_message, is_reasoning) = (
            matches!(item.kind, ItemKind::Message { .. }),
            matches!(item.kind, ItemKind::Reasoning { .. }),
        );
        out.push(self.emit(
            "response.output_item.added",
            json!({"output_index": idx, "item": added}),
        ));
        if is_message {
            out.push(self.emit(
                "response.content_part.added",
                json!({"item_id": id, "output_index": idx, "content_index": 0, "part": output_text_part("")}),
            ));
        } else if is_reasoning {
            out.push(self.emit(
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": idx, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
            ));
        }
        idx
    }

    fn close_item(&mut self, idx: usize, out: &mut Vec<SseEvent>) {
        let Some(item) = self.items.get(idx) else {
            return;
        };
        if item.done {
            return;
        }
        let id = item.id.clone();
        let done_json = item.json(true);
        match item.kind.clone() {
            ItemKind::Message { text } => {
                out.push(self.emit(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": idx, "content_index": 0, "text": text}),
                ));
                out.push(self.emit(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": idx, "content_index": 0, "part": output_text_part(&text)}),
                ));
            }
            ItemKind::Reasoning { text } => {
                out.push(self.emit(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": idx, "summary_index": 0, "text": text}),
                ));
                out.push(self.emit(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": idx, "summary_index": 0, "part": {"type": "summary_text", "text": text}}),
                ));
            }
            ItemKind::Call { arguments, .. } => {
                out.push(self.emit(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": idx, "arguments": arguments}),
                ));
            }
        }
        out.push(self.emit(
            "response.output_item.done",
            json!({"output_index": idx, "item": done_json}),
        ));
        if let Some(item) = self.items.get_mut(idx) {
            item.done = true;
        }
        if self.open == Some(idx) {
            self.open = None;
        }
    }

    fn close_open(&mut self, out: &mut Vec<SseEvent>) {
        if let Some(idx) = self.open {
            self.close_item(idx, out);
        }
    }

    /// The open item if it is a message (`want_message`) or reasoning item, else a freshly opened one.
    fn text_item(&mut self, want_message: bool, out: &mut Vec<SseEvent>) -> usize {
        if let Some(idx) = self.open {
            let is_message = matches!(
                self.items.get(idx).map(|i| &i.kind),
                Some(ItemKind::Message { .. })
            );
            if is_message == want_message {
                return idx;
            }
            self.close_item(idx, out);
        }
        let kind = if want_message {
            ItemKind::Message {
                text: String::new(),
            }
        } else {
            ItemKind::Reasoning {
                text: String::new(),
            }
        };
        let idx = self.open_item(kind, out);
        self.open = Some(idx);
        idx
    }

    /// The events for one internal event; nothing after `Finish`.
    pub fn event(&mut self, ev: &StreamEvent) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        if let StreamEvent::Start {
            provider, model, ..
        } = ev
        {
            if !model.is_empty() {
                self.model = model.clone();
            }
            self.provider = provider.clone();
        }
        self.start(&mut out);
        match ev {
            StreamEvent::Start { .. } => {}
            StreamEvent::TextDelta { text } | StreamEvent::ReasoningDelta { text } => {
                let want_message = matches!(ev, StreamEvent::TextDelta { .. });
                let idx = self.text_item(want_message, &mut out);
                let Some(item) = self.items.get_mut(idx) else {
                    return out;
                };
                if let ItemKind::Message { text: acc } | ItemKind::Reasoning { text: acc } =
                    &mut item.kind
                {
                    acc.push_str(text);
                }
                let id = item.id.clone();
                let event = if want_message {
                    self.emit(
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": idx, "content_index": 0, "delta": text}),
                    )
                } else {
                    self.emit(
                        "response.reasoning_summary_text.delta",
                        json!({"item_id": id, "output_index": idx, "summary_index": 0, "delta": text}),
                    )
                };
                out.push(event);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.close_open(&mut out);
                let kind = ItemKind::Call {
                    call_id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                };
                let idx = self.open_item(kind, &mut out);
                self.calls.insert(*index, idx);
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let Some(&idx) = self.calls.get(index) else {
                    tracing::debug!(index, "tool call delta without a start; dropped");
                    return out;
                };
                let Some(item) = self.items.get_mut(idx) else {
                    return out;
                };
                if let ItemKind::Call { arguments: acc, .. } = &mut item.kind {
                    acc.push_str(arguments);
                }
                let id = item.id.clone();
                out.push(self.emit(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": idx, "delta": arguments}),
                ));
            }
            StreamEvent::Finish {
                stop_reason,
                usage,
                failed_attempts,
            } => {
                self.finished = true;
                for idx in 0..self.items.len() {
                    self.close_item(idx, &mut out);
                }
                let (status, incomplete_reason, event) = status_for(*stop_reason);
                let response = ResponseObject {
                    id: &self.id,
                    created_at: self.created_at,
                    model: &self.model,
                    status,
                    incomplete_reason,
                    error: None,
                    output: self.items.iter().map(|i| i.json(true)).collect(),
                    usage: Some(usage),
                    retort: Some(wire::retort(&self.provider, &self.model, failed_attempts)),
                }
                .into_json();
                out.push(self.emit(event, json!({"response": response})));
            }
        }
        out
    }

    /// A mid-stream error: an `error` event, then `response.failed`.
    pub fn error(&mut self, err: &ApiError) -> Vec<SseEvent> {
        self.finished = true;
        let (_, code) = err.openai_type_code();
        let message = err.to_string();
        let mut out = Vec::with_capacity(2);
        out.push(self.emit(
            "error",
            json!({"code": code, "message": message, "param": null}),
        ));
        let response = ResponseObject {
            id: &self.id,
            created_at: self.created_at,
            model: &self.model,
            status: "failed",
            incomplete_reason: None,
            error: Some(json!({"code": code, "message": message})),
            output: Vec::new(),
            usage: None,
            retort: None,
        }
        .into_json();
        out.push(self.emit("response.failed", json!({"response": response})));
        out
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

    fn codex_request() -> Value {
        json!({
            "model": "gpt-5-codex",
            "instructions": "You are Codex, a coding agent.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>sandboxed</permissions>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd=/repo</environment_context>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files."}]},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need ls"}], "encrypted_content": "gAAAA"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running ls."}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_abc", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"},
                {"type": "function_call_output", "call_id": "call_abc", "output": "README.md\nsrc"},
                {"type": "ghost_snapshot", "ghost_commit": {"id": "x"}},
                {"role": "user", "content": "Now read README.md"}
            ],
            "tools": [
                {"type": "function", "name": "shell", "description": "Run a command", "strict": false,
                 "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"]}},
                {"type": "web_search"}
            ],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
            "reasoning": {"effort": "medium", "summary": "auto"},
            "store": false,
            "stream": true,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "0199a-conversation-id",
            "max_output_tokens": 4096
        })
    }

    #[test]
    fn parses_a_codex_request() {
        let p = parse(codex_request().to_string().as_bytes()).unwrap();
        assert_eq!(p.session_hint.as_deref(), Some("0199a-conversation-id"));
        assert_eq!(p.store, Some(false));
        assert_eq!(p.parallel_tool_calls, Some(false));
        assert_eq!(p.reasoning_summary.as_deref(), Some("auto"));
        let r = &p.req;
        assert_eq!(r.model, "gpt-5-codex");
        assert_eq!(
            r.system.as_deref(),
            Some("You are Codex, a coding agent.\n\n<permissions>sandboxed</permissions>")
        );
        assert_eq!(r.reasoning_effort.as_deref(), Some("medium"));
        assert_eq!(r.max_tokens, Some(4096));
        assert!(r.stream);
        assert_eq!(r.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(r.tools.len(), 1);
        assert_eq!(r.tools[0].name, "shell");
        assert_eq!(r.tools[0].parameters["required"][0], "command");
        // developer → system, reasoning and ghost_snapshot dropped, same-role items merged.
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[0].role, Role::User);
        assert_eq!(r.messages[0].parts.len(), 2);
        assert_eq!(r.messages[1].role, Role::Assistant);
        assert_eq!(
            r.messages[1].parts,
            vec![
                Part::Text {
                    text: "Running ls.".into()
                },
                Part::ToolCall {
                    id: "call_abc".into(),
                    name: "shell".into(),
                    arguments: "{\"command\":[\"ls\"]}".into()
                },
            ]
        );
        assert_eq!(r.messages[2].role, Role::User);
        assert_eq!(
            r.messages[2].parts,
            vec![
                Part::ToolResult {
                    tool_call_id: "call_abc".into(),
                    content: "README.md\nsrc".into(),
                    is_error: false
                },
                Part::Text {
                    text: "Now read README.md".into()
                },
            ]
        );
    }

    #[test]
    fn string_input_metadata_session_and_images() {
        let p = parse(
            br#"{"model":"m","input":"hello","metadata":{"session_id":"s-1"},"prompt_cache_key":"pck","tool_choice":{"type":"function","name":"f"}}"#,
        )
        .unwrap();
        assert_eq!(p.session_hint.as_deref(), Some("s-1"));
        assert_eq!(p.req.messages, vec![Message::text(Role::User, "hello")]);
        assert_eq!(p.req.tool_choice, Some(ToolChoice::Tool("f".into())));
        assert_eq!(p.req.system, None);

        let p = parse(
            br#"{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"see"},{"type":"input_image","image_url":"https://x/y.png","detail":"auto"}]}]}"#,
        )
        .unwrap();
        assert_eq!(p.session_hint, None);
        assert_eq!(
            p.req.messages[0].parts[1],
            Part::Image {
                url: "https://x/y.png".into()
            }
        );
    }

    #[test]
    fn parse_errors_name_the_field() {
        assert!(bad("{\"model\":").starts_with("invalid JSON:"));
        let m = bad(r#"{"model":"m","input":"hi","previous_response_id":"resp_1"}"#);
        assert_eq!(
            m,
            "previous_response_id is not supported: send the full conversation in input (store=false)"
        );
        let m = bad(r#"{"model":"m","input":[]}"#);
        assert!(m.contains("input must contain at least one item"), "{m}");
        let m = bad(r#"{"model":"m"}"#);
        assert!(m.contains("input: field required"), "{m}");
        let m = bad(r#"{"model":"m","input":42}"#);
        assert!(m.contains("input: invalid type: integer `42`"), "{m}");
        let m = bad(r#"{"model":"m","input":[{"role":"robot","content":"x"}]}"#);
        assert!(
            m.contains("input[0].role: unknown variant \"robot\""),
            "{m}"
        );
        let m =
            bad(r#"{"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]}"#);
        assert!(m.contains("input[0].call_id: field required"), "{m}");
        let m = bad(r#"{"model":"m","input":"hi","max_output_tokens":"many"}"#);
        assert!(
            m.contains("max_output_tokens: invalid type: string \"many\", expected an integer"),
            "{m}"
        );
        let m = bad(r#"{"model":"m","input":"hi","reasoning":{"effort":3}}"#);
        assert!(m.contains("reasoning.effort: invalid type"), "{m}");
        let m = bad(r#"{"model":"m","input":"hi","tools":[{"type":"function"}]}"#);
        assert!(m.contains("tools[0].name: field required"), "{m}");
        let m =
            bad(r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_video"}]}]}"#);
        assert!(
            m.contains("input[0].content[0].type: unknown variant \"input_video\""),
            "{m}"
        );
        let m = bad(r#"{"model":"m","input":"hi","temperature":2.5}"#);
        assert!(m.contains("temperature must be between 0 and 2"), "{m}");
        let m = bad(r#"{"model":"m","input":[{"role":"developer","content":"only rules"}]}"#);
        assert!(m.contains("at least one user or assistant message"), "{m}");
    }

    fn sample_response(stop: StopReason) -> ChatResponse {
        ChatResponse {
            id: "up-1".into(),
            provider: "anthropic".into(),
            model: "claude-sonnet-4-5".into(),
            content: vec![
                Part::Reasoning {
                    text: "Plan.".into(),
                    signature: Some("sig".into()),
                },
                Part::Text {
                    text: "Reading it.".into(),
                },
                Part::ToolCall {
                    id: "toolu_1".into(),
                    name: "shell".into(),
                    arguments: "{\"command\":[\"cat\"]}".into(),
                },
            ],
            stop_reason: stop,
            usage: Usage {
                input: 50,
                output: 30,
                reasoning: 10,
                cache_read: 100,
                cache_write: 0,
            },
            failed_attempts: vec![FailedAttempt {
                provider: "openai".into(),
                model: "gpt-5".into(),
                error: "timeout".into(),
                status: None,
                duration_ms: 30_000,
            }],
        }
    }

    #[test]
    fn renders_a_response() {
        let v = render(&sample_response(StopReason::ToolUse));
        assert_eq!(v["id"], "resp_up-1");
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["incomplete_details"], Value::Null);
        assert_eq!(v["model"], "claude-sonnet-4-5");
        let out = v["output"].as_array().unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0]["type"], "reasoning");
        assert_eq!(
            out[0]["summary"][0],
            json!({"type": "summary_text", "text": "Plan."})
        );
        assert_eq!(out[1]["type"], "message");
        assert!(out[1]["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(out[1]["status"], "completed");
        assert_eq!(out[1]["role"], "assistant");
        assert_eq!(
            out[1]["content"][0],
            json!({"type": "output_text", "text": "Reading it.", "annotations": []})
        );
        assert_eq!(out[2]["type"], "function_call");
        assert!(out[2]["id"].as_str().unwrap().starts_with("fc_"));
        assert_eq!(out[2]["call_id"], "toolu_1");
        assert_eq!(out[2]["name"], "shell");
        assert_eq!(out[2]["arguments"], "{\"command\":[\"cat\"]}");
        assert_eq!(out[2]["status"], "completed");
        assert_eq!(v["usage"]["input_tokens"], 150);
        assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 100);
        assert_eq!(v["usage"]["output_tokens"], 30);
        assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 10);
        assert_eq!(v["usage"]["total_tokens"], 180);
        assert_eq!(v["parallel_tool_calls"], true);
        assert_eq!(v["tool_choice"], "auto");
        assert_eq!(v["tools"], json!([]));
        assert_eq!(v["retort"]["provider"], "anthropic");
        assert_eq!(v["retort"]["model"], "claude-sonnet-4-5");
        assert_eq!(v["retort"]["failed_attempts"][0]["model"], "gpt-5");

        let v = render(&sample_response(StopReason::MaxTokens));
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    }

    fn ev(e: &SseEvent) -> (&'static str, Value) {
        let name = e.event.unwrap();
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["type"], name);
        (name, v)
    }

    #[test]
    fn encodes_a_stream() {
        let p = parse(br#"{"model":"codex-alias","input":"hi","stream":true}"#).unwrap();
        let mut enc = StreamEncoder::new(&p);
        let events = vec![
            StreamEvent::Start {
                id: "up".into(),
                provider: "anthropic".into(),
                model: "claude-sonnet-4-5".into(),
            },
            StreamEvent::ReasoningDelta {
                text: "Think".into(),
            },
            StreamEvent::TextDelta { text: "Hel".into() },
            StreamEvent::TextDelta { text: "lo".into() },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_1".into(),
                name: "shell".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"command\":".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "[\"ls\"]}".into(),
            },
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                usage: Usage {
                    input: 10,
                    output: 5,
                    reasoning: 1,
                    cache_read: 4,
                    cache_write: 0,
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
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (_, v)) in out.iter().enumerate() {
            assert_eq!(v["sequence_number"], i as u64);
        }
        assert_eq!(out[0].1["response"]["status"], "in_progress");
        assert_eq!(out[0].1["response"]["output"], json!([]));
        assert_eq!(out[0].1["response"]["model"], "claude-sonnet-4-5");
        let resp_id = out[0].1["response"]["id"].as_str().unwrap().to_string();
        assert!(resp_id.starts_with("resp_"));
        assert_eq!(out[2].1["output_index"], 0);
        assert_eq!(out[2].1["item"]["type"], "reasoning");
        assert_eq!(out[4].1["delta"], "Think");
        assert_eq!(out[7].1["item"]["summary"][0]["text"], "Think");
        // The message item.
        assert_eq!(out[8].1["output_index"], 1);
        assert_eq!(out[8].1["item"]["type"], "message");
        assert_eq!(out[8].1["item"]["status"], "in_progress");
        assert_eq!(out[8].1["item"]["content"], json!([]));
        let msg_id = out[8].1["item"]["id"].clone();
        assert_eq!(out[9].1["part"]["type"], "output_text");
        assert_eq!(out[10].1["item_id"], msg_id);
        assert_eq!(out[10].1["output_index"], 1);
        assert_eq!(out[10].1["content_index"], 0);
        assert_eq!(out[10].1["delta"], "Hel");
        assert_eq!(out[11].1["delta"], "lo");
        assert_eq!(out[12].1["text"], "Hello");
        assert_eq!(out[13].1["part"]["text"], "Hello");
        assert_eq!(out[14].1["item"]["status"], "completed");
        assert_eq!(out[14].1["item"]["content"][0]["text"], "Hello");
        // The function call item.
        assert_eq!(out[15].1["output_index"], 2);
        assert_eq!(out[15].1["item"]["type"], "function_call");
        assert_eq!(out[15].1["item"]["call_id"], "call_1");
        assert_eq!(out[15].1["item"]["name"], "shell");
        assert_eq!(out[15].1["item"]["arguments"], "");
        let fc_id = out[15].1["item"]["id"].clone();
        assert_eq!(out[16].1["item_id"], fc_id);
        assert_eq!(out[16].1["delta"], "{\"command\":");
        assert_eq!(out[18].1["arguments"], "{\"command\":[\"ls\"]}");
        assert_eq!(out[19].1["item"]["arguments"], "{\"command\":[\"ls\"]}");
        assert_eq!(out[19].1["item"]["status"], "completed");
        // The completed response.
        let r = &out[20].1["response"];
        assert_eq!(r["id"], resp_id.as_str());
        assert_eq!(r["status"], "completed");
        assert_eq!(r["model"], "claude-sonnet-4-5");
        assert_eq!(r["output"].as_array().unwrap().len(), 3);
        assert_eq!(r["output"][1]["content"][0]["text"], "Hello");
        assert_eq!(r["output"][2]["arguments"], "{\"command\":[\"ls\"]}");
        assert_eq!(r["usage"]["input_tokens"], 14);
        assert_eq!(r["usage"]["total_tokens"], 19);
        assert_eq!(r["retort"]["provider"], "anthropic");
        assert_eq!(r["retort"]["model"], "claude-sonnet-4-5");
        assert!(
            enc.event(&StreamEvent::TextDelta {
                text: "late".into()
            })
            .is_empty()
        );
    }

    #[test]
    fn stream_ends_incomplete_on_max_tokens() {
        let p = parse(br#"{"model":"m","input":"hi"}"#).unwrap();
        let mut enc = StreamEncoder::new(&p);
        let mut out = enc.event(&StreamEvent::Start {
            id: "x".into(),
            provider: "p".into(),
            model: "up".into(),
        });
        out.extend(enc.event(&StreamEvent::TextDelta { text: "par".into() }));
        out.extend(enc.event(&StreamEvent::Finish {
            stop_reason: StopReason::MaxTokens,
            usage: Usage::default(),
            failed_attempts: vec![],
        }));
        let (name, v) = ev(out.last().unwrap());
        assert_eq!(name, "response.incomplete");
        assert_eq!(v["response"]["status"], "incomplete");
        assert_eq!(
            v["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(v["response"]["output"][0]["content"][0]["text"], "par");
    }

    #[test]
    fn error_event_shape() {
        let p = parse(br#"{"model":"m","input":"hi"}"#).unwrap();
        let mut enc = StreamEncoder::new(&p);
        let mut out = enc.event(&StreamEvent::Start {
            id: "x".into(),
            provider: "p".into(),
            model: "up".into(),
        });
        out.extend(enc.error(&ApiError::RateLimited {
            message: "slow down".into(),
            retry_after: None,
        }));
        assert_eq!(out.len(), 4);
        let (name, v) = ev(&out[2]);
        assert_eq!(name, "error");
        assert_eq!(v["sequence_number"], 2);
        assert_eq!(v["code"], "rate_limit_exceeded");
        assert_eq!(v["message"], "slow down");
        assert_eq!(v["param"], Value::Null);
        let (name, v) = ev(&out[3]);
        assert_eq!(name, "response.failed");
        assert_eq!(v["sequence_number"], 3);
        assert_eq!(v["response"]["status"], "failed");
        assert_eq!(
            v["response"]["error"],
            json!({"code": "rate_limit_exceeded", "message": "slow down"})
        );
        assert!(
            enc.event(&StreamEvent::TextDelta { text: "x".into() })
                .is_empty()
        );
    }
}
