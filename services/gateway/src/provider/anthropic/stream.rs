//! The Messages SSE parser: turns a response body (any byte stream, so it can be tested in memory)
//! into [`StreamEvent`]s, and decides when the stream is over.
use std::collections::HashMap;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};

use super::{AnDelta, AnEvent, AnStartBlock, error_status, generated_id, merge_usage, stop_reason};
use crate::{
    provider::{
        EventStream, ProviderError,
        common::{FINISH_GRACE, sse_error},
    },
    types::{StopReason, StreamEvent, Usage},
};

pub(super) type Item = Result<StreamEvent, ProviderError>;

/// Folds the events of one Messages stream into [`StreamEvent`]s.
struct EventParser {
    provider: String,
    requested_model: String,
    started: bool,
    stop_reason: Option<StopReason>,
    usage: Usage,
    /// Content block index → tool-call ordinal (counting only `tool_use` blocks).
    tool_calls: HashMap<u32, u32>,
}

impl EventParser {
    fn new(provider: String, requested_model: String) -> Self {
        EventParser {
            provider,
            requested_model,
            started: false,
            stop_reason: None,
            usage: Usage::default(),
            tool_calls: HashMap::new(),
        }
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<Item>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(Ok(StreamEvent::Start {
            id: id
                .filter(|s| !s.is_empty())
                .map_or_else(generated_id, str::to_owned),
            provider: self.provider.clone(),
            model: model
                .filter(|s| !s.is_empty())
                .unwrap_or(&self.requested_model)
                .to_owned(),
        }));
    }

    /// The closing event (preceded by `Start` if none was sent).
    fn finish(&mut self, out: &mut Vec<Item>) {
        self.start(None, None, out);
        out.push(Ok(StreamEvent::Finish {
            stop_reason: self.stop_reason.unwrap_or_default(),
            usage: self.usage,
            failed_attempts: Vec::new(),
        }));
    }

    /// Whether a stop reason was seen, so the stream may be finalised at its end.
    fn finishable(&self) -> bool {
        self.stop_reason.is_some()
    }

    /// Handles one event's data; returns true when the stream is over (after `Finish` or `Err`).
    fn on_data(&mut self, data: &str, out: &mut Vec<Item>) -> bool {
        let data = data.trim();
        if data.is_empty() {
            return false;
        }
        let event: AnEvent = match serde_json::from_str(data) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(provider = %self.provider, error = %e, "skipping unparsable stream event");
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
                        out.push(Ok(StreamEvent::ReasoningDelta { text: thinking }));
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
                                tracing::warn!(provider = %self.provider, index, "input_json_delta for a block that is no tool_use");
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
/// clean end of the body, or [`FINISH_GRACE`] of silence, after a `message_delta` with a stop reason.
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
    Box::pin(async_stream::stream! {
        let mut events = Box::pin(body.eventsource());
        let mut parser = EventParser::new(provider, requested_model);
        let mut out: Vec<Item> = Vec::new();
        loop {
            let next = if parser.finishable() {
                match tokio::time::timeout(FINISH_GRACE, events.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        parser.finish(&mut out);
                        for item in out.drain(..) {
                            yield item;
                        }
                        return;
                    }
                }
            } else {
                events.next().await
            };
            let done = match next {
                Some(Ok(event)) => parser.on_data(&event.data, &mut out),
                Some(Err(e)) if parser.finishable() => {
                    tracing::debug!(provider = %parser.provider, error = %sse_error(&e), "stream broke off after its stop reason");
                    parser.finish(&mut out);
                    true
                }
                Some(Err(e)) => {
                    out.push(Err(ProviderError::StreamCut(sse_error(&e))));
                    true
                }
                None if parser.finishable() => {
                    parser.finish(&mut out);
                    true
                }
                None => {
                    out.push(Err(ProviderError::StreamCut("upstream stream ended before a stop reason".into())));
                    true
                }
            };
            for item in out.drain(..) {
                yield item;
            }
            if done {
                return;
            }
        }
    })
}
