//! The Retort gateway: one endpoint — OpenAI Chat Completions, OpenAI Responses, Anthropic Messages
//! and gRPC — in front of every model provider, with per-request failover, retries, timeouts and
//! provider circuit breakers. It never waits on metering and never retries outside the router.
pub mod auth;
pub mod breaker;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod ingress;
mod inline;

/// The usage and spend hooks (and the identity and usage types) live in `retort-hooks`, shared
/// with the services that implement them.
pub use retort_hooks as hooks;
pub mod metrics;
pub mod provider;
pub mod router;
pub mod routes;
#[cfg(feature = "students")]
pub mod students;
pub mod types;

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client of a provider: {0}")]
    Client(#[from] provider::client::ClientError),
}

/// A running gateway (HTTP and gRPC). Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub router: Arc<router::Router>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and waits for both servers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Waits until both servers have stopped.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }

    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Binds the configured addresses (port 0 picks a free one) and serves HTTP and gRPC.
pub async fn start(cfg: config::Config) -> Result<Running, StartError> {
    start_with_hooks(cfg, hooks::Hooks::default(), axum::Router::new()).await
}

/// Like [`start`], with metering and spend hooks, and extra HTTP routes (dashboard pages, service
/// JSON APIs) served on the gateway's HTTP listener. `extra` must not set a fallback.
pub async fn start_with_hooks(
    cfg: config::Config,
    hooks: hooks::Hooks,
    extra: axum::Router,
) -> Result<Running, StartError> {
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(metrics::Metrics::new());
    let router = Arc::new(router::Router::new(Arc::clone(&cfg), metrics, hooks)?);
    start_with(router, extra).await
}

/// Serves an already built router (plus `extra` HTTP routes).
pub async fn start_with(
    router: Arc<router::Router>,
    extra: axum::Router,
) -> Result<Running, StartError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let http_listener = bind(router.cfg.server.http_addr).await?;
    let grpc_listener = bind(router.cfg.server.grpc_addr).await?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: router.cfg.server.http_addr,
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: router.cfg.server.grpc_addr,
            source,
        })?;
    let (stop, rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http_task = tokio::spawn({
        let router = Arc::clone(&router);
        let rx = rx.clone();
        async move {
            if let Err(e) = http::serve(http_listener, router, extra, stopped(rx)).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }
    });
    let grpc_task = tokio::spawn({
        let router = Arc::clone(&router);
        async move {
            if let Err(e) = grpc::serve(grpc_listener, router, stopped(rx)).await {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        }
    });
    tracing::info!(%http_addr, %grpc_addr, "gateway listening");
    Ok(Running {
        http_addr,
        grpc_addr,
        router,
        stop,
        tasks: vec![http_task, grpc_task],
    })
}
