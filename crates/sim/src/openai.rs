//! OpenAI `POST /v1/chat/completions`: request parsing and the `chat.completion` /
//! `chat.completion.chunk` wire formats.

use std::{borrow::Cow, sync::Arc};

use axum::{extract::State, http::HeaderMap, response::Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    answer::{Answer, Conversation, Finish, Output, Tail, Usage},
    faults::{Api, ApiError, admit, parse_body, reject},
    server::{Sim, new_id, unix_now},
    stream::{Part, Sse, json_response, sse_response, write_json},
};

/// Message content: a string or an array of parts (text parts count; images and the like do not).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub(crate) struct ContentPart {
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    /// The text parts joined by newlines.
    pub(crate) fn text(&self) -> Cow<'_, str> {
        match self {
            Content::Text(s) => Cow::Borrowed(s),
            Content::Parts(parts) => {
                let mut texts = parts.iter().filter_map(|p| p.text.as_deref());
                match (texts.next(), texts.next()) {
                    (None, _) => Cow::Borrowed(""),
                    (Some(one), None) => Cow::Borrowed(one),
                    (Some(a), Some(b)) => {
                        let mut s = format!("{a}\n{b}");
                        for t in texts {
                            s.push('\n');
                            s.push_str(t);
                        }
                        Cow::Owned(s)
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    tools: Option<Vec<ChatTool>>,
    response_format: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
    tool_calls: Option<Vec<ToolCallIn>>,
}

#[derive(Debug, Deserialize)]
struct ToolCallIn {
    function: Option<FunctionIn>,
}

#[derive(Debug, Deserialize)]
struct FunctionIn {
    arguments: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatTool {
    function: Option<ToolFunction>,
}

#[derive(Debug, Deserialize)]
struct ToolFunction {
    name: String,
}

/// The roles Chat Completions accepts.
const ROLES: &[&str] = &[
    "system",
    "assistant",
    "user",
    "function",
    "tool",
    "developer",
];

impl ChatRequest {
    /// The JSON answer a `response_format` asks for, if any; an unknown format is refused as
    /// OpenAI refuses it.
    fn structured(&self) -> Result<Option<String>, ApiError> {
        let Some(f) = &self.response_format else {
            return Ok(None);
        };
        match f.get("type").and_then(serde_json::Value::as_str) {
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(json!({"answer": "lorem ipsum"}).to_string())),
            Some("json_schema") => match f.get("json_schema").and_then(|j| j.get("schema")) {
                Some(schema) => Ok(Some(
                    crate::answer::instance_of(schema, "lorem ipsum").to_string(),
                )),
                None => Err(ApiError::invalid_request(
                    "Missing required parameter: 'response_format.json_schema'.",
                )),
            },
            other => Err(ApiError::invalid_request(format!(
                "Invalid value: '{}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
                other.unwrap_or("null")
            ))),
        }
    }

    fn conversation(&self) -> Result<Conversation, ApiError> {
        for (i, m) in self.messages.iter().enumerate() {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(ApiError::invalid_request(format!(
                    "Invalid value: '{}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'. (messages[{i}].role)",
                    m.role
                )));
            }
        }
        let Some(last) = self.messages.last() else {
            return Err(ApiError::invalid_request("[] is too short - 'messages'"));
        };
        let mut c = Conversation::default();
        for m in &self.messages {
            if let Some(content) = &m.content {
                c.count(&content.text());
            }
            for tc in m.tool_calls.iter().flatten() {
                if let Some(args) = tc.function.as_ref().and_then(|f| f.arguments.as_deref()) {
                    c.count(args);
                }
            }
        }
        let text = |m: &ChatMessage| {
            m.content
                .as_ref()
                .map(|c| c.text().into_owned())
                .unwrap_or_default()
        };
        if let Some(u) = self.messages.iter().rev().find(|m| m.role == "user") {
            c.last_user = text(u);
        }
        c.tail = match last.role.as_str() {
            "tool" | "function" => Tail::ToolResult(text(last)),
            "assistant" => {
                c.ends_with_assistant = true;
                let t = text(last);
                if last.tool_calls.as_ref().is_none_or(Vec::is_empty) && !t.is_empty() {
                    Tail::Prefill(t)
                } else {
                    Tail::User
                }
            }
            _ => Tail::User,
        };
        c.first_tool = self
            .tools
            .iter()
            .flatten()
            .find_map(|t| t.function.as_ref().map(|f| f.name.clone()));
        c.max_tokens = self.max_completion_tokens.or(self.max_tokens);
        Ok(c.finish())
    }
}

pub(crate) fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
    }
}

/// `usage` of a chat completion (typed: serialised straight into the body on the hot path).
#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

fn usage_out(u: Usage) -> UsageOut {
    UsageOut {
        prompt_tokens: u.input,
        completion_tokens: u.output,
        total_tokens: u.input + u.output,
        prompt_tokens_details: PromptDetails {
            cached_tokens: u.cached,
            audio_tokens: 0,
        },
        completion_tokens_details: CompletionDetails {
            reasoning_tokens: u.reasoning,
            audio_tokens: 0,
            accepted_prediction_tokens: 0,
            rejected_prediction_tokens: 0,
        },
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: UsageOut,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    annotations: [(); 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

pub(crate) async fn chat_completions(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authed = sim.authorized(&headers);
    let req: ChatRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return reject(Api::OpenAi, authed, e),
    };
    sim.remember(&req.model, "/v1/chat/completions", &headers, &body);
    let structured = req.structured();
    let conv = structured
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|_| req.conversation());
    let (ticket, conv) = match admit(&sim, Api::OpenAi, &headers, &req.model, authed, conv).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let b = &ticket.model.behavior;
    let answer = match structured {
        Ok(Some(json)) => crate::answer::structured_answer(&json),
        _ => ticket.model.answer(&conv, &ticket.state.script_cursor),
    };
    let usage = Usage::new(b, &conv, &answer);
    let id = new_id("chatcmpl-");
    if req.stream == Some(true) {
        let include_usage = req.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true);
        let sse = stream(&id, &req.model, &answer, usage, include_usage);
        sse_response(sse, ticket.fault, b.tokens_per_sec)
    } else {
        let mut buf = Vec::with_capacity(1024);
        write_json(&mut buf, &completion(&id, &req.model, &answer, usage));
        json_response(buf, ticket.fault)
    }
}

fn completion<'a>(id: &'a str, model: &'a str, answer: &'a Answer, usage: Usage) -> Completion<'a> {
    let (content, tool_calls) = match &answer.output {
        Output::Text(t) => (Some(t.text()), None),
        Output::ToolCall(tc) => (
            None,
            Some([ToolCallOut {
                id: format!("call_{}", tc.id_hash),
                kind: "function",
                function: FunctionOut {
                    name: &tc.name,
                    arguments: tc.arguments.text(),
                },
            }]),
        ),
    };
    Completion {
        id,
        object: "chat.completion",
        created: unix_now(),
        model,
        choices: [CompletionChoice {
            index: 0,
            message: MessageOut {
                role: "assistant",
                content,
                refusal: None,
                annotations: [],
                tool_calls,
            },
            logprobs: None,
            finish_reason: finish_reason(answer.finish),
        }],
        usage: usage_out(usage),
        service_tier: "default",
        system_fingerprint: "fp_retort_sim",
    }
}

fn stream(id: &str, model: &str, answer: &Answer, usage: Usage, include_usage: bool) -> Sse {
    // Every chunk is PREFIX + choice + SUFFIX; only the choice varies.
    let mut prefix = b"data: {\"id\":".to_vec();
    write_json(&mut prefix, id);
    prefix.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
    prefix.extend_from_slice(unix_now().to_string().as_bytes());
    prefix.extend_from_slice(b",\"model\":");
    write_json(&mut prefix, model);
    prefix.extend_from_slice(
        b",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_retort_sim\",\"choices\":[",
    );
    let suffix: &[u8] = if include_usage {
        b"],\"usage\":null}\n\n"
    } else {
        b"]}\n\n"
    };
    let mut sse = Sse::new(b"data: {\"this is not json\n\n");
    let chunk = |sse: &mut Sse, part: Part, choice: &dyn Fn(&mut Vec<u8>)| {
        sse.frame(part, |b| {
            b.extend_from_slice(&prefix);
            choice(b);
            b.extend_from_slice(suffix);
        });
    };
    const OPEN: &[u8] = b"{\"index\":0,\"delta\":";
    const CLOSE: &[u8] = b",\"logprobs\":null,\"finish_reason\":null}";
    match &answer.output {
        Output::Text(tokens) => {
            chunk(&mut sse, Part::Prelude, &|b| {
                b.extend_from_slice(OPEN);
                b.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}");
                b.extend_from_slice(CLOSE);
            });
            for t in tokens.iter() {
                chunk(&mut sse, Part::Token, &|b| {
                    b.extend_from_slice(OPEN);
                    b.extend_from_slice(b"{\"content\":");
                    write_json(b, t);
                    b.push(b'}');
                    b.extend_from_slice(CLOSE);
                });
            }
        }
        Output::ToolCall(tc) => {
            chunk(&mut sse, Part::Prelude, &|b| {
                b.extend_from_slice(OPEN);
                b.extend_from_slice(b"{\"role\":\"assistant\",\"content\":null,\"refusal\":null}");
                b.extend_from_slice(CLOSE);
            });
            let start = json!({
                "tool_calls": [{
                    "index": 0,
                    "id": format!("call_{}", tc.id_hash),
                    "type": "function",
                    "function": { "name": tc.name, "arguments": "" },
                }]
            });
            chunk(&mut sse, Part::Prelude, &|b| {
                b.extend_from_slice(OPEN);
                write_json(b, &start);
                b.extend_from_slice(CLOSE);
            });
            for t in tc.arguments.iter() {
                chunk(&mut sse, Part::Token, &|b| {
                    b.extend_from_slice(OPEN);
                    b.extend_from_slice(
                        b"{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":",
                    );
                    write_json(b, t);
                    b.extend_from_slice(b"}}]}");
                    b.extend_from_slice(CLOSE);
                });
            }
        }
    }
    let finish = finish_reason(answer.finish);
    chunk(&mut sse, Part::Tail, &|b| {
        b.extend_from_slice(OPEN);
        b.extend_from_slice(b"{},\"logprobs\":null,\"finish_reason\":");
        write_json(b, finish);
        b.push(b'}');
    });
    if include_usage {
        let usage = usage_out(usage);
        sse.frame(Part::Tail, |b| {
            b.extend_from_slice(&prefix);
            b.extend_from_slice(b"],\"usage\":");
            write_json(b, &usage);
            b.extend_from_slice(b"}\n\n");
        });
    }
    sse.frame(Part::Terminal, |b| b.extend_from_slice(b"data: [DONE]\n\n"));
    sse
}
