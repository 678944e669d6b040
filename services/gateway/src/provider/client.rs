//! The HTTP client the provider adapters send through: TLS by rustls with the Mozilla roots compiled
//! in (nothing read from the system or the network), TCP_NODELAY and a connect timeout.
//!
//! HTTP/1.1 upstreams go through this module's own pool of `hyper::client::conn::http1` connections,
//! each one driven inline by the task that uses it: the request future and the response body poll
//! the connection themselves, so no task is spawned per connection and no request, response head or
//! body frame crosses tasks (hyper-util's pooled client ran every connection in its own task: a
//! request hopped to it over a channel and its answer came back over another, each frame a
//! cross-task, often cross-thread, wake-up; and its pool hashed its key with SipHash on every checkout
//! and return). HTTP/2 with prior knowledge keeps hyper-util's client: multiplexing needs a
//! connection task that every request shares.
//!
//! It replaces reqwest on the hot path: reqwest re-parsed the URL twice per request (redirect policy
//! and response URL) and ran redirect and retry layers the router never uses — a third of the
//! gateway's instructions per proxied request (callgrind, bench scenario a).
use std::{
    collections::VecDeque,
    future::{Future, poll_fn},
    pin::{Pin, pin},
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt, BodyStream, Full, Limited};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::{TrySendError, http1},
};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpStream;

use super::{ProviderError, TimeoutKind, common::error_chain};
use crate::{config::ProviderConfig, inline::Inline};

/// How long an idle upstream connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle upstream connections kept per client.
const MAX_IDLE: usize = 1024;

/// Why a provider's client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
    #[error(
        "provider {0} is of kind `local`, and this gateway was built without the `students` feature"
    )]
    WithoutStudents(String),
}

impl ClientError {
    #[cfg(not(feature = "students"))]
    pub(crate) fn without_students(provider: &str) -> ClientError {
        ClientError::WithoutStudents(provider.to_owned())
    }
}

/// One provider's pooled HTTP client.
#[derive(Clone)]
pub struct HttpClient {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    /// HTTP/1.1: our inline-driven pool.
    Http1(Arc<Pool>),
    /// HTTP/2 with prior knowledge: hyper-util's client and its connection tasks.
    Http2(Box<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>),
}

/// An upstream endpoint, parsed once when the provider is built.
#[derive(Debug, Clone)]
pub struct Endpoint {
    target: Option<Target>,
    text: String,
}

/// What a request to a valid endpoint needs, computed once.
#[derive(Debug, Clone)]
struct Target {
    /// The absolute URL: what the connector dials and the HTTP/2 client sends.
    uri: Uri,
    /// Origin form (path and query): the HTTP/1 request line.
    origin: Uri,
    /// The `Host` header: the host, and the port when it is not the scheme's default.
    host: HeaderValue,
    /// Scheme and authority: which pooled connections may carry this endpoint's requests.
    key: Arc<str>,
}

impl Endpoint {
    pub fn new(text: String) -> Endpoint {
        let target = text
            .parse::<Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
            .and_then(Target::new);
        Endpoint { target, text }
    }

    fn target(&self) -> Result<&Target, ProviderError> {
        self.target
            .as_ref()
            .ok_or_else(|| ProviderError::Connect(format!("invalid provider URL {}", self.text)))
    }
}

impl Target {
    fn new(uri: Uri) -> Option<Target> {
        let scheme = uri.scheme_str()?;
        let host_name = uri.host()?;
        let default_port = if scheme == "https" { 443 } else { 80 };
        let host = match uri.port_u16() {
            Some(port) if port != default_port => format!("{host_name}:{port}"),
            _ => host_name.to_owned(),
        };
        let origin = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .ok()?;
        Some(Target {
            key: format!("{scheme}://{}", uri.authority()?.as_str()).into(),
            host: HeaderValue::from_str(&host).ok()?,
            origin,
            uri,
        })
    }
}

impl HttpClient {
    pub fn new(cfg: &ProviderConfig) -> Result<HttpClient, ClientError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.enforce_http(false);
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(ClientError::Tls)?
            .https_or_http();
        let inner = if cfg.http2 {
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .pool_idle_timeout(IDLE_TIMEOUT)
                .pool_max_idle_per_host(MAX_IDLE)
                .http2_only(true)
                .http2_adaptive_window(true);
            Inner::Http2(Box::new(
                builder.build(tls.enable_http2().wrap_connector(http)),
            ))
        } else {
            Inner::Http1(Arc::new(Pool {
                connector: tls.enable_http1().wrap_connector(http),
                idle: Mutex::new(VecDeque::new()),
            }))
        };
        Ok(HttpClient { inner })
    }

    /// POSTs a JSON body. `headers` are the adapter's (auth, protocol) then the configured extras; a
    /// transport error or a non-2xx answer becomes the matching [`ProviderError`].
    pub async fn post_json(
        &self,
        endpoint: &Endpoint,
        body: Vec<u8>,
        stream: bool,
        mut headers: HeaderMap,
        extra: &[(String, String)],
    ) -> Result<Response<UpstreamBody>, ProviderError> {
        let target = endpoint.target()?;
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if stream {
            headers.insert(
                header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        for (k, v) in extra {
            match (
                header::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(k), Ok(v)) => {
                    headers.insert(k, v);
                }
                _ => {
                    return Err(ProviderError::Connect(format!(
                        "configured header {k} is not a valid HTTP header"
                    )));
                }
            }
        }
        let body = Full::new(Bytes::from(body));
        match &self.inner {
            Inner::Http1(pool) => {
                if !headers.contains_key(header::HOST) {
                    headers.insert(header::HOST, target.host.clone());
                }
                let mut req = Request::post(target.origin.clone())
                    .body(body)
                    .map_err(|e| {
                        ProviderError::Connect(format!("cannot build the upstream request: {e}"))
                    })?;
                *req.headers_mut() = headers;
                pool.send(target, req).await
            }
            Inner::Http2(client) => {
                let mut req = Request::post(target.uri.clone()).body(body).map_err(|e| {
                    ProviderError::Connect(format!("cannot build the upstream request: {e}"))
                })?;
                *req.headers_mut() = headers;
                let resp = client.request(req).await.map_err(|e| legacy_error(&e))?;
                if !resp.status().is_success() {
                    return Err(super::common::status_error(resp).await);
                }
                Ok(resp.map(|body| UpstreamBody { body, conn: None }))
            }
        }
    }
}

// The HTTP/1 pool ---------------------------------------------------------------------------------

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;
type UpstreamRequest = Request<Full<Bytes>>;

/// One HTTP/1 connection: the handle requests are sent through and the state machine that does the
/// connection's I/O, polled by whoever holds the pair. Always boxed: with its buffers and the TLS
/// state it is kilobytes, and moved by value through the request's futures it made every adapter
/// future that large — copied whole when `async_trait` boxed it (callgrind: 16 k instructions of
/// `memcpy` per request before it was boxed).
struct Conn {
    tx: http1::SendRequest<Full<Bytes>>,
    io: http1::Connection<Io, Full<Bytes>>,
    inline: Inline,
}

impl Conn {
    fn new(
        tx: http1::SendRequest<Full<Bytes>>,
        io: http1::Connection<Io, Full<Bytes>>,
    ) -> Box<Conn> {
        Box::new(Conn {
            tx,
            io,
            inline: Inline::new(),
        })
    }

    /// Polls the connection's I/O; `true` when it has finished (closed by the peer, or failed) and
    /// can only be dropped.
    fn poll_done(&mut self, cx: &mut Context<'_>) -> bool {
        self.io.poll_without_shutdown(cx).is_ready()
    }
}

/// A connection lent to one request, and where it goes back when its response has ended cleanly.
struct Lent {
    conn: Box<Conn>,
    pool: Arc<Pool>,
    key: Arc<str>,
}

struct Idle {
    conn: Box<Conn>,
    key: Arc<str>,
    since: Instant,
}

struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// Idle connections, the most recently used last (checked out first); the oldest first
    /// (expired first).
    idle: Mutex<VecDeque<Idle>>,
}

impl Pool {
    /// Sends `req` on an idle connection to `target`, or a new one. A request the connection did
    /// not start writing (it had closed meanwhile) is retried on the next one; one that may have
    /// been written never is.
    async fn send(
        self: &Arc<Self>,
        target: &Target,
        mut req: UpstreamRequest,
    ) -> Result<Response<UpstreamBody>, ProviderError> {
        while let Some(mut conn) = self.checkout(&target.key) {
            // A connection the upstream closed while idle completes on this poll: drop it. No waker:
            // `roundtrip` polls it again at once (queuing the request would otherwise wake this task).
            if conn.poll_done(&mut Context::from_waker(Waker::noop())) || conn.tx.is_closed() {
                continue;
            }
            match roundtrip(conn, req).await {
                Ok((resp, conn)) => return self.answer(resp, conn, target).await,
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(ProviderError::Connect(error_chain(&e.into_error()))),
                },
            }
        }
        let conn = self.connect(target).await?;
        match roundtrip(conn, req).await {
            Ok((resp, conn)) => self.answer(resp, conn, target).await,
            Err(e) => Err(ProviderError::Connect(error_chain(&e.into_error()))),
        }
    }

    /// The response, its body still driving the connection; a non-2xx one becomes its error.
    async fn answer(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        conn: Option<Box<Conn>>,
        target: &Target,
    ) -> Result<Response<UpstreamBody>, ProviderError> {
        if resp.status().is_success() {
            let conn = conn.map(|conn| Lent {
                conn,
                pool: self.clone(),
                key: target.key.clone(),
            });
            return Ok(resp.map(|body| UpstreamBody { body, conn }));
        }
        // The error body is read capped and the connection closed after it.
        let status_error = super::common::status_error(resp);
        Err(drive(conn, status_error).await)
    }

    /// Dials `target` and hands the connection to hyper (plain or TLS, by the scheme).
    async fn connect(&self, target: &Target) -> Result<Box<Conn>, ProviderError> {
        use tower::ServiceExt;
        let io = self
            .connector
            .clone()
            .oneshot(target.uri.clone())
            .await
            .map_err(|e| connect_error(&*e))?;
        let (tx, io) = http1::handshake(io)
            .await
            .map_err(|e| ProviderError::Connect(error_chain(&e)))?;
        Ok(Conn::new(tx, io))
    }

    /// The most recently parked live connection to `key`; expired ones met on the way are dropped.
    fn checkout(&self, key: &Arc<str>) -> Option<Box<Conn>> {
        loop {
            let idle = {
                let mut idle = self
                    .idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let at = idle
                    .iter()
                    .rposition(|i| Arc::ptr_eq(&i.key, key) || i.key == *key)?;
                idle.remove(at)?
            };
            if idle.since.elapsed() < IDLE_TIMEOUT {
                return Some(idle.conn);
            }
        }
    }

    /// Parks a connection whose response has ended cleanly, if it can carry another request.
    fn park(&self, mut conn: Box<Conn>, key: Arc<str>) {
        // One poll lets the connection take in the end of the response and ask for the next request
        // (`SendRequest` is ready only then); a connection the upstream asked to close finishes here.
        // No task will own it while it is idle, so no task's waker is left with it.
        if conn.poll_done(&mut Context::from_waker(Waker::noop())) || !conn.tx.is_ready() {
            return;
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while idle
                .front()
                .is_some_and(|i| now.duration_since(i.since) >= IDLE_TIMEOUT)
            {
                expired.extend(idle.pop_front());
            }
            if idle.len() < MAX_IDLE {
                idle.push_back(Idle {
                    conn,
                    key,
                    since: now,
                });
            }
        }
        // Closed outside the lock.
        drop(expired);
    }
}

/// Sends `req` on `conn`, driving the connection until the response head arrives. The connection
/// comes back with the response unless it finished meanwhile (then the body has what it read).
async fn roundtrip(
    mut conn: Box<Conn>,
    req: UpstreamRequest,
) -> Result<(Response<Incoming>, Option<Box<Conn>>), TrySendError<UpstreamRequest>> {
    let mut sent = pin!(conn.tx.try_send_request(req));
    let inline = conn.inline.clone();
    let mut conn = Some(conn);
    let resp = poll_fn(|cx| {
        inline.poll(cx, |cx| {
            if let Some(c) = &mut conn
                && c.poll_done(cx)
            {
                // Finished: dropping it hands back a request it had not taken, or fails the one it had.
                conn = None;
            }
            sent.as_mut().poll(cx)
        })
    })
    .await?;
    Ok((resp, conn))
}

/// Runs `fut` while driving `conn` (when there is one), then closes the connection.
async fn drive<F: Future>(mut conn: Option<Box<Conn>>, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if let Some(c) = &mut conn
            && c.poll_done(cx)
        {
            conn = None;
        }
        fut.as_mut().poll(cx)
    })
    .await
}

/// An upstream response body. Over HTTP/1 it owns the connection and drives it while it is read;
/// a body that ends cleanly parks the connection for the next request, and a body dropped before
/// its end closes it.
pub struct UpstreamBody {
    body: Incoming,
    conn: Option<Lent>,
}

impl UpstreamBody {
    fn ended(&mut self) {
        if let Some(lent) = self.conn.take() {
            lent.pool.park(lent.conn, lent.key);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Read to its length without the final poll that reports the end: still reusable.
        if self.conn.is_some() && self.body.is_end_stream() {
            self.ended();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(lent) = &this.conn else {
            // HTTP/2 (hyper-util's connection task feeds the body), or the connection is gone.
            return Pin::new(&mut this.body).poll_frame(cx);
        };
        // A clone: the poll may drop the connection.
        let frame = lent.conn.inline.clone().poll(cx, |cx| {
            // The body first: it may hold a frame already, and polling it tells the connection to
            // read on.
            let frame = Pin::new(&mut this.body).poll_frame(cx);
            if frame.is_ready() {
                return frame;
            }
            if let Some(lent) = &mut this.conn
                && lent.conn.poll_done(cx)
            {
                // Finished (the upstream closed, or the connection failed): what it read is in the
                // body, and dropping it ends the body or fails it.
                this.conn = None;
            }
            Pin::new(&mut this.body).poll_frame(cx)
        });
        match &frame {
            Poll::Ready(None) => this.ended(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Classifies a failed connect: a timeout, or anything else (refused, unreachable, TLS).
fn connect_error(e: &(dyn std::error::Error + 'static)) -> ProviderError {
    if has_timed_out(e) {
        ProviderError::Timeout(TimeoutKind::Connect)
    } else {
        ProviderError::Connect(error_chain(e))
    }
}

/// Whether `e` or one of its sources is an I/O timeout.
fn has_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src = Some(e);
    while let Some(s) = src {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        src = s.source();
    }
    false
}

/// Classifies a transport error of the HTTP/2 client: a connect timeout, a failed connect, or a
/// connection that broke before the response head arrived.
fn legacy_error(e: &hyper_util::client::legacy::Error) -> ProviderError {
    if e.is_connect() && std::error::Error::source(e).is_some_and(has_timed_out) {
        ProviderError::Timeout(TimeoutKind::Connect)
    } else {
        ProviderError::Connect(error_chain(e))
    }
}

/// The whole response body (at most `limit` bytes); a body that breaks off is a `StreamCut`.
pub async fn read_body(resp: Response<UpstreamBody>, limit: usize) -> Result<Bytes, ProviderError> {
    Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ProviderError::StreamCut(format!("upstream body: {e}")))
}

/// The response body as a stream of data chunks (trailers skipped).
pub fn body_stream(
    resp: Response<UpstreamBody>,
) -> impl Stream<Item = Result<Bytes, hyper::Error>> + Send + 'static {
    use futures::StreamExt;
    BodyStream::new(resp.into_body()).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(e)),
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::{
        convert::Infallible,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::{
        config::{ProviderKind, Secret},
        provider::test_support::{counting_listener, read_request},
    };

    fn client() -> HttpClient {
        HttpClient::new(&ProviderConfig {
            name: "up".into(),
            kind: ProviderKind::Openai,
            base_url: String::new(),
            api_key: Secret::new(""),
            http2: false,
            connect_timeout: Duration::from_secs(2),
            headers: Vec::new(),
            dir: None,
        })
        .unwrap()
    }

    async fn post(client: &HttpClient, endpoint: &Endpoint) -> Result<Bytes, ProviderError> {
        let resp = client
            .post_json(endpoint, b"{}".to_vec(), false, HeaderMap::new(), &[])
            .await?;
        read_body(resp, 1 << 20).await
    }

    /// A keep-alive hyper server answering every request `{"ok":true}` after `delay`; counts the
    /// connections it accepted.
    async fn counting_server(delay: Duration) -> (Endpoint, Arc<AtomicUsize>) {
        let (addr, accepted) = counting_listener(move |sock| async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                let _ = req.into_body().collect().await;
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    br#"{"ok":true}"#,
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), service)
                .await;
        })
        .await;
        (
            Endpoint::new(format!("http://{addr}/v1/chat/completions")),
            accepted,
        )
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (endpoint, accepted) = counting_server(Duration::ZERO).await;
        let client = client();
        for _ in 0..20 {
            assert_eq!(
                &post(&client, &endpoint).await.unwrap()[..],
                br#"{"ok":true}"#
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_reuse_a_bounded_number_of_connections() {
        const CONCURRENT: usize = 16;
        let (endpoint, accepted) = counting_server(Duration::from_millis(5)).await;
        let client = client();
        for _ in 0..10 {
            let calls: Vec<_> = (0..CONCURRENT)
                .map(|_| {
                    let (client, endpoint) = (client.clone(), endpoint.clone());
                    tokio::spawn(async move { post(&client, &endpoint).await })
                })
                .collect();
            for call in calls {
                assert_eq!(&call.await.unwrap().unwrap()[..], br#"{"ok":true}"#);
            }
        }
        let n = accepted.load(Ordering::SeqCst);
        assert!(
            (1..=CONCURRENT).contains(&n),
            "{n} connections for {CONCURRENT} concurrent requests"
        );
    }

    #[tokio::test]
    async fn upstream_closing_an_idle_connection_does_not_fail_the_next_request() {
        // Each connection answers one keep-alive request, then the server closes it while it idles.
        let (addr, accepted) = counting_listener(|mut sock| async move {
            if read_request(&mut sock).await.is_some() {
                let body = r#"{"ok":true}"#;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                sock.write_all(format!("{head}{body}").as_bytes())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(sock);
        })
        .await;
        let endpoint = Endpoint::new(format!("http://{addr}/v1/chat/completions"));
        let client = client();
        for _ in 0..3 {
            assert_eq!(
                &post(&client, &endpoint).await.unwrap()[..],
                br#"{"ok":true}"#
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        // Every connection answers with one chunk of a chunked body and never ends it; it reports
        // when the client closed the connection.
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        let (addr, _) = counting_listener(move |mut sock| {
            let closed_tx = closed_tx.clone();
            async move {
                if read_request(&mut sock).await.is_some() {
                    let head =
                        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
                    sock.write_all(head.as_bytes()).await.unwrap();
                    let _ = read_request(&mut sock).await;
                }
                let _ = closed_tx.send(());
            }
        })
        .await;
        let endpoint = Endpoint::new(format!("http://{addr}/v1/chat/completions"));
        let client = client();
        for _ in 0..2 {
            let resp = client
                .post_json(&endpoint, b"{}".to_vec(), true, HeaderMap::new(), &[])
                .await
                .unwrap();
            let mut body = Box::pin(body_stream(resp));
            assert_eq!(&body.next().await.unwrap().unwrap()[..], b"hello");
            drop(body);
            tokio::time::timeout(Duration::from_secs(5), closed.recv())
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn refused_and_cut_connections_are_connect_errors() {
        // Nothing listens: a connect error.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::new(format!(
            "http://{}/v1/chat/completions",
            listener.local_addr().unwrap()
        ));
        drop(listener);
        assert!(matches!(
            post(&client(), &endpoint).await,
            Err(ProviderError::Connect(_))
        ));

        // The upstream reads the request and closes before answering: a connect error too.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::new(format!(
            "http://{}/v1/chat/completions",
            listener.local_addr().unwrap()
        ));
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            read_request(&mut sock).await;
        });
        let err = post(&client(), &endpoint).await.unwrap_err();
        assert!(matches!(err, ProviderError::Connect(_)), "{err:?}");

        // A body cut short of its length: the body breaks off.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::new(format!(
            "http://{}/v1/chat/completions",
            listener.local_addr().unwrap()
        ));
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            read_request(&mut sock).await;
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"ok\"")
                .await
                .unwrap();
        });
        let err = post(&client(), &endpoint).await.unwrap_err();
        assert!(matches!(err, ProviderError::StreamCut(_)), "{err:?}");
    }

    #[test]
    fn a_connect_timeout_anywhere_in_the_chain_is_a_timeout() {
        /// Like hyper-util's `ConnectError`: a message over the I/O error.
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let timed_out = Wrapped(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timeout",
        ));
        assert!(matches!(
            connect_error(&timed_out),
            ProviderError::Timeout(TimeoutKind::Connect)
        ));
        let refused = Wrapped(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(
            matches!(connect_error(&refused), ProviderError::Connect(m) if m == "tcp connect error: refused")
        );
    }

    #[test]
    fn endpoint_request_line_and_host() {
        let t = Endpoint::new("http://127.0.0.1:8080/v1/chat/completions?x=1".into())
            .target
            .unwrap();
        assert_eq!(
            (t.origin.to_string().as_str(), t.host.to_str().unwrap()),
            ("/v1/chat/completions?x=1", "127.0.0.1:8080")
        );
        assert_eq!(&*t.key, "http://127.0.0.1:8080");
        let t = Endpoint::new("https://api.example.com:443/v1/messages".into())
            .target
            .unwrap();
        assert_eq!(
            (t.origin.to_string().as_str(), t.host.to_str().unwrap()),
            ("/v1/messages", "api.example.com")
        );
        assert!(Endpoint::new("ftp://x/y".into()).target.is_none());
        assert!(matches!(
            Endpoint::new("nonsense".into()).target(),
            Err(ProviderError::Connect(_))
        ));
    }
}
