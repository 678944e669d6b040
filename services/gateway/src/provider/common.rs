//! Helpers shared by the provider adapters: sending a request and reading and classifying upstream
//! HTTP error bodies, describing transport and event-stream errors, the limits and grace period they
//! share, and the SSE driving loop around each adapter's event parser.
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;

use super::{EventStream, ProviderError, classify_status, parse_retry_after};
use crate::types::StreamEvent;

/// A JSON string from an upstream body, borrowed from the body when it has no escapes and copied
/// only when it has (serde's own `Cow<str>` always copies inside `Option`s and sequences). The
/// adapters' response and stream-chunk types use it so parsing an answer allocates only for what
/// the gateway keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Text<'a>(pub(crate) std::borrow::Cow<'a, str>);

impl Text<'_> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit(std::marker::PhantomData))
    }
}

/// How long a stream that has seen its finish reason (but not yet its usage or `[DONE]`) waits for
/// more before it is finalised with what it has.
pub(crate) const FINISH_GRACE: Duration = Duration::from_millis(500);
/// How long a stream whose answer is complete waits for its body's own end (a chunked body's last
/// chunk) before it drops the body: see [`drain_end`].
const DRAIN_WAIT: Duration = Duration::from_millis(50);
/// How much of that body's rest it reads at most.
const MAX_DRAIN: usize = 64 * 1024;
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

/// An incremental Server-Sent Events decoder: bytes in, the `data` of each complete event out.
/// Linear in the input: each byte is copied once into the line buffer and scanned once. (The
/// `eventsource-stream` crate it replaces re-copied the unparsed remainder for every event, so a
/// chunk carrying a whole 64-event answer cost 64 copies of itself: 63 % of the gateway's
/// instructions on an unpaced stream.) Lines end in `\n` or `\r\n`; `event`, `id` and `retry`
/// fields and `:` comments are skipped — the adapters read the event type from the data.
#[derive(Default)]
pub(crate) struct SseDecoder {
    buf: Vec<u8>,
    /// Where the next line starts in `buf`: bytes before it were decoded already.
    pos: usize,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    /// Appends one chunk to what is still to be decoded.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The data of the next complete event in what was pushed, or `None` until more arrives. One
    /// event at a time, so a chunk carrying a whole answer hands its first token on before the rest
    /// is decoded.
    pub(crate) fn next_event(&mut self) -> Result<Option<&str>, std::str::Utf8Error> {
        // The previous event's data was handed out; it is cleared lazily so it could be borrowed.
        if !self.has_data {
            self.data.clear();
        }
        while let Some(nl) = memchr::memchr(b'\n', &self.buf[self.pos..]) {
            let end = self.pos + nl;
            let mut line = &self.buf[self.pos..end];
            self.pos = end + 1;
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if line.is_empty() {
                if self.has_data {
                    self.has_data = false;
                    return Ok(Some(&self.data));
                }
                continue;
            }
            let (field, value) = match memchr::memchr(b':', line) {
                Some(0) => continue,
                Some(i) => (
                    &line[..i],
                    line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..]),
                ),
                None => (line, &b""[..]),
            };
            if field == b"data" {
                let value = std::str::from_utf8(value)?;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
        }
        Ok(None)
    }
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
        let mut body = Box::pin(body);
        let mut sse = SseDecoder::default();
        let mut out: Vec<Item> = Vec::new();
        loop {
            let next = if parser.finishable() {
                match tokio::time::timeout(FINISH_GRACE, body.next()).await {
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
                body.next().await
            };
            // Ended by an event in the body (the parser's end, or an error in it) rather than by the
            // body's end, break or silence: the rest of the body is then read to its end.
            let in_body = matches!(next, Some(Ok(_)));
            let done = match next {
                Some(Ok(chunk)) => {
                    sse.push(chunk.as_ref());
                    // One event at a time, each one's items handed on before the next is decoded:
                    // an unpaced upstream sends a whole answer in one chunk, and its first token
                    // must not wait for the rest to be parsed.
                    let mut done = false;
                    while !done {
                        match sse.next_event() {
                            Ok(Some(data)) => done = parser.on_data(data, &mut out),
                            Ok(None) => break,
                            Err(e) if parser.finishable() => {
                                tracing::debug!(provider = %parser.provider(), error = %e, "invalid UTF-8 after the {}", P::REASON);
                                parser.finish(&mut out);
                                done = true;
                            }
                            Err(e) => {
                                out.push(Err(ProviderError::StreamCut(format!("invalid UTF-8 in event stream: {e}"))));
                                done = true;
                            }
                        }
                        for item in out.drain(..) {
                            yield item;
                        }
                    }
                    done
                }
                Some(Err(e)) if parser.finishable() => {
                    tracing::debug!(provider = %parser.provider(), error = %error_chain(&e), "stream broke off after its {}", P::REASON);
                    parser.finish(&mut out);
                    true
                }
                Some(Err(e)) => {
                    out.push(Err(ProviderError::StreamCut(error_chain(&e))));
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
                if in_body {
                    drain_end(&mut body).await;
                }
                return;
            }
        }
    })
}

/// Reads a stream on past its finish event to its end, for at most [`DRAIN_WAIT`]: an SSE stream
/// then reads its body to the end (see [`drain_end`]), and its connection goes back to the pool.
pub(crate) async fn finish_stream(mut stream: EventStream) {
    let _ =
        tokio::time::timeout(DRAIN_WAIT, async { while stream.next().await.is_some() {} }).await;
}

/// Reads a body whose answer is complete on to its end — at most [`MAX_DRAIN`] bytes, for at most
/// [`DRAIN_WAIT`] — so that its HTTP/1 connection goes back to the pool. A chunked body (every
/// streamed answer) reports its end only when its last, empty chunk has been decoded, which takes
/// one more read of the body after the terminal event (`[DONE]`, `message_stop`) even when that
/// chunk arrived with it; a body dropped before that closes its connection, and the next request
/// pays for a new one (a TCP and, to a real provider, a TLS handshake before its first token).
async fn drain_end<S, B, E>(body: &mut std::pin::Pin<Box<S>>)
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
{
    let mut left = MAX_DRAIN;
    let _ = tokio::time::timeout(DRAIN_WAIT, async {
        while let Some(Ok(chunk)) = body.next().await {
            left = left.saturating_sub(chunk.as_ref().len());
            if left == 0 {
                return;
            }
        }
    })
    .await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod sse_tests {
    use super::SseDecoder;

    fn decode(chunks: &[&[u8]]) -> Vec<String> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(data) = d.next_event().expect("utf-8") {
                out.push(data.to_owned());
            }
        }
        out
    }

    #[test]
    fn events_split_anywhere_decode_the_same() {
        let text = b"event: message_start\ndata: {\"a\":1}\n\n: comment\r\ndata:x\r\ndata: y\r\n\r\nid: 7\nretry: 10\n\ndata: [DONE]\n\n";
        let whole = decode(&[text]);
        assert_eq!(whole, vec!["{\"a\":1}", "x\ny", "[DONE]"]);
        for cut in 0..text.len() {
            assert_eq!(
                decode(&[&text[..cut], &text[cut..]]),
                whole,
                "split at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(decode(&bytes), whole);
    }

    #[test]
    fn an_unfinished_event_is_not_emitted_and_events_come_one_at_a_time() {
        assert!(decode(&[b"data: partial\n"]).is_empty());
        let mut d = SseDecoder::default();
        d.push(b"data: 1\n\ndata: 2\n\ndata: 3");
        assert_eq!(d.next_event().expect("utf-8"), Some("1"));
        assert_eq!(d.next_event().expect("utf-8"), Some("2"));
        assert_eq!(d.next_event().expect("utf-8"), None);
        d.push(b"\n\n");
        assert_eq!(d.next_event().expect("utf-8"), Some("3"));
        assert_eq!(d.next_event().expect("utf-8"), None);
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut d = SseDecoder::default();
        d.push(b"data: \xff\xfe\n\n");
        assert!(d.next_event().is_err());
    }
}
