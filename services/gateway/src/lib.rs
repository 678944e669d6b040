//! The Retort gateway: one endpoint — OpenAI Chat Completions, OpenAI Responses, Anthropic Messages
//! and gRPC — in front of every model provider, with per-request failover, retries, timeouts and
//! a circuit per provider target. It never waits on metering and never retries outside the router.
pub mod auth;
pub mod circuit;
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

pub use router::Gateway;

use std::{net::SocketAddr, sync::Arc};

use tokio::{sync::watch, task::JoinHandle};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An address could not be bound (it names the address; the cause is its source).
    #[error(transparent)]
    Bind(#[from] retort_server::ServeError),
    #[error("cannot build the HTTP client of a provider")]
    Client(#[from] provider::client::ClientError),
}

/// A running gateway (HTTP and gRPC). Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
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
    let gateway = Arc::new(Gateway::new(Arc::clone(&cfg), metrics, hooks)?);
    start_with(gateway, extra).await
}

/// Serves an already built gateway (plus `extra` HTTP routes).
pub async fn start_with(gateway: Arc<Gateway>, extra: axum::Router) -> Result<Running, StartError> {
    let (http_listener, http_addr) = retort_server::bind(gateway.cfg.server.http_addr).await?;
    let (grpc_listener, grpc_addr) = retort_server::bind(gateway.cfg.server.grpc_addr).await?;
    let (stop, rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http_task = tokio::spawn({
        let gateway = Arc::clone(&gateway);
        let rx = rx.clone();
        async move {
            if let Err(e) = http::serve(http_listener, gateway, extra, stopped(rx)).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }
    });
    let grpc_task = tokio::spawn({
        let gateway = Arc::clone(&gateway);
        async move {
            // The server scaffold logs its own failure.
            let _ = grpc::serve(grpc_listener, gateway, stopped(rx)).await;
        }
    });
    tracing::info!(%http_addr, %grpc_addr, "gateway listening");
    Ok(Running {
        http_addr,
        grpc_addr,
        gateway,
        stop,
        tasks: vec![http_task, grpc_task],
    })
}
