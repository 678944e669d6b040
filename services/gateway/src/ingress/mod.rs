//! Ingress protocols: each file parses one wire format into [`crate::types::ChatRequest`] and renders
//! answers, streams and errors back in that same format. No routing or provider logic lives here.
pub mod anthropic;
pub mod openai_chat;
pub mod responses;
pub(crate) mod wire;

/// One server-sent event, ready to write: `event: NAME` (optional) and `data: JSON`.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: Option<&'static str>,
    pub data: String,
}

impl SseEvent {
    pub fn data(data: impl Into<String>) -> Self {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }
    pub fn named(event: &'static str, data: impl Into<String>) -> Self {
        SseEvent {
            event: Some(event),
            data: data.into(),
        }
    }
}

/// Rough token estimate used where no provider count is available (`count_tokens`, context checks):
/// about four bytes a token, which is what OpenAI and Anthropic document as the rule of thumb.
pub fn estimate_tokens(req: &crate::types::ChatRequest) -> u64 {
    use crate::types::Part;
    let mut bytes = req.system.as_ref().map_or(0, |s| s.len());
    for m in &req.messages {
        for p in &m.parts {
            bytes += match p {
                Part::Text { text } | Part::Reasoning { text, .. } => text.len(),
                Part::Image { .. } => 1_000 * 4,
                Part::ToolCall {
                    name, arguments, ..
                } => name.len() + arguments.len(),
                Part::ToolResult { content, .. } => content.len(),
            };
        }
        bytes += 4 * 4; // per-message framing
    }
    for t in &req.tools {
        bytes += t.name.len()
            + t.description.as_ref().map_or(0, |d| d.len())
            + t.parameters.to_string().len();
    }
    (bytes as u64).div_ceil(4).max(1)
}
