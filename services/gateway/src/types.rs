//! The gateway's internal request/response model. Every ingress parses into these types and every
//! provider adapter speaks them, so any ingress can reach any provider.
use serde::{Deserialize, Serialize};

pub use retort_hooks::{Harness, Identity, Usage};

/// Metadata that travels with every request into metering and breakers.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub identity: Identity,
    pub session_id: Option<String>,
    pub harness: Harness,
    /// Headers to forward to Anthropic-shaped upstreams (`anthropic-version`, `anthropic-beta`).
    pub anthropic_version: Option<String>,
    pub anthropic_beta: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A system instruction inside the conversation (after it began): Anthropic's mid-conversation
    /// `{"role":"system"}` message, an OpenAI `system`/`developer` message after the first turn.
    /// Instructions before the first turn are [`ChatRequest::system`].
    System,
    User,
    Assistant,
}

/// One piece of a message. Tool results travel in user messages (Anthropic's model); the OpenAI
/// adapters split them into `role: tool` messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
    },
    /// An image, as a data URL or http(s) URL.
    Image {
        url: String,
    },
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        tool_call_id: String,
        content: String,
        is_error: bool,
    },
    /// Model reasoning carried between turns (Anthropic `thinking`); dropped for providers that
    /// cannot take it back.
    Reasoning {
        text: String,
        signature: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            parts: vec![Part::Text { text: text.into() }],
        }
    }
    /// The concatenated text parts of the message.
    pub fn joined_text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the parameters.
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Tool(String),
}

/// A completion request in provider-neutral form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model or alias the caller asked for.
    pub model: String,
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    /// Reasoning budget / effort, passed through where the provider supports it.
    pub reasoning_effort: Option<String>,
    /// An explicit thinking budget in tokens (Anthropic `thinking.budget_tokens`).
    pub thinking_budget: Option<u32>,
    /// Structured output: plain text (absent), any JSON object, or JSON matching a schema.
    pub response_format: Option<ResponseFormat>,
    /// `false` forbids more than one tool call per turn (OpenAI `parallel_tool_calls`, Anthropic
    /// `tool_choice.disable_parallel_tool_use`).
    pub parallel_tool_calls: Option<bool>,
    pub seed: Option<i64>,
    pub stream: bool,
    /// Fields of the caller's body that only an upstream of the caller's own API can honour (named as
    /// the caller wrote them, e.g. `context_management`, `top_k`): another API's target refuses the
    /// request naming them rather than dropping them silently.
    pub same_shape_only: Vec<String>,
    /// The caller's own body, forwarded as it is (model and streaming flags rewritten) to an upstream
    /// that speaks the same API.
    #[serde(skip)]
    pub raw: Option<std::sync::Arc<Passthrough>>,
}

/// Structured output, in provider-neutral form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Any JSON object (OpenAI `json_object`).
    JsonObject,
    /// JSON matching `schema` (OpenAI `json_schema`, Anthropic `output_config.format`).
    JsonSchema {
        name: String,
        schema: serde_json::Value,
        strict: Option<bool>,
    },
}

/// The API a caller's body is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    AnthropicMessages,
    OpenAiChat,
}

/// A caller's request body kept for a same-API upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Passthrough {
    pub shape: Shape,
    pub body: serde_json::Map<String, serde_json::Value>,
}

impl Passthrough {
    /// The body for one attempt: `model` replaced, `stream` set as the attempt needs (and, for a
    /// streamed OpenAI attempt, `stream_options.include_usage`, which metering needs).
    pub fn attempt_body(
        &self,
        model: &str,
        stream: bool,
    ) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::{Value, json};
        let mut body = self.body.clone();
        body.insert("model".into(), Value::from(model));
        if stream {
            body.insert("stream".into(), Value::Bool(true));
            if self.shape == Shape::OpenAiChat {
                let opts = body.entry("stream_options").or_insert_with(|| json!({}));
                if !opts.is_object() {
                    *opts = json!({});
                }
                if let Some(o) = opts.as_object_mut() {
                    o.insert("include_usage".into(), Value::Bool(true));
                }
            }
        } else if body.get("stream") == Some(&Value::Bool(true)) {
            body.remove("stream");
        }
        body
    }

    /// The body with `partial` (the answer a target streamed before it broke off) appended as an
    /// assistant prefill to continue from.
    pub fn with_prefill(&self, partial: &str) -> Passthrough {
        use serde_json::{Value, json};
        let mut out = self.clone();
        if partial.is_empty() {
            return out;
        }
        let Some(Value::Array(messages)) = out.body.get_mut("messages") else {
            return out;
        };
        let last_is_assistant = messages
            .last()
            .and_then(|m| m.get("role"))
            .and_then(Value::as_str)
            == Some("assistant");
        match messages.last_mut() {
            Some(last) if last_is_assistant => match self.shape {
                Shape::AnthropicMessages => {
                    let mut blocks = match last.get("content") {
                        Some(Value::String(s)) if !s.is_empty() => {
                            vec![json!({"type": "text", "text": s})]
                        }
                        Some(Value::Array(b)) => b.clone(),
                        _ => Vec::new(),
                    };
                    blocks.push(json!({"type": "text", "text": partial}));
                    last["content"] = Value::Array(blocks);
                }
                Shape::OpenAiChat => {
                    let before = match last.get("content") {
                        Some(Value::String(s)) => s.clone(),
                        _ => String::new(),
                    };
                    last["content"] = Value::from(before + partial);
                }
            },
            _ => messages.push(json!({"role": "assistant", "content": partial})),
        }
        out
    }
}

impl ChatRequest {
    /// The caller's body when the target speaks the same API.
    pub fn passthrough(&self, shape: Shape) -> Option<&Passthrough> {
        self.raw.as_deref().filter(|p| p.shape == shape)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    #[default]
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    ContentFilter,
}

/// A failed attempt that preceded (or replaced) the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    pub provider: String,
    pub model: String,
    pub error: String,
    pub status: Option<u16>,
    pub duration_ms: u64,
    /// Output tokens this attempt streamed to the caller before it broke off (0: it contributed
    /// nothing). Such an attempt is one of the answer's contributors, and is metered for them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A whole answer from a provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    /// Provider (configured name) and upstream model that actually served the answer.
    pub provider: String,
    pub model: String,
    /// Text, reasoning and tool-call parts of the answer, in order.
    pub content: Vec<Part>,
    pub stop_reason: StopReason,
    pub usage: Usage,
    pub failed_attempts: Vec<FailedAttempt>,
}

impl ChatResponse {
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// One event of a streamed answer, in provider-neutral form. A well-formed stream is
/// `Start`, any number of deltas, then exactly one `Finish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    Start {
        id: String,
        provider: String,
        model: String,
    },
    TextDelta {
        text: String,
    },
    ReasoningDelta {
        text: String,
    },
    /// The signature that closes a thinking block (Anthropic `signature_delta`): a client hands it
    /// back with the thinking on its next turn, so Anthropic callers get it; others ignore it.
    ReasoningSignature {
        signature: String,
    },
    /// First fragment of tool call `index` (id and name known), arguments may follow.
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    ToolCallDelta {
        index: u32,
        arguments: String,
    },
    /// Usage may arrive before the finish on some providers; adapters fold it into `Finish`.
    Finish {
        stop_reason: StopReason,
        usage: Usage,
        failed_attempts: Vec<FailedAttempt>,
    },
}
