//! OpenAI Chat Completions (`POST {base_url}/chat/completions`), and every server that speaks it:
//! vLLM, Ollama, llama.cpp, the simulator.
//!
//! Layout: wire types, conversions between wire and internal types, the adapter. The SSE parser
//! (generic over the byte stream so it can be tested in memory) is the `stream` submodule; the
//! error-body helpers shared with the Anthropic adapter are in `provider::common`.
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    EventStream, Provider, ProviderError, classify_status,
    client::{Endpoint, HttpClient, UpstreamBody, body_stream, read_body},
    common::{MAX_ERROR_MESSAGE, MAX_RESPONSE_BODY, Text, truncate_chars},
};
use crate::{
    config::ProviderConfig,
    types::{
        ChatRequest, ChatResponse, Message, Part, RequestMeta, ResponseFormat, Role, Shape,
        StopReason, ToolChoice, Usage,
    },
};

mod chunk;
mod stream;
use stream::parse_stream;

// ---------------------------------------------------------------------------------------------
// Wire types: request.

#[derive(Debug, Serialize)]
struct OaRequest<'a> {
    model: &'a str,
    messages: Vec<OaMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OaTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OaToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OaStreamOptions>,
}

#[derive(Debug, Serialize)]
struct OaStreamOptions {
    include_usage: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum OaMessage<'a> {
    System {
        content: std::borrow::Cow<'a, str>,
    },
    User {
        content: OaUserContent<'a>,
    },
    Assistant {
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<OaToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum OaUserContent<'a> {
    Text(String),
    Parts(Vec<OaContentPart<'a>>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OaContentPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: OaImageUrl<'a> },
}

#[derive(Debug, Serialize)]
struct OaImageUrl<'a> {
    url: &'a str,
}

#[derive(Debug, Serialize)]
struct OaToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OaFunctionCall<'a>,
}

#[derive(Debug, Serialize)]
struct OaFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct OaTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OaFunctionDef<'a>,
}

#[derive(Debug, Serialize)]
struct OaFunctionDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum OaToolChoice<'a> {
    Mode(&'static str),
    Function {
        #[serde(rename = "type")]
        kind: &'static str,
        function: OaNamedFunction<'a>,
    },
}

#[derive(Debug, Serialize)]
struct OaNamedFunction<'a> {
    name: &'a str,
}

// ---------------------------------------------------------------------------------------------
// Wire types: response and stream chunks.

// Strings are `Text`: borrowed from the body unless they hold escapes.

#[derive(Debug, Deserialize)]
struct OaResponse<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    model: Option<Text<'a>>,
    #[serde(borrow)]
    choices: Option<Vec<OaChoice<'a>>>,
    usage: Option<OaUsage>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OaChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow)]
    message: OaResponseMessage<'a>,
    #[serde(borrow)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct OaResponseMessage<'a> {
    #[serde(borrow)]
    content: Option<OaContent<'a>>,
    #[serde(borrow)]
    reasoning_content: Option<Text<'a>>,
    #[serde(borrow)]
    reasoning: Option<Text<'a>>,
    #[serde(borrow)]
    refusal: Option<Text<'a>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<OaResponseToolCall<'a>>>,
}

/// A response message's `content`, as its text: a string, or (some servers) an array of
/// `{"type":"text","text"}` parts, joined. Anything else carries no text.
#[derive(Debug, Default)]
struct OaContent<'a>(Text<'a>);

/// One element of an array `content`.
#[derive(Deserialize)]
struct OaContentPartIn<'a> {
    #[serde(borrow)]
    text: Option<Text<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for OaContent<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        use std::borrow::Cow;
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = OaContent<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(OaContent(Text(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OaContent(Text(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(OaContent(Text(Cow::Owned(v))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut text: Option<Cow<'a, str>> = None;
                while let Some(part) = seq.next_element::<OaContentPartIn<'a>>()? {
                    if let Some(t) = part.text {
                        match &mut text {
                            None => text = Some(t.0),
                            Some(acc) => acc.to_mut().push_str(t.as_str()),
                        }
                    }
                }
                Ok(OaContent(Text(text.unwrap_or_default())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(OaContent::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(OaContent::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(OaContent::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(OaContent::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(OaContent::default())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(OaContent::default())
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
struct OaResponseToolCall<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    function: OaResponseFunction<'a>,
}

#[derive(Debug, Deserialize)]
struct OaResponseFunction<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    arguments: Option<Text<'a>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
struct OaUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<OaPromptDetails>,
    completion_tokens_details: Option<OaCompletionDetails>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
struct OaPromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
struct OaCompletionDetails {
    reasoning_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
struct OaChunk<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    model: Option<Text<'a>>,
    #[serde(borrow)]
    choices: Option<Vec<OaChunkChoice<'a>>>,
    usage: Option<OaUsage>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
struct OaChunkChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow)]
    delta: Option<OaDelta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
struct OaDelta<'a> {
    #[serde(borrow)]
    content: Option<Text<'a>>,
    #[serde(borrow)]
    reasoning_content: Option<Text<'a>>,
    #[serde(borrow)]
    reasoning: Option<Text<'a>>,
    #[serde(borrow)]
    refusal: Option<Text<'a>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<OaToolCallDelta<'a>>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
struct OaToolCallDelta<'a> {
    index: Option<u32>,
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    function: Option<OaFunctionDelta<'a>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
struct OaFunctionDelta<'a> {
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    arguments: Option<Text<'a>>,
}

// ---------------------------------------------------------------------------------------------
// Conversions.

/// The wire request for `req` against upstream model `model`.
fn to_wire<'a>(req: &'a ChatRequest, model: &'a str, stream: bool) -> OaRequest<'a> {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        messages.push(OaMessage::System {
            content: std::borrow::Cow::Borrowed(system),
        });
    }
    for m in &req.messages {
        push_message(&mut messages, m);
    }
    let tools: Vec<OaTool<'a>> = req
        .tools
        .iter()
        .map(|t| OaTool {
            kind: "function",
            function: OaFunctionDef {
                name: &t.name,
                description: t.description.as_deref(),
                parameters: &t.parameters,
            },
        })
        .collect();
    // OpenAI rejects `tool_choice` without `tools`.
    let tool_choice = if tools.is_empty() {
        None
    } else {
        req.tool_choice.as_ref().map(|c| match c {
            ToolChoice::Auto => OaToolChoice::Mode("auto"),
            ToolChoice::None => OaToolChoice::Mode("none"),
            ToolChoice::Required => OaToolChoice::Mode("required"),
            ToolChoice::Tool(name) => OaToolChoice::Function {
                kind: "function",
                function: OaNamedFunction { name },
            },
        })
    };
    OaRequest {
        model,
        messages,
        tools,
        tool_choice,
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: &req.stop,
        reasoning_effort: req.reasoning_effort.as_deref(),
        response_format: req.response_format.as_ref().map(|f| match f {
            ResponseFormat::JsonObject => serde_json::json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => {
                let mut js = serde_json::json!({"name": name, "schema": schema});
                if let Some(strict) = strict {
                    js["strict"] = Value::Bool(*strict);
                }
                serde_json::json!({"type": "json_schema", "json_schema": js})
            }
        }),
        parallel_tool_calls: if req.tools.is_empty() {
            None
        } else {
            req.parallel_tool_calls
        },
        seed: req.seed,
        stream,
        stream_options: stream.then_some(OaStreamOptions {
            include_usage: true,
        }),
    }
}

/// Appends the wire messages of one internal message: tool results become `role: tool` messages.
fn push_message<'a>(out: &mut Vec<OaMessage<'a>>, m: &'a Message) {
    let tool_results = m.parts.iter().filter_map(|p| match p {
        Part::ToolResult {
            tool_call_id,
            content,
            ..
        } => Some(OaMessage::Tool {
            tool_call_id,
            content,
        }),
        _ => None,
    });
    match m.role {
        Role::System => {
            let text = m.joined_text();
            if !text.is_empty() {
                out.push(OaMessage::System {
                    content: std::borrow::Cow::Owned(text),
                });
            }
        }
        Role::User => {
            // Tool results answer the previous assistant turn, so they go first.
            out.extend(tool_results);
            let has_image = m.parts.iter().any(|p| matches!(p, Part::Image { .. }));
            let texts: Vec<&str> = m
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            if has_image {
                let parts = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text { text } => Some(OaContentPart::Text { text }),
                        Part::Image { url } => Some(OaContentPart::ImageUrl {
                            image_url: OaImageUrl { url },
                        }),
                        _ => None,
                    })
                    .collect();
                out.push(OaMessage::User {
                    content: OaUserContent::Parts(parts),
                });
            } else if !texts.is_empty() {
                out.push(OaMessage::User {
                    content: OaUserContent::Text(texts.join("\n")),
                });
            }
        }
        Role::Assistant => {
            let texts: Vec<&str> = m
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            let tool_calls: Vec<OaToolCall<'a>> = m
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::ToolCall {
                        id,
                        name,
                        arguments,
                    } => Some(OaToolCall {
                        id,
                        kind: "function",
                        function: OaFunctionCall {
                            name,
                            // Some servers parse the arguments for their chat template; "" is not JSON.
                            arguments: if arguments.trim().is_empty() {
                                "{}"
                            } else {
                                arguments
                            },
                        },
                    }),
                    _ => None,
                })
                .collect();
            let content = if texts.is_empty() {
                if tool_calls.is_empty() {
                    Some(String::new())
                } else {
                    None
                }
            } else {
                Some(texts.join("\n"))
            };
            out.push(OaMessage::Assistant {
                content,
                tool_calls,
            });
            // Tool results do not belong in an assistant message; keep them, after the call.
            out.extend(tool_results);
        }
    }
}

fn stop_reason(finish_reason: &str) -> StopReason {
    match finish_reason {
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

fn usage(u: &OaUsage) -> Usage {
    let cached = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0);
    Usage {
        input: u.prompt_tokens.unwrap_or(0).saturating_sub(cached),
        output: u.completion_tokens.unwrap_or(0),
        reasoning: u
            .completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0),
        cache_read: cached,
        cache_write: 0,
    }
}

fn generated_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Parses a whole (non-streamed) 2xx response body.
fn parse_response(
    body: &[u8],
    provider: &str,
    requested_model: &str,
) -> Result<ChatResponse, ProviderError> {
    let resp: OaResponse = crate::ingress::wire::json_from_bytes(body)
        .map_err(|e| ProviderError::Malformed(format!("chat completion: {e}")))?;
    let choices = resp.choices.unwrap_or_default();
    let Some(choice) = choices.iter().find(|c| c.index == 0).or(choices.first()) else {
        if let Some(err) = &resp.error {
            return Err(error_object_status(err, &String::from_utf8_lossy(body)));
        }
        return Err(ProviderError::Malformed(
            "chat completion without choices".into(),
        ));
    };
    let msg = &choice.message;
    let owned = |t: &Text<'_>| t.as_str().to_owned();
    let non_empty = |t: &Option<Text<'_>>| t.as_ref().filter(|t| !t.0.is_empty()).map(owned);
    let mut content = Vec::new();
    if let Some(text) = non_empty(&msg.reasoning_content).or_else(|| non_empty(&msg.reasoning)) {
        content.push(Part::Reasoning {
            text,
            signature: None,
        });
    }
    if let Some(text) = msg
        .content
        .as_ref()
        .map(|c| &c.0)
        .filter(|t| !t.0.is_empty())
        .map(owned)
    {
        content.push(Part::Text { text });
    } else if let Some(text) = non_empty(&msg.refusal) {
        content.push(Part::Text { text });
    }
    for tc in msg.tool_calls.iter().flatten() {
        content.push(Part::ToolCall {
            id: non_empty(&tc.id).unwrap_or_else(|| generated_id("call_")),
            name: owned(&tc.function.name),
            arguments: tc
                .function
                .arguments
                .as_ref()
                .map(owned)
                .unwrap_or_default(),
        });
    }
    Ok(ChatResponse {
        id: non_empty(&resp.id).unwrap_or_else(|| generated_id("chatcmpl-")),
        provider: provider.to_owned(),
        model: non_empty(&resp.model).unwrap_or_else(|| requested_model.to_owned()),
        content,
        stop_reason: choice
            .finish_reason
            .as_ref()
            .map(|f| stop_reason(f.as_str()))
            .unwrap_or_default(),
        usage: resp.usage.as_ref().map(usage).unwrap_or_default(),
        failed_attempts: Vec::new(),
    })
}

/// The error for an `error` object inside a 2xx body or a stream chunk. `body` is the whole text it
/// came in, for classification. The status comes from a numeric `code`, else 500.
fn error_object_status(err: &Value, body: &str) -> ProviderError {
    let code = err.get("code").and_then(|c| match c {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.parse::<u16>().ok(),
        _ => None,
    });
    let status = code.filter(|c| (400..=599).contains(c)).unwrap_or(500);
    let message = match err {
        Value::String(s) => s.clone(),
        _ => err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("upstream error")
            .to_owned(),
    };
    ProviderError::Status {
        status,
        kind: classify_status(status, body),
        message: truncate_chars(&message, MAX_ERROR_MESSAGE),
        retry_after: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Adapter.

pub struct OpenAi {
    cfg: ProviderConfig,
    client: HttpClient,
    /// The endpoint, parsed once.
    endpoint: Endpoint,
}

impl OpenAi {
    pub fn new(cfg: ProviderConfig, client: HttpClient) -> Self {
        let endpoint = Endpoint::new(format!("{}/chat/completions", cfg.base_url));
        OpenAi {
            cfg,
            client,
            endpoint,
        }
    }

    /// The request body for one attempt: the caller's own body when it is a Chat Completions one
    /// (only the model and streaming flags rewritten), else the translation — refused, naming the
    /// fields, when the caller's API has fields this one cannot honour.
    fn encode(req: &ChatRequest, model: &str, stream: bool) -> Result<Vec<u8>, ProviderError> {
        // Sized up front: growing from empty reallocated and copied the body several times.
        let mut json = Vec::with_capacity(512);
        let written = if let Some(p) = req.passthrough(Shape::OpenAiChat) {
            serde_json::to_writer(&mut json, &p.attempt_body(model, stream))
        } else {
            super::check_translatable(req, "OpenAI Chat Completions")?;
            serde_json::to_writer(&mut json, &to_wire(req, model, stream))
        };
        written.map_err(|e| ProviderError::Malformed(format!("cannot encode the request: {e}")))?;
        Ok(json)
    }

    /// Sends one request; a non-2xx answer becomes `ProviderError::Status`.
    async fn send(
        &self,
        json: Vec<u8>,
        stream: bool,
    ) -> Result<http::Response<UpstreamBody>, ProviderError> {
        let mut headers = http::HeaderMap::new();
        if !self.cfg.api_key.is_empty() {
            let mut auth =
                http::HeaderValue::from_str(&format!("Bearer {}", self.cfg.api_key.expose()))
                    .map_err(|_| {
                        ProviderError::Connect("the API key is not a valid header value".into())
                    })?;
            auth.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, auth);
        }
        self.client
            .post_json(&self.endpoint, json, stream, headers, &self.cfg.headers)
            .await
    }
}

#[async_trait::async_trait]
impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn complete(
        &self,
        req: &ChatRequest,
        model: &str,
        _meta: &RequestMeta,
    ) -> Result<ChatResponse, ProviderError> {
        let resp = self.send(Self::encode(req, model, false)?, false).await?;
        let body = read_body(resp, MAX_RESPONSE_BODY).await?;
        parse_response(&body, &self.cfg.name, model)
    }

    async fn stream(
        &self,
        req: &ChatRequest,
        model: &str,
        _meta: &RequestMeta,
    ) -> Result<EventStream, ProviderError> {
        let resp = self.send(Self::encode(req, model, true)?, true).await?;
        Ok(parse_stream(
            body_stream(resp),
            self.cfg.name.clone(),
            model.to_owned(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
#[path = "openai_tests.rs"]
mod tests;
