//! The one way a Retort service serves gRPC. Every service (gateway, metering, breaker, distill)
//! builds its tonic services and hands them to [`Grpc`], which binds the address (port 0 picks a free
//! one), turns off Nagle, serves `grpc.health.v1` following the service's own readiness check,
//! serves reflection listing exactly the services on that port, and stops gracefully: in-flight
//! calls finish, then the task ends. With [`Grpc::authenticate`] every call but health and
//! reflection must carry a known API key, checked before its body is read ([`auth`]).
//!
//! This crate knows no service: it must never depend on a service crate.
use std::{
    convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration,
};

pub mod auth;
pub mod web;

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::{body::Body, server::NamedService, service::Routes, transport::server::TcpIncoming};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr` (port 0 picks a free one) and returns the listener with the address it got.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok((listener, local))
}

type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// What `grpc.health.v1` reports: SERVING while `check` answers true, polled every `every`. The
/// check logs its own failures (it knows what it probed).
#[derive(Clone)]
pub struct Readiness {
    every: Duration,
    check: Check,
}

impl Readiness {
    pub fn new<F, Fut>(every: Duration, check: F) -> Readiness
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        Readiness {
            every,
            check: Arc::new(move || Box::pin(check())),
        }
    }

    /// Always SERVING (a service whose readiness is only that it runs).
    pub fn always() -> Readiness {
        Readiness::new(Duration::from_secs(3600), || async { true })
    }
}

/// The services of one gRPC port, served with health and reflection.
pub struct Grpc {
    label: &'static str,
    routes: Routes,
    names: Vec<&'static str>,
    keys: Option<Arc<auth::KeyRing>>,
    /// What [`Grpc::spawn`]'s server stops on: its [`Serving`] handle sends on it.
    stop: watch::Sender<bool>,
}

impl Grpc {
    /// `label` names the server in logs (`gateway`, `metering`, …).
    pub fn new(label: &'static str) -> Grpc {
        Grpc {
            label,
            routes: Routes::default(),
            names: Vec::new(),
            keys: None,
            stop: watch::channel(false).0,
        }
    }

    /// Turns `true` when the server [`Grpc::spawn`] starts is told to stop. Server streams (a
    /// `Watch`) end on it: a graceful shutdown waits for every open call, and a stream that never
    /// ends would hold it open.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Every call but health and reflection must carry a key of `keys`; its [`Principal`] reaches
    /// the handler ([`auth::principal`]). Checked before the request's body is decoded.
    ///
    /// [`Principal`]: retort_hooks::Principal
    pub fn authenticate(mut self, keys: Arc<auth::KeyRing>) -> Grpc {
        self.keys = Some(keys);
        self
    }

    /// Adds one tonic service; reflection and health list it by its protobuf name.
    pub fn add_service<S>(mut self, svc: S) -> Grpc
    where
        S: tonic::codegen::Service<tonic::codegen::http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(svc);
        self
    }

    /// Serves on `listener` until `shutdown` resolves, then lets in-flight calls finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        readiness: Readiness,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let (health, watcher) = health_following(self.names.clone(), readiness);
        let routes = add_reflection(self.routes.add_service(health), &self.names);
        let mut router = routes
            .into_axum_router()
            .layer(axum::middleware::from_fn(auth::map_decode_errors));
        if let Some(keys) = self.keys {
            router = router.layer(axum::middleware::from_fn_with_state(keys, auth::check));
        }
        let routes = Routes::from(router);
        // No Nagle delays: the builder's tcp_nodelay only applies to listeners tonic binds itself.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        watcher.abort();
        if let Err(e) = &result {
            tracing::error!(server = self.label, error = %e, "gRPC server stopped");
        }
        result
    }

    /// Binds `addr` and serves in a task of its own until [`Serving::shutdown`].
    pub async fn spawn(
        self,
        addr: SocketAddr,
        readiness: Readiness,
    ) -> Result<Serving, ServeError> {
        let (listener, addr) = bind(addr).await?;
        let label = self.label;
        let stop = self.stop.clone();
        let mut rx = self.stopping();
        let task = tokio::spawn(async move {
            let _ = self
                .serve(listener, readiness, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        });
        tracing::info!(server = label, %addr, "listening");
        Ok(Serving { addr, stop, task })
    }
}

/// A gRPC server running in its own task.
pub struct Serving {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Serving {
    /// Stops accepting, lets in-flight calls finish, and waits for the server.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server has stopped (after a send on [`Serving::stopper`]).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that stops the server when `true` is sent.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// `grpc.health.v1` for each named service and the server as a whole (`""`), following `readiness`.
/// Returns the health service and the polling task, to abort when the server stops.
fn health_following(
    names: Vec<&'static str>,
    readiness: Readiness,
) -> (
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    JoinHandle<()>,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    let watcher = tokio::spawn(async move {
        loop {
            let status = if (readiness.check)().await {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            for name in &names {
                health.set_service_status(*name, status).await;
            }
            tokio::time::sleep(readiness.every).await;
        }
    });
    (health_service, watcher)
}

/// Adds reflection (v1 and v1alpha, for older grpcurl) advertising exactly `names`, health and itself.
fn add_reflection(routes: Routes, names: &[&'static str]) -> Routes {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(retort_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for name in names {
            b = b.with_service_name(*name);
        }
        b
    };
    match (builder().build_v1(), builder().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => routes.add_service(v1).add_service(v1alpha),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "gRPC reflection is unavailable");
            routes
        }
    }
}
