//! The Chat Completions SSE parser: turns a response body (any byte stream, so it can be tested in
//! memory) into [`StreamEvent`]s, and decides when the stream is over. The driving loop is
//! [`drive_sse`](crate::provider::common::drive_sse); this file holds the Chat Completions part.
use std::collections::HashSet;

use futures::Stream;

use super::{OaChunk, OaDelta, chunk, error_object_status, generated_id, stop_reason, usage};
pub(super) use crate::provider::common::Item;
use crate::{
    provider::{
        EventStream,
        common::{EventParser, StreamStart, Text, drive_sse},
    },
    types::{StopReason, StreamEvent, Usage},
};

/// Folds the `data:` payloads of one Chat Completions stream into [`StreamEvent`]s.
struct ChunkParser {
    head: StreamStart,
    finish_reason: Option<StopReason>,
    usage: Option<Usage>,
    /// A usage object arrived in the finish chunk or after it (so it is the final count).
    final_usage: bool,
    tool_calls_started: HashSet<u32>,
    /// The head of the last chunk the fast path read, for it to skip in the next.
    chunk_head: chunk::Head,
}

impl ChunkParser {
    fn new(provider: String, requested_model: String) -> Self {
        ChunkParser {
            head: StreamStart::new(provider, requested_model),
            finish_reason: None,
            usage: None,
            final_usage: false,
            tool_calls_started: HashSet::new(),
            chunk_head: chunk::Head::default(),
        }
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<Item>) {
        self.head
            .start(id, model, || generated_id("chatcmpl-"), out);
    }

    fn on_delta(&mut self, delta: &OaDelta<'_>, out: &mut Vec<Item>) {
        let text = |t: &Option<Text<'_>>| {
            t.as_ref()
                .map(Text::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        };
        if let Some(text) = text(&delta.reasoning_content).or_else(|| text(&delta.reasoning)) {
            out.push(Ok(StreamEvent::ReasoningDelta { text }));
        }
        if let Some(text) = text(&delta.content).or_else(|| text(&delta.refusal)) {
            out.push(Ok(StreamEvent::TextDelta { text }));
        }
        for (pos, tc) in delta.tool_calls.iter().flatten().enumerate() {
            let index = tc.index.unwrap_or(pos as u32);
            let name = tc
                .function
                .as_ref()
                .and_then(|f| f.name.as_ref())
                .map(Text::as_str)
                .filter(|n| !n.is_empty());
            let id = tc.id.as_ref().map(Text::as_str).filter(|id| !id.is_empty());
            if !self.tool_calls_started.contains(&index) && (id.is_some() || name.is_some()) {
                self.tool_calls_started.insert(index);
                out.push(Ok(StreamEvent::ToolCallStart {
                    index,
                    id: id
                        .map(str::to_owned)
                        .unwrap_or_else(|| generated_id("call_")),
                    name: name.unwrap_or_default().to_owned(),
                }));
            }
            if let Some(args) = tc
                .function
                .as_ref()
                .and_then(|f| f.arguments.as_ref())
                .map(Text::as_str)
                .filter(|a| !a.is_empty())
            {
                out.push(Ok(StreamEvent::ToolCallDelta {
                    index,
                    arguments: args.to_owned(),
                }));
            }
        }
    }
}

impl EventParser for ChunkParser {
    const REASON: &'static str = "finish reason";

    fn provider(&self) -> &str {
        &self.head.provider
    }

    fn finish(&mut self, out: &mut Vec<Item>) {
        self.start(None, None, out);
        out.push(Ok(StreamEvent::Finish {
            stop_reason: self.finish_reason.unwrap_or_default(),
            usage: self.usage.unwrap_or_default(),
            failed_attempts: Vec::new(),
        }));
    }

    fn finishable(&self) -> bool {
        self.finish_reason.is_some()
    }

    fn on_data(&mut self, data: &str, out: &mut Vec<Item>) -> bool {
        let data = data.trim();
        if data.is_empty() {
            return false;
        }
        if data == "[DONE]" {
            self.finish(out);
            return true;
        }
        let decoded = chunk::decode(data, &mut self.chunk_head)
            .map_or_else(|| serde_json::from_str(data), Ok);
        let chunk: OaChunk = match decoded {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(provider = %self.head.provider, error = %e, "skipping unparsable stream chunk");
                return false;
            }
        };
        if let Some(err) = &chunk.error {
            out.push(Err(error_object_status(err, data)));
            return true;
        }
        self.start(
            chunk.id.as_ref().map(Text::as_str),
            chunk.model.as_ref().map(Text::as_str),
            out,
        );
        for choice in chunk.choices.iter().flatten().filter(|c| c.index == 0) {
            if let Some(delta) = &choice.delta {
                self.on_delta(delta, out);
            }
            if let Some(fr) = choice
                .finish_reason
                .as_ref()
                .map(Text::as_str)
                .filter(|f| !f.is_empty())
            {
                self.finish_reason = Some(stop_reason(fr));
            }
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(usage(u));
            self.final_usage = self.finish_reason.is_some();
        }
        if self.finish_reason.is_some() && self.final_usage {
            self.finish(out);
            return true;
        }
        false
    }
}

/// Turns the body of a Chat Completions SSE response into [`StreamEvent`]s. See the module tests for
/// the end-of-stream rules: `[DONE]`, finish reason plus usage, a clean end after the finish reason, or
/// [`FINISH_GRACE`](crate::provider::common::FINISH_GRACE) of silence after it finalise; an end before any finish reason is a `StreamCut`.
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
    drive_sse(body, ChunkParser::new(provider, requested_model))
}
