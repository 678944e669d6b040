//! The HTTP client the provider adapters send through: hyper's pooled client (HTTP/1.1, or HTTP/2 with
//! prior knowledge), TLS by rustls with the Mozilla roots compiled in (nothing read from the system or
//! the network), TCP_NODELAY and a connect timeout.
//!
//! It replaces reqwest on the hot path: reqwest re-parsed the URL twice per request (redirect policy
//! and response URL) and ran redirect and retry layers the router never uses — a third of the
//! gateway's instructions per proxied request (callgrind, bench scenario a).
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt, BodyStream, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{ProviderError, TimeoutKind, common::error_chain};
use crate::config::ProviderConfig;

/// Why a provider's client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS: {0}")]
pub struct ClientError(String);

/// One provider's pooled HTTP client.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// An upstream endpoint, parsed once when the provider is built.
#[derive(Debug, Clone)]
pub struct Endpoint {
    uri: Option<Uri>,
    text: String,
}

impl Endpoint {
    pub fn new(text: String) -> Endpoint {
        let uri = text
            .parse::<Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
        Endpoint { uri, text }
    }

    fn uri(&self) -> Result<&Uri, ProviderError> {
        self.uri.as_ref().ok_or_else(|| ProviderError::Connect(format!("invalid provider URL {}", self.text)))
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
            .map_err(|e| ClientError(e.to_string()))?
            .https_or_http();
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(90)).pool_max_idle_per_host(1024);
        let connector = if cfg.http2 {
            builder.http2_only(true).http2_adaptive_window(true);
            tls.enable_http2().wrap_connector(http)
        } else {
            tls.enable_http1().wrap_connector(http)
        };
        Ok(HttpClient { inner: builder.build(connector) })
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
    ) -> Result<Response<Incoming>, ProviderError> {
        let mut req = Request::post(endpoint.uri()?.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ProviderError::Connect(format!("cannot build the upstream request: {e}")))?;
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if stream {
            headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        for (k, v) in extra {
            match (header::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                (Ok(k), Ok(v)) => {
                    headers.insert(k, v);
                }
                _ => return Err(ProviderError::Connect(format!("configured header {k} is not a valid HTTP header"))),
            }
        }
        *req.headers_mut() = headers;
        let resp = self.inner.request(req).await.map_err(|e| transport_error(&e))?;
        if !resp.status().is_success() {
            return Err(super::common::status_error(resp).await);
        }
        Ok(resp)
    }
}

/// Classifies a transport error: a connect timeout, a failed connect, or a connection that broke
/// before the response head arrived.
fn transport_error(e: &hyper_util::client::legacy::Error) -> ProviderError {
    let timed_out = {
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        let mut found = false;
        while let Some(s) = src {
            if s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
                found = true;
                break;
            }
            src = s.source();
        }
        found
    };
    if e.is_connect() && timed_out {
        ProviderError::Timeout(TimeoutKind::Connect)
    } else {
        ProviderError::Connect(error_chain(e))
    }
}

/// The whole response body (at most `limit` bytes); a body that breaks off is a `StreamCut`.
pub async fn read_body(resp: Response<Incoming>, limit: usize) -> Result<Bytes, ProviderError> {
    Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ProviderError::StreamCut(format!("upstream body: {e}")))
}

/// The response body as a stream of data chunks (trailers skipped).
pub fn body_stream(resp: Response<Incoming>) -> impl Stream<Item = Result<Bytes, hyper::Error>> + Send + 'static {
    use futures::StreamExt;
    BodyStream::new(resp.into_body()).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(e)),
        }
    })
}
