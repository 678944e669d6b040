//! `retort.v1.Breaker` over gRPC: thin handlers over [`Breaker`], reflection (v1 and v1alpha) and
//! `grpc.health.v1` tied to whether the state store answers.
use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use retort_proto::v1::{self as pb, breaker_server::BreakerServer};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};

use crate::{Error, config::SpendConfig, core::Breaker, store::Store};

pub struct BreakerService {
    pub breaker: Arc<Breaker>,
    /// Ends `Watch` streams when the server shuts down (graceful shutdown waits for every stream).
    pub stopping: watch::Receiver<bool>,
}

fn by<T>(req: &Request<T>, given: &str) -> String {
    if !given.is_empty() {
        return given.to_owned();
    }
    req.remote_addr()
        .map_or_else(|| "grpc".into(), |a| format!("grpc {a}"))
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::Alert, Status>> + Send>>;

#[tonic::async_trait]
impl pb::breaker_server::Breaker for BreakerService {
    async fn report(
        &self,
        r: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let r = r.into_inner();
        let blocked = self
            .breaker
            .record(r.usage, false, &r.gateway_id, &r.batch_id)
            .await?;
        Ok(Response::new(pb::ReportResponse { blocked }))
    }

    async fn settle(
        &self,
        r: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let r = r.into_inner();
        let blocked = self
            .breaker
            .record(r.usage, true, &r.gateway_id, &r.batch_id)
            .await?;
        Ok(Response::new(pb::ReportResponse { blocked }))
    }

    async fn lease(
        &self,
        r: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let r = r.into_inner();
        let mut grants = Vec::new();
        for ask in &r.asks {
            grants.push(self.breaker.lease(ask, &r.gateway_id).await?);
        }
        Ok(Response::new(pb::LeaseResponse {
            grants,
            blocked: self.breaker.blocked().await?,
            lease_ttl_ms: self.breaker.lease_ttl_ms(),
        }))
    }

    type WatchStream = AlertStream;

    async fn watch(&self, r: Request<pb::WatchRequest>) -> Result<Response<AlertStream>, Status> {
        let user = r.into_inner().user;
        let s = BroadcastStream::new(self.breaker.subscribe()).filter_map(move |a| match a {
            Ok(a) if user.is_empty() || a.user == user => Some(Ok(a)),
            Ok(_) => None,
            Err(_) => Some(Err(Status::data_loss(
                "alerts were dropped: this watcher fell behind",
            ))),
        });
        let mut stopping = self.stopping.clone();
        let s = futures::StreamExt::take_until(s, async move {
            let _ = stopping.wait_for(|s| *s).await;
        });
        Ok(Response::new(Box::pin(s)))
    }

    async fn confirm(
        &self,
        r: Request<pb::SessionAction>,
    ) -> Result<Response<pb::Session>, Status> {
        let who = by(&r, &r.get_ref().by);
        let a = r.into_inner();
        let s = self.breaker.confirm(&a.session_id, &a.user, &who).await?;
        Ok(Response::new(self.breaker.to_pb(&s)))
    }

    async fn stop(&self, r: Request<pb::SessionAction>) -> Result<Response<pb::Session>, Status> {
        let who = by(&r, &r.get_ref().by);
        let a = r.into_inner();
        let s = self.breaker.stop(&a.session_id, &a.user, &who).await?;
        Ok(Response::new(self.breaker.to_pb(&s)))
    }

    async fn get_session(
        &self,
        r: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let a = r.into_inner();
        let (s, _) = self.breaker.find(&a.session_id, &a.user).await?;
        Ok(Response::new(self.breaker.to_pb(&s)))
    }

    async fn list_sessions(
        &self,
        r: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let user = r.into_inner().user;
        let mut sessions: Vec<_> = self
            .breaker
            .store
            .list_sessions()
            .await
            .map_err(Status::from)?;
        sessions.retain(|s| user.is_empty() || s.user == user);
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_ms));
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.iter().map(|s| self.breaker.to_pb(s)).collect(),
        }))
    }

    async fn set_policies(
        &self,
        r: Request<pb::SetPoliciesRequest>,
    ) -> Result<Response<pb::SetPoliciesResponse>, Status> {
        let (policies, budgets) = self.breaker.set_policies(&r.into_inner().toml)?;
        Ok(Response::new(pb::SetPoliciesResponse {
            policies: policies as u32,
            budgets: budgets as u32,
        }))
    }

    async fn get_budgets(
        &self,
        r: Request<pb::GetBudgetsRequest>,
    ) -> Result<Response<pb::GetBudgetsResponse>, Status> {
        let budgets = self.breaker.budgets(&r.into_inner().principal).await?;
        Ok(Response::new(pb::GetBudgetsResponse { budgets }))
    }
}

/// A running breaker service.
pub struct Running {
    pub addr: SocketAddr,
    pub breaker: Arc<Breaker>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    pub async fn wait(self) {
        let _ = self.task.await;
    }

    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Opens the store (Redis when configured), loads the policies and serves `retort.v1.Breaker`.
pub async fn start(cfg: &SpendConfig) -> Result<Running, Error> {
    let store = match &cfg.redis_url {
        Some(url) => Store::redis(url, &cfg.key_prefix).await?,
        None => Store::memory(),
    };
    let public = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let breaker = Breaker::new(store, cfg.policies.clone(), public).await?;
    breaker.set_lease_ttl_ms(cfg.lease_ttl_ms);
    serve(cfg.grpc_addr, breaker).await
}

pub async fn serve(addr: SocketAddr, breaker: Arc<Breaker>) -> Result<Running, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let name = <BreakerServer<BreakerService> as tonic::server::NamedService>::NAME;
    // Health follows the store: NOT_SERVING while Redis does not answer.
    let (health_service, watcher) =
        retort_proto::health_following(name, Duration::from_millis(500), {
            let b = Arc::clone(&breaker);
            move || {
                let b = Arc::clone(&b);
                async move {
                    b.store
                        .ping()
                        .await
                        .map_err(|e| tracing::warn!(error = %e, "breaker state store unreachable"))
                        .is_ok()
                }
            }
        });
    let (stop, mut rx) = watch::channel(false);
    let svc = BreakerService {
        breaker: Arc::clone(&breaker),
        stopping: rx.clone(),
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    let mut routes = builder
        .add_service(health_service)
        .add_service(BreakerServer::new(svc).max_decoding_message_size(16 << 20));
    routes = retort_proto::add_reflection(routes);
    let task = tokio::spawn(async move {
        let r = routes
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await;
        watcher.abort();
        if let Err(e) = r {
            tracing::error!(error = %e, "breaker gRPC server stopped");
        }
    });
    tracing::info!(%addr, "breaker listening");
    Ok(Running {
        addr,
        breaker,
        stop,
        task,
    })
}
