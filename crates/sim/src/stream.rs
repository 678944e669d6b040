//! Response bodies: an SSE stream built in one buffer and cut into frames, and the driver that
//! paces it and applies the faults that act on a body (slow first token, cut, stall, malformed
//! chunk, missing end).

use std::{ops::Range, time::Duration};

use axum::{
    body::Body,
    http::{HeaderValue, header},
    response::Response,
};
use bytes::Bytes;
use futures::Stream;

use crate::Fault;

/// The role of a frame in the stream, for the faults to find their place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Before the first token (role chunk, message_start, ...).
    Prelude,
    /// One answer token.
    Token,
    /// After the tokens (finish reason, usage, ...).
    Tail,
    /// The end marker: `data: [DONE]`, `message_stop`, `response.completed`.
    Terminal,
}

/// An SSE stream under construction.
#[derive(Debug)]
pub(crate) struct Sse {
    buf: Vec<u8>,
    frames: Vec<(Part, Range<usize>)>,
    malformed: &'static [u8],
}

impl Sse {
    /// `malformed` is the garbage event the `malformed_chunk` fault inserts.
    pub(crate) fn new(malformed: &'static [u8]) -> Sse {
        Sse {
            buf: Vec::with_capacity(2048),
            frames: Vec::with_capacity(32),
            malformed,
        }
    }

    /// One frame written by `f` into the buffer.
    pub(crate) fn frame(&mut self, part: Part, f: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        f(&mut self.buf);
        self.frames.push((part, start..self.buf.len()));
    }

    /// `event: NAME\ndata: JSON\n\n` (without the event line when `name` is `None`).
    pub(crate) fn event(&mut self, part: Part, name: Option<&str>, data: &serde_json::Value) {
        self.frame(part, |b| {
            if let Some(n) = name {
                b.extend_from_slice(b"event: ");
                b.extend_from_slice(n.as_bytes());
                b.push(b'\n');
            }
            b.extend_from_slice(b"data: ");
            write_json(b, data);
            b.extend_from_slice(b"\n\n");
        });
    }
}

/// Appends `v` as JSON (writing into a `Vec` cannot fail, nor can serialising these values).
pub(crate) fn write_json<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) {
    if let Err(e) = serde_json::to_writer(&mut *buf, v) {
        tracing::error!(error = %e, "serialising a response failed");
    }
}

/// The body error that cuts a response off (the client sees an incomplete body).
#[derive(Debug, thiserror::Error)]
#[error("response cut off by the simulator (fault `cut_after`)")]
struct BodyCut;

#[derive(Debug, Default)]
struct Plan {
    first_delay: Option<Duration>,
    pacing: Option<Duration>,
    cut_after: Option<u32>,
    stall_after: Option<u32>,
    malformed_after: Option<u32>,
    missing_done: bool,
}

/// A `text/event-stream` response of `sse`, paced at `tokens_per_sec` (0 = unpaced), with the
/// body faults of `fault` applied.
pub(crate) fn sse_response(sse: Sse, fault: Option<Fault>, tokens_per_sec: f64) -> Response {
    let mut plan = Plan::default();
    if tokens_per_sec > 0.0 {
        plan.pacing = Some(Duration::from_secs_f64(1.0 / tokens_per_sec));
    }
    match fault {
        Some(Fault::SlowFirstToken { ms }) => plan.first_delay = Some(Duration::from_millis(ms)),
        Some(Fault::CutAfter { tokens }) => plan.cut_after = Some(tokens),
        Some(Fault::StallAfter { tokens }) => plan.stall_after = Some(tokens),
        Some(Fault::MalformedChunk { after }) => plan.malformed_after = Some(after),
        Some(Fault::MissingDone) => plan.missing_done = true,
        _ => {}
    }
    let Sse {
        buf,
        frames,
        malformed,
    } = sse;
    let buf = Bytes::from(buf);
    let plain = plan.first_delay.is_none()
        && plan.pacing.is_none()
        && plan.cut_after.is_none()
        && plan.stall_after.is_none()
        && plan.malformed_after.is_none()
        && !plan.missing_done;
    let body = if plain {
        Body::from(buf)
    } else {
        Body::from_stream(drive(buf, frames, malformed, plan))
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn drive(
    buf: Bytes,
    frames: Vec<(Part, Range<usize>)>,
    malformed: &'static [u8],
    plan: Plan,
) -> impl Stream<Item = Result<Bytes, BodyCut>> + Send {
    async_stream::stream! {
        if let Some(d) = plan.first_delay {
            tokio::time::sleep(d).await;
        }
        let mut emitted: u32 = 0;
        let mut malformed_sent = false;
        for (part, range) in frames {
            if part != Part::Prelude {
                // A limit of N is reached before the (N+1)-th token, or before the tail when the
                // answer has fewer tokens.
                let reached = |n: u32| part != Part::Token || emitted >= n;
                if let Some(n) = plan.malformed_after
                    && !malformed_sent
                    && reached(n)
                {
                    malformed_sent = true;
                    yield Ok(Bytes::from_static(malformed));
                }
                if plan.cut_after.is_some_and(reached) {
                    // Let what was sent reach the wire first: a real cut happens after bytes went out.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    yield Err(BodyCut);
                    return;
                }
                if plan.stall_after.is_some_and(reached) {
                    std::future::pending::<()>().await;
                }
            }
            if part == Part::Terminal && plan.missing_done {
                continue;
            }
            if part == Part::Token {
                if emitted > 0
                    && let Some(p) = plan.pacing
                {
                    tokio::time::sleep(p).await;
                }
                emitted += 1;
            }
            yield Ok(buf.slice(range));
        }
    }
}

/// Lets hyper write out what was sent so far: on a body error it drops the connection at once,
/// and data still in its buffer would be lost (the client would see no response at all).
async fn flush_pause() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

/// A JSON response; the body faults act on it as on a stream: `slow_first_token` delays the body
/// (headers go out at once), `cut_after`/`stall_after` send half of it and then cut or stall.
pub(crate) fn json_response(body: Vec<u8>, fault: Option<Fault>) -> Response {
    let body = Bytes::from(body);
    let body = match fault {
        Some(Fault::SlowFirstToken { ms }) => Body::from_stream(async_stream::stream! {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            yield Ok::<_, BodyCut>(body);
        }),
        Some(f @ (Fault::CutAfter { .. } | Fault::StallAfter { .. })) => {
            Body::from_stream(async_stream::stream! {
                yield Ok(body.slice(..body.len() / 2));
                if matches!(f, Fault::StallAfter { .. }) {
                    std::future::pending::<()>().await;
                }
                flush_pause().await;
                yield Err(BodyCut);
            })
        }
        _ => Body::from(body),
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
