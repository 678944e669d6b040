//! Helpers shared by the provider adapters: sending a request and reading and classifying upstream
//! HTTP error bodies, describing transport and event-stream errors, the limits and grace period they
//! share, and the SSE driving loop around each adapter's event parser.
use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use serde_json::Value;

use super::{EventStream, ProviderError, classify_status, parse_retry_after};
use crate::types::StreamEvent;

/// How long a stream that has seen its finish reason (but not yet its usage or `[DONE]`) waits for
/// more before it is finalised with what it has.
pub(crate) const FINISH_GRACE: Duration = Duration::from_millis(500);
/// Largest error body read from an upstream.
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest whole (non-streamed) answer read from an upstream.
pub(crate) const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;
/// Longest error message passed on.
pub(crate) const MAX_ERROR_MESSAGE: usize = 500;

/// Truncates to at most `max` characters.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// The human-readable message of an upstream error body: `error.message` (OpenAI and Anthropic
/// shapes), `error` as a string, `message` or `detail`; else the body text. At most 500 characters.
pub(crate) fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        s(v.pointer("/error/message"))
            .or_else(|| s(v.get("error")))
            .or_else(|| s(v.get("message")))
            .or_else(|| s(v.get("detail")))
    });
    truncate_chars(
        from_json.as_deref().unwrap_or(body).trim(),
        MAX_ERROR_MESSAGE,
    )
}

/// Reads at most `cap` bytes of a response body; a body that breaks off yields what was read.
pub(crate) async fn read_capped(resp: http::Response<hyper::body::Incoming>, cap: usize) -> String {
    use http_body_util::BodyExt;
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while buf.len() < cap {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    let take = chunk.len().min(cap - buf.len());
                    buf.extend_from_slice(&chunk[..take]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The error for a non-2xx response: status, classification, message and `Retry-After`.
pub(crate) async fn status_error(resp: http::Response<hyper::body::Incoming>) -> ProviderError {
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers());
    let body = read_capped(resp, MAX_ERROR_BODY).await;
    let mut message = error_message(&body);
    if message.is_empty() {
        message = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no error body")
            .to_owned();
    }
    ProviderError::Status {
        status,
        kind: classify_status(status, &body),
        message,
        retry_after,
    }
}

/// `error` and its sources, joined.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Describes an SSE-level error (transport, UTF-8 or parser).
pub(crate) fn sse_error<E: std::error::Error>(e: &EventStreamError<E>) -> String {
    match e {
        EventStreamError::Transport(e) => error_chain(e),
        EventStreamError::Utf8(e) => format!("invalid UTF-8 in event stream: {e}"),
        EventStreamError::Parser(e) => format!("invalid event stream: {e}"),
    }
}

/// One item of a provider's event stream.
pub(crate) type Item = Result<StreamEvent, ProviderError>;

/// The `Start` event of a stream, sent once: the provider's name, and the model and id the upstream
/// gave (or the requested model and a generated id).
pub(crate) struct StreamStart {
    pub(crate) provider: String,
    requested_model: String,
    started: bool,
}

impl StreamStart {
    pub(crate) fn new(provider: String, requested_model: String) -> Self {
        StreamStart {
            provider,
            requested_model,
            started: false,
        }
    }

    /// Pushes `Start` unless it was sent; an empty or missing `id` is replaced by `new_id()`.
    pub(crate) fn start(
        &mut self,
        id: Option<&str>,
        model: Option<&str>,
        new_id: impl FnOnce() -> String,
        out: &mut Vec<Item>,
    ) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(Ok(StreamEvent::Start {
            id: id
                .filter(|s| !s.is_empty())
                .map_or_else(new_id, str::to_owned),
            provider: self.provider.clone(),
            model: model
                .filter(|s| !s.is_empty())
                .unwrap_or(&self.requested_model)
                .to_owned(),
        }));
    }
}

/// The per-protocol part of an SSE stream, driven by [`drive_sse`]: folds the `data:` payloads into
/// [`StreamEvent`]s and says when the stream may be finalised.
pub(crate) trait EventParser: Send + 'static {
    /// What the protocol calls the reason a response ended (`stop reason`, `finish reason`), for
    /// messages.
    const REASON: &'static str;
    /// The provider name, for logs.
    fn provider(&self) -> &str;
    /// Whether the end reason was seen, so the stream may be finalised at its end.
    fn finishable(&self) -> bool;
    /// The closing event (preceded by `Start` if none was sent).
    fn finish(&mut self, out: &mut Vec<Item>);
    /// Handles one event's data; returns true when the stream is over (after `Finish` or `Err`).
    fn on_data(&mut self, data: &str, out: &mut Vec<Item>) -> bool;
}

/// Reads the SSE events of `body` and feeds their data to `parser`. Once the parser is finishable,
/// a clean end of the body, a broken body, or [`FINISH_GRACE`] of silence finalise the stream; an end
/// or break before that is a `StreamCut`.
pub(crate) fn drive_sse<S, B, E, P>(body: S, mut parser: P) -> EventStream
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: std::error::Error + Send + 'static,
    P: EventParser,
{
    Box::pin(async_stream::stream! {
        let mut events = Box::pin(body.eventsource());
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
                    tracing::debug!(provider = %parser.provider(), error = %sse_error(&e), "stream broke off after its {}", P::REASON);
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
                    out.push(Err(ProviderError::StreamCut(format!("upstream stream ended before a {}", P::REASON))));
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
