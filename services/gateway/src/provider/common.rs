//! Helpers shared by the provider adapters: reading and classifying upstream HTTP error bodies,
//! describing transport and event-stream errors, and the limits and grace period they share.
use std::time::Duration;

use eventsource_stream::EventStreamError;
use serde_json::Value;

use super::{ProviderError, classify_status, parse_retry_after};

/// How long a stream that has seen its finish reason (but not yet its usage or `[DONE]`) waits for
/// more before it is finalised with what it has.
pub(crate) const FINISH_GRACE: Duration = Duration::from_millis(500);
/// Largest error body read from an upstream.
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;
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
pub(crate) async fn read_capped(mut resp: reqwest::Response, cap: usize) -> String {
    let mut buf = Vec::new();
    while buf.len() < cap {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(cap - buf.len());
                buf.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The error for a non-2xx response: status, classification, message and `Retry-After`.
pub(crate) async fn status_error(resp: reqwest::Response) -> ProviderError {
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
