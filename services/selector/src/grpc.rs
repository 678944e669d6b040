//! `retort.v1.Selector` over gRPC, served by the workspace's scaffold ([`retort_server::Grpc`]:
//! the key check before a call is decoded, reflection, and health tied to the database).
use std::{net::SocketAddr, sync::Arc, time::Duration};

use retort_hooks::{Principal, Role};
use retort_proto::v1::{self as pb, selector_server::SelectorServer};
use retort_server::{Grpc, Readiness, Serving, auth::KeyRing};
use tonic::{Request, Response, Status};

use crate::{Error, SelectorConfig, convert, model::Model, store::Store};

/// Runs one Record may carry.
const MAX_RUNS_PER_RECORD: usize = 10_000;

pub struct SelectorService {
    pub model: Arc<Model>,
}

fn caller<T>(r: &Request<T>) -> Result<&Principal, Status> {
    retort_server::auth::principal(r)
}

#[tonic::async_trait]
impl pb::selector_server::Selector for SelectorService {
    async fn record(
        &self,
        r: Request<pb::RecordRequest>,
    ) -> Result<Response<pb::RecordResponse>, Status> {
        let who = caller(&r)?;
        if !matches!(who.role, Role::Service | Role::Admin) {
            return Err(Error::PermissionDenied(format!(
                "Record: {} is a {}; only service identities and admins record runs",
                who.identity.user,
                who.role.as_str()
            ))
            .into());
        }
        let req = r.into_inner();
        if req.runs.is_empty() {
            return Err(Error::InvalidArgument("runs: none given".into()).into());
        }
        if req.runs.len() > MAX_RUNS_PER_RECORD {
            return Err(Error::InvalidArgument(format!(
                "runs: {} in one call, at most {MAX_RUNS_PER_RECORD}",
                req.runs.len()
            ))
            .into());
        }
        let runs = req
            .runs
            .iter()
            .enumerate()
            .map(|(i, run)| {
                convert::run(run).map_err(|e| Error::InvalidArgument(format!("runs[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let recorded = runs.len() as u64;
        let retrained = self.model.record(runs).await?;
        Ok(Response::new(pb::RecordResponse {
            recorded,
            runs: self.model.status().runs,
            retrained,
        }))
    }

    async fn recommend(
        &self,
        r: Request<pb::RecommendRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        caller(&r)?;
        let req = r.into_inner();
        let ctx = convert::context(req.task.as_ref())?;
        let objective = convert::objective(req.objective.as_ref())?;
        let probes = req
            .probes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let e = convert::run(p)
                    .map_err(|e| Error::InvalidArgument(format!("probes[{i}]: {e}")))?;
                if e.arm.class.task() != ctx.kind {
                    return Err(Error::InvalidArgument(format!(
                        "probes[{i}]: {} does not serve a {} task",
                        e.arm, ctx.kind
                    )));
                }
                Ok(e)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let draws = match req.draws {
            0 => 64,
            n => n.min(1000) as usize,
        };
        let described = objective.describe();
        let rec = self
            .model
            .recommend(ctx, objective, probes, draws, req.seed)
            .await?;
        Ok(Response::new(pb::RecommendResponse {
            keep_teacher: rec.keep_teacher(),
            arms: rec.ranked.iter().map(convert::ranked).collect(),
            runs: rec.experiences as u64,
            tasks: rec.tasks as u64,
            objective: described,
        }))
    }

    async fn status(
        &self,
        r: Request<pb::SelectorStatusRequest>,
    ) -> Result<Response<pb::SelectorStatus>, Status> {
        caller(&r)?;
        Ok(Response::new(self.model.status()))
    }

    async fn retrain(
        &self,
        r: Request<pb::RetrainRequest>,
    ) -> Result<Response<pb::SelectorStatus>, Status> {
        let who = caller(&r)?;
        if !who.is_admin() {
            return Err(Error::PermissionDenied(format!(
                "Retrain: {} is not an admin",
                who.identity.user
            ))
            .into());
        }
        Ok(Response::new(self.model.retrain().await?))
    }
}

/// A running selector.
pub struct Running {
    pub addr: SocketAddr,
    pub model: Arc<Model>,
    server: Serving,
}

impl Running {
    /// Stops serving (in-flight calls finish) and closes the store.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
        self.model.store.close().await;
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) {
        self.server.wait().await;
    }

    /// A handle that stops the server when `true` is sent.
    pub fn stopper(&self) -> tokio::sync::watch::Sender<bool> {
        self.server.stopper()
    }
}

/// Opens the store, restores the model and serves `retort.v1.Selector` on `cfg.grpc_addr`, every
/// call checked against `keys`.
pub async fn start(cfg: SelectorConfig, keys: Arc<KeyRing>) -> Result<Running, Error> {
    if !cfg.data_dir.as_os_str().is_empty() {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| Error::Io {
            context: format!("creating {}", cfg.data_dir.display()),
            source,
        })?;
    }
    let store = Store::connect(&cfg.database_url(), cfg.database_schema.as_deref()).await?;
    let addr = cfg.grpc_addr;
    let model = Arc::new(Model::open(cfg, store).await?);
    let readiness = Readiness::new(Duration::from_secs(1), {
        let m = Arc::clone(&model);
        move || {
            let m = Arc::clone(&m);
            async move {
                m.store
                    .ping()
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "selector database unreachable"))
                    .is_ok()
            }
        }
    });
    let server = Grpc::new("selector")
        .authenticate(keys)
        .add_service(SelectorServer::new(SelectorService {
            model: Arc::clone(&model),
        }))
        .spawn(addr, readiness)
        .await?;
    tracing::info!(addr = %server.addr, db = model.store.kind(), "selector listening");
    Ok(Running {
        addr: server.addr,
        model,
        server,
    })
}
