//! Retort metering: every attempt the gateway makes arrives as a usage event, is priced with the
//! versioned price table when it is recorded (the price version is stored beside the cost), and
//! lands in SQLite or Postgres with hourly rollups that keep the dashboard's queries fast. It
//! serves `retort.v1.Metering` (gRPC, with reflection and health), the same queries as JSON under
//! `/api/usage/...`, and the `/dashboard` page. [`client::MeteringSink`] is the gateway's side: a
//! bounded queue, batches over the client-streaming RPC, and an on-disk spool while metering is away.
//!
//! It must never drop an event it was given: unknown users and models are recorded and flagged,
//! malformed events are rejected by name, and the client spools what it cannot deliver.
pub mod client;
pub mod config;
pub mod convert;
pub mod error;
pub mod http;
pub mod pricing;
pub mod query;
pub mod service;
pub mod spool;
pub mod store;
/// Epoch milliseconds, UTC days and labels: the workspace's one calendar (`retort_time`), under the
/// path metering's callers have always used.
pub use retort_time as time;

use std::{net::SocketAddr, sync::Arc};

use tokio::{sync::watch, task::JoinHandle};

pub use config::MeteringConfig;
pub use error::MeteringError;
pub use store::Store;

/// A running metering service: its gRPC server, the retention job, and the domain state that the
/// HTTP routes ([`Running::http_router`]) share.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub metering: Arc<service::Metering>,
    keys: Option<Arc<retort_server::auth::KeyRing>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The dashboard and the JSON API, to merge into another HTTP listener (the gateway's).
    pub fn http_router(&self) -> axum::Router {
        http::router_with_keys(Arc::clone(&self.metering), self.keys.clone())
    }

    /// Stops the gRPC server (in-flight calls finish) and the background jobs.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Opens the store (running migrations), loads the configured prices (the database keeps entries
/// edited at runtime), and serves gRPC on `cfg.grpc_addr` (port 0 picks a free one).
pub async fn start(
    cfg: &MeteringConfig,
    prices: Vec<retort_pricing::Price>,
) -> Result<Running, MeteringError> {
    let store = Store::connect(&cfg.store_options()?).await?;
    start_with_store(cfg, store, prices).await
}

/// Like [`start`], with an already opened store.
pub async fn start_with_store(
    cfg: &MeteringConfig,
    store: Store,
    prices: Vec<retort_pricing::Price>,
) -> Result<Running, MeteringError> {
    let table = pricing::Prices::load(&store, prices).await?;
    let metering = Arc::new(service::Metering::new(store, table));
    let (listener, grpc_addr) = retort_server::bind(cfg.grpc_addr)
        .await
        .map_err(|e| match e {
            retort_server::ServeError::Bind { addr, source } => {
                MeteringError::Bind { addr, source }
            }
        })?;
    let (stop, rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let grpc = tokio::spawn({
        let m = Arc::clone(&metering);
        let rx = rx.clone();
        let keys = cfg.keys.clone();
        async move {
            // The scaffold logs a server that stops on an error.
            let _ = service::serve(listener, m, keys, stopped(rx)).await;
        }
    });
    let retention = tokio::spawn({
        let m = Arc::clone(&metering);
        let days = cfg.retention_days;
        async move {
            let mut rx = rx;
            loop {
                if days > 0 {
                    let cutoff = time::now_ms() - i64::from(days) * time::DAY_MS;
                    match m.store.delete_events_before(cutoff).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            deleted = n,
                            days,
                            "metering: raw events past retention deleted (rollups kept)"
                        ),
                        Err(e) => tracing::warn!(error = %e, "metering: retention job failed"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                    _ = rx.wait_for(|s| *s) => break,
                }
            }
        }
    });
    tracing::info!(%grpc_addr, store = metering.store.kind(), "metering listening");
    Ok(Running {
        grpc_addr,
        metering,
        keys: cfg.keys.clone(),
        stop,
        tasks: vec![grpc, retention],
    })
}
