//! The Messages SSE parser: turns a response body (any byte stream, so it can be tested in memory)
//! into [`StreamEvent`]s, and decides when the stream is over. The driving loop is
//! [`drive_sse`](crate::provider::common::drive_sse); this file holds the Messages-specific part.
use std::collections::HashMap;

use futures::Stream;

use super::{
    AnDelta, AnEvent, AnStartBlock, error_status, generated_id, merge_usage, reasoning_tokens,
    stop_reason,
};
pub(super) use crate::provider::common::Item;
use crate::{
    provider::{
        EventStream,
        common::{EventParser, StreamStart, drive_sse},
    },
    types::{StopReason, StreamEvent, Usage},
};

/// Folds the events of one Messages stream into [`StreamEvent`]s.
struct MessagesParser {
    head: StreamStart,
    stop_reason: Option<StopReason>,
    usage: Usage,
    /// Bytes of thinking text seen, for the reasoning share of the output (see `reasoning_tokens`).
    thinking_bytes: usize,
    /// Content block index → tool-call ordinal (counting only `tool_use` blocks).
    tool_calls: HashMap<u32, u32>,
}

impl MessagesParser {
    fn new(provider: String, requested_model: String) -> Self {
        MessagesParser {
            head: StreamStart::new(provider, requested_model),
            stop_reason: None,
            usage: Usage::default(),
            thinking_bytes: 0,
            tool_calls: HashMap::new(),
        }
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<Item>) {
        self.head.start(id, model, generated_id, out);
    }
}

impl EventParser for MessagesParser {
    const REASON: &'static str = "stop reason";

    fn provider(&self) -> &str {
        &self.head.provider
    }

    fn finish(&mut self, out: &mut Vec<Item>) {
        self.start(None, None, out);
        let mut usage = self.usage;
        usage.reasoning = reasoning_tokens(self.thinking_bytes, usage.output);
        out.push(Ok(StreamEvent::Finish {
            stop_reason: self.stop_reason.unwrap_or_default(),
            usage,
            failed_attempts: Vec::new(),
        }));
    }

    fn finishable(&self) -> bool {
        self.stop_reason.is_some()
    }

    fn on_data(&mut self, data: &str, out: &mut Vec<Item>) -> bool {
        let data = data.trim();
        if data.is_empty() {
            return false;
        }
        let event: AnEvent = match serde_json::from_str(data) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(provider = %self.head.provider, error = %e, "skipping unparsable stream event");
                return false;
            }
        };
        match event {
            AnEvent::MessageStart { message } => {
                if let Some(u) = &message.usage {
                    merge_usage(&mut self.usage, u);
                }
                self.start(message.id.as_deref(), message.model.as_deref(), out);
            }
            AnEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                self.start(None, None, out);
                match content_block {
                    AnStartBlock::Text { text } if !text.is_empty() => {
                        out.push(Ok(StreamEvent::TextDelta { text }))
                    }
                    AnStartBlock::Thinking { thinking } if !thinking.is_empty() => {
                        self.thinking_bytes += thinking.len();
                        out.push(Ok(StreamEvent::ReasoningDelta { text: thinking }));
                    }
                    AnStartBlock::ToolUse { id, name, input } => {
                        let ordinal = self.tool_calls.len() as u32;
                        self.tool_calls.insert(index, ordinal);
                        out.push(Ok(StreamEvent::ToolCallStart {
                            index: ordinal,
                            id,
                            name,
                        }));
                        // Anthropic starts with `{}` and streams the input; a server that sends the
                        // whole input up front gets it passed on as the first fragment.
                        if input.as_object().is_some_and(|o| !o.is_empty()) {
                            out.push(Ok(StreamEvent::ToolCallDelta {
                                index: ordinal,
                                arguments: input.to_string(),
                            }));
                        }
                    }
                    _ => {}
                }
            }
            AnEvent::ContentBlockDelta { index, delta } => {
                self.start(None, None, out);
                match delta {
                    AnDelta::TextDelta { text } if !text.is_empty() => {
                        out.push(Ok(StreamEvent::TextDelta { text }))
                    }
                    AnDelta::ThinkingDelta { thinking } if !thinking.is_empty() => {
                        self.thinking_bytes += thinking.len();
                        out.push(Ok(StreamEvent::ReasoningDelta { text: thinking }));
                    }
                    AnDelta::SignatureDelta { signature } if !signature.is_empty() => {
                        out.push(Ok(StreamEvent::ReasoningSignature { signature }));
                    }
                    AnDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                        match self.tool_calls.get(&index) {
                            Some(&ordinal) => {
                                out.push(Ok(StreamEvent::ToolCallDelta {
                                    index: ordinal,
                                    arguments: partial_json,
                                }));
                            }
                            None => {
                                tracing::warn!(provider = %self.head.provider, index, "input_json_delta for a block that is no tool_use");
                            }
                        }
                    }
                    _ => {}
                }
            }
            AnEvent::MessageDelta { delta, usage } => {
                if let Some(u) = &usage {
                    merge_usage(&mut self.usage, u);
                }
                if let Some(sr) = delta.stop_reason.as_deref().filter(|s| !s.is_empty()) {
                    self.stop_reason = Some(stop_reason(sr));
                }
            }
            AnEvent::MessageStop => {
                self.finish(out);
                return true;
            }
            AnEvent::Error { error } => {
                out.push(Err(error_status(&error, data)));
                return true;
            }
            AnEvent::Other => {}
        }
        false
    }
}

/// Turns the body of a Messages SSE response into [`StreamEvent`]s: `message_stop` finalises; so do a
/// clean end of the body, or [`FINISH_GRACE`](crate::provider::common::FINISH_GRACE) of silence, after a `message_delta` with a stop reason.
/// An end before any stop reason is a `StreamCut`.
pub(crate) fn parse_stream<S, B, E>(
    body: S,
    provider: String,
    requested_model: String,
) -> EventStream
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    drive_sse(body, MessagesParser::new(provider, requested_model))
}
