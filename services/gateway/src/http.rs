//! The HTTP edge: OpenAI Chat Completions, OpenAI Responses and Anthropic Messages ingress, model
//! listing, `/metrics` and health. Errors become responses here, in the caller's own protocol shape.
use std::{convert::Infallible, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::BytesMut;
use futures::{FutureExt, StreamExt};
use http_body_util::BodyExt;
use tracing::Instrument;

use crate::{
    auth,
    error::ApiError,
    ingress::{self, SseEvent},
    inline,
    metrics::RequestLabels,
    router::Gateway,
    types::{ChatRequest, ChatResponse, RequestMeta, StreamEvent},
};

/// One ingress protocol: how it parses, renders answers and errors, and encodes streams.
trait Wire: Send + Sync + 'static {
    const NAME: &'static str;
    type Parsed: Send + 'static;
    type Encoder: Send + 'static;
    fn parse(body: &[u8]) -> Result<Self::Parsed, ApiError>;
    fn request(p: &Self::Parsed) -> &ChatRequest;
    fn session_hint(p: &Self::Parsed) -> Option<String>;
    /// The whole answer's JSON body.
    fn render(resp: &ChatResponse) -> Vec<u8>;
    fn encoder(p: &Self::Parsed) -> Self::Encoder;
    fn encode(enc: &mut Self::Encoder, ev: &StreamEvent) -> Vec<SseEvent>;
    fn encode_error(enc: &mut Self::Encoder, err: &ApiError) -> Vec<SseEvent>;
    fn error_body(err: &ApiError) -> serde_json::Value;
}

macro_rules! wire {
    ($ty:ident, $m:ident, $name:literal, $error_body:ident, $render:ident) => {
        struct $ty;
        impl Wire for $ty {
            const NAME: &'static str = $name;
            type Parsed = ingress::$m::Parsed;
            type Encoder = ingress::$m::StreamEncoder;
            fn parse(body: &[u8]) -> Result<Self::Parsed, ApiError> {
                ingress::$m::parse(body)
            }
            fn request(p: &Self::Parsed) -> &ChatRequest {
                &p.req
            }
            fn session_hint(p: &Self::Parsed) -> Option<String> {
                p.session_hint.clone()
            }
            fn render(resp: &ChatResponse) -> Vec<u8> {
                // Serialising these types cannot fail (string keys, no non-finite floats).
                // Sized for a short answer up front: growing from empty reallocated and copied ~7 times.
                let mut out = Vec::with_capacity(1024);
                match serde_json::to_writer(&mut out, &ingress::$m::$render(resp)) {
                    Ok(()) => out,
                    Err(_) => Vec::new(),
                }
            }
            fn encoder(p: &Self::Parsed) -> Self::Encoder {
                ingress::$m::StreamEncoder::new(p)
            }
            fn encode(enc: &mut Self::Encoder, ev: &StreamEvent) -> Vec<SseEvent> {
                enc.event(ev)
            }
            fn encode_error(enc: &mut Self::Encoder, err: &ApiError) -> Vec<SseEvent> {
                enc.error(err)
            }
            fn error_body(err: &ApiError) -> serde_json::Value {
                err.$error_body()
            }
        }
    };
}

wire!(
    OpenAiChat,
    openai_chat,
    "openai_chat",
    openai_body,
    completion
);
wire!(
    Responses,
    responses,
    "openai_responses",
    openai_body,
    render
);
wire!(Anthropic, anthropic, "anthropic", anthropic_body, render);

/// Builds the HTTP application.
pub fn app(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(handle::<OpenAiChat>))
        .route("/v1/responses", post(handle::<Responses>))
        .route("/v1/messages", post(handle::<Anthropic>))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(list_models))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(gateway)
}

fn error_response<W: Wire>(err: &ApiError) -> Response {
    let mut resp = (err.status(), axum::Json(W::error_body(err))).into_response();
    if let Some(ra) = err.retry_after()
        && let Ok(v) = HeaderValue::from_str(&ra.as_secs().max(1).to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Reads the body, refusing more than the configured limit with a 413 in the protocol's shape.
async fn read_body(gateway: &Gateway, req: Request) -> Result<(HeaderMap, Bytes), ApiError> {
    let limit = gateway.cfg.server.max_body_bytes;
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "request body is larger than the limit of {limit} bytes"
        ))
    };
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large());
    }
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                ApiError::BadRequest(format!("cannot read request body: {e}"))
            }
        })?
        .to_bytes();
    Ok((parts.headers, bytes))
}

// Header names the edge reads or writes on every request, built once (a `&str` name is parsed and
// hashed per use).
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
const X_RETORT_PROVIDER: HeaderName = HeaderName::from_static("x-retort-provider");
const X_RETORT_MODEL: HeaderName = HeaderName::from_static("x-retort-model");
const X_RETORT_FAILED_ATTEMPTS: HeaderName = HeaderName::from_static("x-retort-failed-attempts");

fn request_meta(
    identity: crate::types::Identity,
    headers: &HeaderMap,
    hint: Option<String>,
) -> RequestMeta {
    let header_str = |name: HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    RequestMeta {
        request_id: header_str(X_REQUEST_ID).unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        identity,
        session_id: auth::session_id(headers, hint),
        harness: auth::harness(
            headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        ),
        anthropic_version: header_str(ANTHROPIC_VERSION),
        anthropic_beta: header_str(ANTHROPIC_BETA),
    }
}

/// Counts a request in `retort_requests_total`. The route label is a name the gateway serves, or
/// `unknown`: a caller's made-up model names never become label values (they would grow the metrics
/// without bound).
pub(crate) fn count(gateway: &Gateway, ingress: &'static str, route: &str, outcome: &'static str) {
    let route = if route.is_empty() || gateway.resolve(route).is_some() {
        route
    } else {
        "unknown"
    };
    gateway
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            ingress,
            route: route.to_owned(),
            outcome,
        })
        .inc();
}

async fn handle<W: Wire>(State(gateway): State<Arc<Gateway>>, req: Request) -> Response {
    let (headers, body) = match read_body(&gateway, req).await {
        Ok(x) => x,
        Err(e) => return error_response::<W>(&e),
    };
    // Authenticate before parsing, so an unknown caller learns nothing about the body's validity.
    let identity = match auth::authenticate(&gateway.cfg, &headers) {
        Ok(identity) => identity,
        Err(e) => {
            count(&gateway, W::NAME, "", "unauthorized");
            return error_response::<W>(&e);
        }
    };
    let parsed = match W::parse(&body) {
        Ok(p) => p,
        Err(e) => {
            count(&gateway, W::NAME, "", "bad_request");
            return error_response::<W>(&e);
        }
    };
    let meta = request_meta(identity, &headers, W::session_hint(&parsed));
    let span = tracing::debug_span!("request", ingress = W::NAME, route = %W::request(&parsed).model, user = %meta.identity.user, session = ?meta.session_id, harness = meta.harness.as_str(), id = %meta.request_id);
    if W::request(&parsed).stream {
        stream_response::<W>(gateway, parsed, meta)
            .instrument(span)
            .await
    } else {
        let route = W::request(&parsed).model.clone();
        match gateway
            .complete(W::request(&parsed), &meta)
            .instrument(span)
            .await
        {
            Ok(resp) => {
                count(&gateway, W::NAME, &route, "ok");
                let mut r = Response::new(Body::from(W::render(&resp)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                served_headers(
                    r.headers_mut(),
                    &resp.provider,
                    &resp.model,
                    resp.failed_attempts.len(),
                );
                r
            }
            Err(e) => {
                count(&gateway, W::NAME, &route, "error");
                error_response::<W>(&e)
            }
        }
    }
}

fn served_headers(h: &mut HeaderMap, provider: &str, model: &str, failed: usize) {
    if let Ok(v) = HeaderValue::from_str(provider) {
        h.insert(X_RETORT_PROVIDER, v);
    }
    if let Ok(v) = HeaderValue::from_str(model) {
        h.insert(X_RETORT_MODEL, v);
    }
    h.insert(X_RETORT_FAILED_ATTEMPTS, HeaderValue::from(failed));
}

fn push_sse(out: &mut BytesMut, events: Vec<SseEvent>) {
    for e in events {
        if let Some(name) = e.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(e.data.as_bytes());
        out.extend_from_slice(b"\n\n");
    }
}

fn sse_bytes(events: Vec<SseEvent>) -> Bytes {
    let mut out = BytesMut::new();
    push_sse(&mut out, events);
    out.freeze()
}

/// Waits for the first event before answering, so a request that fails on every target gets a
/// proper HTTP error status rather than a 200 stream that only carries an error.
async fn stream_response<W: Wire>(
    gateway: Arc<Gateway>,
    parsed: W::Parsed,
    meta: RequestMeta,
) -> Response {
    let route = W::request(&parsed).model.clone();
    let req = W::request(&parsed).clone();
    let mut enc = W::encoder(&parsed);
    let mut events = Box::pin(Arc::clone(&gateway).stream(req, meta));
    let first = match events.next().await {
        Some(Ok(ev)) => ev,
        Some(Err(e)) => {
            count(&gateway, W::NAME, &route, "error");
            return error_response::<W>(&e);
        }
        None => {
            return error_response::<W>(&ApiError::Internal(
                "the stream ended before it began".into(),
            ));
        }
    };
    let mut headers = HeaderMap::new();
    if let StreamEvent::Start {
        provider, model, ..
    } = &first
    {
        served_headers(&mut headers, provider, model, 0);
    }
    let head = sse_bytes(W::encode(&mut enc, &first));
    let body = async_stream::stream! {
        yield Ok::<_, Infallible>(head);
        let mut outcome = "ok";
        let mut next = events.next().await;
        // The first token goes out on its own and is flushed at once (returning Pending once makes
        // hyper write what it has): time to first token never waits for the events behind it.
        if let Some(Ok(ev)) = next.take_if(|n| n.is_ok()) {
            yield Ok(sse_bytes(W::encode(&mut enc, &ev)));
            inline::pause().await;
            next = events.next().await;
        }
        // One buffer for the whole stream: each write is split off it, and once hyper has written
        // and dropped those bytes their space is reused, so a long stream does not grow and copy
        // a fresh buffer for every write. It starts at 1 KiB (a few token chunks, what a paced stream
        // writes at a time; 4 KiB measured no better for a 64-chunk burst) and grows only for a burst.
        let mut out = BytesMut::with_capacity(1024);
        while let Some(item) = next.take() {
            // Events that are already here go out in one write: one frame, one syscall.
            let mut item = Some(item);
            while let Some(it) = item.take() {
                match it {
                    Ok(ev) => push_sse(&mut out, W::encode(&mut enc, &ev)),
                    Err(e) => {
                        outcome = "stream_error";
                        push_sse(&mut out, W::encode_error(&mut enc, &e));
                        break;
                    }
                }
                if out.len() < 64 * 1024 {
                    item = events.next().now_or_never().flatten();
                }
            }
            yield Ok::<_, Infallible>(out.split().freeze());
            if outcome != "ok" {
                break;
            }
            next = events.next().await;
        }
        count(&gateway, W::NAME, &route, outcome);
    };
    let mut resp = Response::new(Body::from_stream(body));
    *resp.headers_mut() = headers;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

async fn count_tokens(State(gateway): State<Arc<Gateway>>, req: Request) -> Response {
    let (headers, body) = match read_body(&gateway, req).await {
        Ok(x) => x,
        Err(e) => return error_response::<Anthropic>(&e),
    };
    if let Err(e) = auth::authenticate(&gateway.cfg, &headers) {
        return error_response::<Anthropic>(&e);
    }
    match ingress::anthropic::parse_count_tokens(&body) {
        Ok(req) if gateway.resolve(&req.model).is_none() => {
            error_response::<Anthropic>(&ApiError::ModelNotFound(format!(
                "model `{}` is not served by this gateway",
                req.model
            )))
        }
        Ok(req) => axum::Json(ingress::anthropic::render_count_tokens(
            ingress::estimate_tokens(&req),
        ))
        .into_response(),
        Err(e) => error_response::<Anthropic>(&e),
    }
}

async fn list_models(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    // Anthropic clients send `anthropic-version`; answer errors in their shape.
    if let Err(e) = auth::authenticate(&gateway.cfg, &headers) {
        return if headers.contains_key("anthropic-version") {
            error_response::<Anthropic>(&e)
        } else {
            error_response::<OpenAiChat>(&e)
        };
    }
    let created = 1_700_000_000u64;
    let table = gateway.routes();
    let data: Vec<serde_json::Value> = table
        .sorted()
        .into_iter()
        .map(|r| match (r.kind, r.targets.first()) {
            (crate::routes::RouteKind::Alias, _) | (_, None) => {
                let targets: Vec<&str> = r.targets.iter().map(|t| t.model.name.as_str()).collect();
                serde_json::json!({"id": r.name, "object": "model", "created": created, "owned_by": "retort", "type": "model", "display_name": r.name, "created_at": "2023-11-14T22:13:20Z", "retort": {"kind": "alias", "targets": targets}})
            }
            (kind, Some(t)) => {
                let m = &t.model;
                serde_json::json!({"id": m.name, "object": "model", "created": created, "owned_by": m.provider, "type": "model", "display_name": m.name, "created_at": "2023-11-14T22:13:20Z", "retort": {"kind": kind.as_str(), "provider": m.provider, "upstream_model": m.upstream_model, "context_window": m.context_window}})
            }
        })
        .collect();
    let first = data
        .first()
        .and_then(|d| d["id"].as_str())
        .map(str::to_owned);
    let last = data
        .last()
        .and_then(|d| d["id"].as_str())
        .map(str::to_owned);
    axum::Json(serde_json::json!({"object": "list", "data": data, "has_more": false, "first_id": first, "last_id": last})).into_response()
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gateway.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    use crate::hooks::GuardHealth;
    match (gateway.readiness(), gateway.hooks.breaker.health()) {
        (Err(why), _) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
        (Ok(()), GuardHealth::FailingClosed(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("spend checks failing closed: {why}"),
        )
            .into_response(),
        (Ok(()), GuardHealth::FailingOpen(why)) => (
            StatusCode::OK,
            format!("ready\nwarning: spend checks failing open (requests unmetered): {why}"),
        )
            .into_response(),
        (Ok(()), GuardHealth::Ok) => (StatusCode::OK, "ready").into_response(),
    }
}

async fn not_found(req: Request) -> Response {
    let err = ApiError::BadRequest(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ));
    (StatusCode::NOT_FOUND, axum::Json(err.openai_body())).into_response()
}

/// Serves the HTTP app on a listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    extra: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::{Listener, ListenerExt};
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::{conn::auto, graceful::GracefulShutdown},
        service::TowerToHyperService,
    };
    // No Nagle delays: every streamed chunk goes out as soon as it is written.
    let mut listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let service = TowerToHyperService::new(app(gateway).merge(extra));
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // `accept` waits out accept errors (too many open files) itself.
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service.clone())
            .into_owned();
        let conn = graceful.watch(conn);
        // What axum::serve does, but each connection polled inline: hyper hands the request body to
        // the handler through a channel inside the connection's own poll, and that wake (and the
        // first-token pause in `stream_response`) now turns the poll again instead of requeueing
        // the task and waking an idle worker.
        tokio::spawn(inline::run(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        }));
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
