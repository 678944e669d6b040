//! Stream encoding for the Responses API: folds [`StreamEvent`]s into output items and emits them as
//! named events (`response.created` ... `response.completed`), each with a `sequence_number`.
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{
    Parsed, ResponseObject, call_item, message_item, output_text_part, reasoning_item, status_for,
};
use crate::{
    error::ApiError,
    ingress::{SseEvent, wire},
    types::StreamEvent,
};

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
            StreamEvent::Start { .. } | StreamEvent::ReasoningSignature { .. } => {}
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
