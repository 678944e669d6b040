//! OpenAI Responses (`POST /v1/responses`, what Codex speaks): parses the request (stateless only:
//! the whole conversation in `input`) into a [`ChatRequest`], renders a [`ChatResponse`] as a
//! `response` object, and encodes a stream as the Responses API's named events (`response.created`
//! ... `response.completed`), each with a `sequence_number`.
//!
//! Request parsing and the `response` object live here; the stream encoder is in the `stream` submodule.
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::wire;
use crate::{
    error::ApiError,
    types::{
        ChatRequest, ChatResponse, Message, Part, ResponseFormat, Role, StopReason, Tool, Usage,
    },
};
use wire::Obj;

mod stream;
pub use stream::StreamEncoder;

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
    let response_format = match o.obj("text")? {
        None => None,
        Some(text) => match text.obj("format")? {
            None => None,
            Some(f) => match f.req_str("type")? {
                "text" => None,
                "json_object" => Some(ResponseFormat::JsonObject),
                // The Responses API flattens `json_schema`'s fields into `format`.
                "json_schema" => Some(ResponseFormat::JsonSchema {
                    name: f.str("name")?.unwrap_or("output").to_string(),
                    schema: f.schema("schema")?,
                    strict: f.bool("strict")?,
                }),
                other => {
                    return Err(wire::unknown_variant(
                        &f.path("type"),
                        other,
                        &["text", "json_object", "json_schema"],
                    ));
                }
            },
        },
    };

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
        thinking_budget: None,
        response_format,
        parallel_tool_calls: o.bool("parallel_tool_calls")?,
        seed: None,
        stream: o.bool("stream")?.unwrap_or(false),
        same_shape_only: Vec::new(),
        raw: None,
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
                    if text.is_empty() {
                    } else if messages.is_empty() {
                        system.push(text);
                    } else {
                        wire::push_message(messages, Role::System, vec![Part::Text { text }]);
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

#[cfg(test)]
#[path = "responses_tests.rs"]
mod tests;
