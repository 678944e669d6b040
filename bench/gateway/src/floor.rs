//! The floor: a bare pass-through HTTP/1 proxy on hyper. No parsing, no auth, no routing: it
//! forwards method, path, headers and body to one upstream over pooled keep-alive connections
//! (TCP_NODELAY on both sides) and streams the response back frame by frame. Whatever a gateway
//! does, it cannot add less than this.

use std::{convert::Infallible, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpListener;

type Upstream = Client<HttpConnector, Incoming>;
type Body = Either<Incoming, Full<Bytes>>;

/// What the proxy forwards to: `http://HOST:PORT` (any path in it is ignored).
struct Floor {
    client: Upstream,
    scheme_authority: String,
}

/// The pooled upstream client: keep-alive, no limit on idle connections per host, TCP_NODELAY.
fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

impl Floor {
    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        match format!("{}{pq}", self.scheme_authority).parse::<Uri>() {
            Ok(uri) => parts.uri = uri,
            Err(_) => return error(StatusCode::BAD_REQUEST, "bad request target"),
        }
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(resp) => resp.map(Either::Left),
            Err(_) => error(StatusCode::BAD_GATEWAY, "upstream request failed"),
        }
    }
}

fn error(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(msg.as_bytes()))));
    *resp.status_mut() = status;
    resp
}

/// Serves the floor proxy on `listener`, forwarding to `upstream` (`http://127.0.0.1:PORT`), until
/// the future is dropped.
pub async fn serve(listener: TcpListener, upstream: &str) -> anyhow::Result<()> {
    let uri: Uri = upstream
        .parse()
        .with_context(|| format!("upstream {upstream:?} is no URL"))?;
    let authority = uri
        .authority()
        .with_context(|| format!("upstream {upstream:?} has no host:port"))?;
    let floor = Arc::new(Floor {
        client: upstream_client(),
        scheme_authority: format!("http://{authority}"),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // Out of descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let floor = Arc::clone(&floor);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let floor = Arc::clone(&floor);
                async move { Ok::<_, Infallible>(floor.forward(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
