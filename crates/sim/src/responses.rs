//! OpenAI `POST /v1/responses`: request parsing, the `response` object and its event stream.

use std::sync::Arc;

use axum::{extract::State, http::HeaderMap, response::Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    answer::{Answer, Conversation, Finish, Output, Tail, Usage},
    faults::{Api, ApiError, admit, parse_body, reject},
    openai::Content,
    server::{Sim, new_id, unix_now},
    stream::{Part, Sse, json_response, sse_response, write_json},
};

#[derive(Debug, Deserialize)]
struct ResponsesRequest {
    model: String,
    input: Option<Input>,
    instructions: Option<String>,
    tools: Option<Vec<Tool>>,
    max_output_tokens: Option<u64>,
    stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<Item>),
}

/// One input item: a message (`type` absent or `message`), `function_call` or
/// `function_call_output`; other item types are ignored.
#[derive(Debug, Deserialize)]
struct Item {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    content: Option<Content>,
    arguments: Option<String>,
    output: Option<Content>,
}

#[derive(Debug, Deserialize)]
struct Tool {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
}

impl ResponsesRequest {
    fn conversation(&self) -> Result<Conversation, ApiError> {
        let mut c = Conversation::default();
        if let Some(i) = &self.instructions {
            c.count(i);
        }
        match &self.input {
            None => {
                return Err(ApiError::invalid_request(
                    "Missing required parameter: 'input'.",
                ));
            }
            Some(Input::Text(s)) => {
                c.count(s);
                c.last_user = s.clone();
            }
            Some(Input::Items(items)) => {
                let text = |i: &Item| {
                    i.content
                        .as_ref()
                        .map(|c| c.text().into_owned())
                        .unwrap_or_default()
                };
                let is_message = |i: &Item| matches!(i.kind.as_deref(), None | Some("message"));
                for i in items {
                    match i.kind.as_deref() {
                        None | Some("message") => {
                            c.count(&i.content.as_ref().map(|c| c.text()).unwrap_or_default())
                        }
                        Some("function_call") => c.count(i.arguments.as_deref().unwrap_or("")),
                        Some("function_call_output") => {
                            c.count(&i.output.as_ref().map(|c| c.text()).unwrap_or_default());
                        }
                        Some(_) => {}
                    }
                }
                if let Some(u) = items
                    .iter()
                    .rev()
                    .find(|i| is_message(i) && i.role.as_deref() == Some("user"))
                {
                    c.last_user = text(u);
                }
                if let Some(last) = items.last() {
                    c.tail = match last.kind.as_deref() {
                        Some("function_call_output") => Tail::ToolResult(
                            last.output
                                .as_ref()
                                .map(|c| c.text().into_owned())
                                .unwrap_or_default(),
                        ),
                        Some("function_call") => {
                            c.ends_with_assistant = true;
                            Tail::User
                        }
                        None | Some("message") if last.role.as_deref() == Some("assistant") => {
                            c.ends_with_assistant = true;
                            let t = text(last);
                            if t.is_empty() {
                                Tail::User
                            } else {
                                Tail::Prefill(t)
                            }
                        }
                        _ => Tail::User,
                    };
                }
            }
        }
        c.first_tool = self
            .tools
            .iter()
            .flatten()
            .filter(|t| matches!(t.kind.as_deref(), None | Some("function")))
            .find_map(|t| t.name.clone());
        c.max_tokens = self.max_output_tokens;
        Ok(c.finish())
    }
}

pub(crate) async fn responses(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authed = sim.authorized(&headers);
    let req: ResponsesRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return reject(Api::OpenAi, authed, e),
    };
    let conv = req.conversation();
    let (ticket, conv) = match admit(&sim, Api::OpenAi, &headers, &req.model, authed, conv).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let b = &ticket.model.behavior;
    let answer = ticket.model.answer(&conv, &ticket.state.script_cursor);
    let usage = Usage::new(b, &conv, &answer);
    let ids = Ids::new();
    if req.stream == Some(true) {
        sse_response(
            stream(&req, &ids, &answer, usage),
            ticket.fault,
            b.tokens_per_sec,
        )
    } else {
        let mut buf = Vec::with_capacity(1536);
        write_json(
            &mut buf,
            &response_object(&req, &ids, Some((&answer, usage))),
        );
        json_response(buf, ticket.fault)
    }
}

struct Ids {
    response: String,
    message: String,
    created_at: u64,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            response: new_id("resp_"),
            message: new_id("msg_"),
            created_at: unix_now(),
        }
    }
}

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": { "cached_tokens": u.cached },
        "output_tokens": u.output,
        "output_tokens_details": { "reasoning_tokens": u.reasoning },
        "total_tokens": u.input + u.output,
    })
}

fn item_status(answer: &Answer) -> &'static str {
    if answer.finish == Finish::Length {
        "incomplete"
    } else {
        "completed"
    }
}

fn text_part(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] })
}

/// The output item, complete (`done`) or as first announced.
fn output_item(ids: &Ids, answer: &Answer, done: bool) -> Value {
    match &answer.output {
        Output::Text(t) => json!({
            "type": "message",
            "id": ids.message,
            "status": if done { item_status(answer) } else { "in_progress" },
            "role": "assistant",
            "content": if done { json!([text_part(t.text())]) } else { json!([]) },
        }),
        Output::ToolCall(tc) => json!({
            "type": "function_call",
            "id": format!("fc_{}", tc.id_hash),
            "call_id": format!("call_{}", tc.id_hash),
            "name": tc.name,
            "arguments": if done { tc.arguments.text() } else { "" },
            "status": if done { "completed" } else { "in_progress" },
        }),
    }
}

/// The `response` object: in progress (no answer yet) or final.
fn response_object(req: &ResponsesRequest, ids: &Ids, done: Option<(&Answer, Usage)>) -> Value {
    let (status, incomplete, output, usage) = match done {
        None => ("in_progress", Value::Null, json!([]), Value::Null),
        Some((a, u)) if a.finish == Finish::Length => (
            "incomplete",
            json!({ "reason": "max_output_tokens" }),
            json!([output_item(ids, a, true)]),
            usage_json(u),
        ),
        Some((a, u)) => (
            "completed",
            Value::Null,
            json!([output_item(ids, a, true)]),
            usage_json(u),
        ),
    };
    json!({
        "id": ids.response,
        "object": "response",
        "created_at": ids.created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": null,
        "model": req.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": { "effort": null, "summary": null },
        "service_tier": "default",
        "store": false,
        "temperature": 1.0,
        "text": { "format": { "type": "text" } },
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": {},
    })
}

/// The Responses event stream under construction: every event carries its sequence number.
struct Events {
    sse: Sse,
    seq: u64,
}

impl Events {
    fn event(&mut self, part: Part, kind: &str, mut data: Value) {
        if let Value::Object(m) = &mut data {
            m.insert("type".into(), Value::from(kind));
            m.insert("sequence_number".into(), Value::from(self.seq));
        }
        self.seq += 1;
        self.sse.event(part, Some(kind), &data);
    }

    /// A delta event: `prefix` (up to `"delta":`), the token, then `extra` and the sequence number.
    fn delta(&mut self, prefix: &[u8], token: &str, extra: &[u8]) {
        let n = self.seq;
        self.seq += 1;
        self.sse.frame(Part::Token, |b| {
            b.extend_from_slice(prefix);
            write_json(b, token);
            b.extend_from_slice(extra);
            b.extend_from_slice(b",\"sequence_number\":");
            b.extend_from_slice(n.to_string().as_bytes());
            b.extend_from_slice(b"}\n\n");
        });
    }
}

fn stream(req: &ResponsesRequest, ids: &Ids, answer: &Answer, usage: Usage) -> Sse {
    let mut ev = Events {
        sse: Sse::new(b"event: response.output_text.delta\ndata: {\"this is not json\n\n"),
        seq: 0,
    };
    let in_progress = response_object(req, ids, None);
    ev.event(
        Part::Prelude,
        "response.created",
        json!({ "response": in_progress }),
    );
    ev.event(
        Part::Prelude,
        "response.in_progress",
        json!({ "response": in_progress }),
    );
    ev.event(
        Part::Prelude,
        "response.output_item.added",
        json!({ "output_index": 0, "item": output_item(ids, answer, false) }),
    );
    match &answer.output {
        Output::Text(tokens) => {
            let with = |extra: Value| {
                let mut v =
                    json!({ "item_id": ids.message, "output_index": 0, "content_index": 0 });
                if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
                    m.extend(e);
                }
                v
            };
            ev.event(
                Part::Prelude,
                "response.content_part.added",
                with(json!({ "part": text_part("") })),
            );
            let mut prefix =
                b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":".to_vec();
            write_json(&mut prefix, &ids.message);
            prefix.extend_from_slice(b",\"output_index\":0,\"content_index\":0,\"delta\":");
            for t in tokens.iter() {
                ev.delta(&prefix, t, b",\"logprobs\":[]");
            }
            let text = tokens.text();
            ev.event(
                Part::Tail,
                "response.output_text.done",
                with(json!({ "text": text, "logprobs": [] })),
            );
            ev.event(
                Part::Tail,
                "response.content_part.done",
                with(json!({ "part": text_part(text) })),
            );
        }
        Output::ToolCall(tc) => {
            let item_id = format!("fc_{}", tc.id_hash);
            let mut prefix = b"event: response.function_call_arguments.delta\ndata: \
                {\"type\":\"response.function_call_arguments.delta\",\"item_id\":"
                .to_vec();
            write_json(&mut prefix, &item_id);
            prefix.extend_from_slice(b",\"output_index\":0,\"delta\":");
            for t in tc.arguments.iter() {
                ev.delta(&prefix, t, b"");
            }
            ev.event(
                Part::Tail,
                "response.function_call_arguments.done",
                json!({ "item_id": item_id, "output_index": 0, "name": tc.name, "arguments": tc.arguments.text() }),
            );
        }
    }
    ev.event(
        Part::Tail,
        "response.output_item.done",
        json!({ "output_index": 0, "item": output_item(ids, answer, true) }),
    );
    let last = if answer.finish == Finish::Length {
        "response.incomplete"
    } else {
        "response.completed"
    };
    ev.event(
        Part::Terminal,
        last,
        json!({ "response": response_object(req, ids, Some((answer, usage))) }),
    );
    ev.sse
}
