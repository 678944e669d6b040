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
    pub stream: bool,
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
