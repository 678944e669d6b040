//! `retort.v1.Distill` over gRPC: thin handlers over the [`Engine`], served by the workspace's one
//! scaffold ([`retort_server::Grpc`]: reflection, and `grpc.health.v1` tied to whether the database
//! answers).
use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use retort_proto::v1::{self as pb, distill_server::DistillServer};
use retort_server::{Grpc, Readiness, Serving};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::{DistillConfig, Error, JobState, pipeline::Engine, store::Store};

/// Inline data may be this large (training sets of a few hundred MB should be given as paths).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

pub struct DistillService {
    pub engine: Arc<Engine>,
    /// Ends `Watch` streams when the server shuts down.
    pub stopping: watch::Receiver<bool>,
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::JobProgress, Status>> + Send>>;

#[tonic::async_trait]
impl pb::distill_server::Distill for DistillService {
    async fn submit(
        &self,
        r: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let job_id = self.engine.submit(r.into_inner()).await?;
        Ok(Response::new(pb::SubmitResponse { job_id }))
    }

    type WatchStream = ProgressStream;

    async fn watch(
        &self,
        r: Request<pb::WatchJobRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let id = r.into_inner().job_id;
        let row = self
            .engine
            .store
            .job(&id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no job {id:?}")))?;
        let unfinished = row.state.is_unfinished();
        let stored = row.progress_json.clone();
        let here = self.engine.is_live(&id);
        let job = self.engine.to_pb(row).await?;
        let rx = match self.engine.subscribe(&id, here, &stored) {
            Some(rx) => rx,
            None if unfinished => {
                // Run by another process (or waiting for one to take it over): follow what it
                // stores with its lease every second.
                let s = poll_store(
                    Arc::clone(&self.engine),
                    id,
                    job.progress.unwrap_or_default(),
                );
                let mut stopping = self.stopping.clone();
                let s = futures::StreamExt::take_until(s, async move {
                    let _ = stopping.wait_for(|s| *s).await;
                });
                return Ok(Response::new(Box::pin(s)));
            }
            None => {
                // Ended: one snapshot from the store.
                let p = job.progress.unwrap_or_default();
                return Ok(Response::new(Box::pin(futures::stream::iter([Ok(p)]))));
            }
        };
        let s = futures::stream::unfold(
            (rx, false, true, id),
            |(mut rx, ended, first, id)| async move {
                if ended {
                    return None;
                }
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let p = rx.borrow_and_update().to_pb(&id);
                let end = p.done;
                Some((Ok(p), (rx, end, false, id)))
            },
        );
        let mut stopping = self.stopping.clone();
        let s = futures::StreamExt::take_until(s, async move {
            let _ = stopping.wait_for(|s| *s).await;
        });
        Ok(Response::new(Box::pin(s)))
    }

    async fn get(&self, r: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        Ok(Response::new(
            self.engine.job(&r.into_inner().job_id).await?,
        ))
    }

    async fn list(
        &self,
        r: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let limit = match r.into_inner().limit {
            0 => 50,
            n => i64::from(n.min(10_000)),
        };
        let mut jobs = Vec::new();
        for row in self.engine.store.jobs(limit).await? {
            jobs.push(self.engine.to_pb(row).await?);
        }
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn cancel(&self, r: Request<pb::CancelJobRequest>) -> Result<Response<pb::Job>, Status> {
        Ok(Response::new(
            self.engine.cancel(&r.into_inner().job_id).await?,
        ))
    }

    async fn report(
        &self,
        r: Request<pb::JobReportRequest>,
    ) -> Result<Response<pb::JobReportResponse>, Status> {
        let (json, markdown) = self.engine.report_of(&r.into_inner().job_id).await?;
        Ok(Response::new(pb::JobReportResponse { json, markdown }))
    }

    async fn deploy(
        &self,
        r: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        Ok(Response::new(self.engine.deploy(r.into_inner()).await?))
    }
}

/// How often a `Watch` of a job run by another process reads the store.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// The progress of a job run elsewhere, as stored: the current one at once, then each change, and
/// the final state (`done`) when the job ends.
fn poll_store(
    engine: Arc<Engine>,
    id: String,
    first: pb::JobProgress,
) -> impl Stream<Item = Result<pb::JobProgress, Status>> + Send {
    futures::stream::unfold(
        (engine, id, Some(first), None::<pb::JobProgress>),
        |(engine, id, first, last)| async move {
            if let Some(p) = first {
                return Some((Ok(p.clone()), (engine, id, None, Some(p))));
            }
            let last = last?;
            if last.done {
                return None;
            }
            loop {
                tokio::time::sleep(POLL_EVERY).await;
                let row = match engine.store.job(&id).await {
                    Ok(Some(row)) => row,
                    Ok(None) => return None,
                    // The database is away: keep waiting, as for a job that is slow.
                    Err(_) => continue,
                };
                let ended = !row.state.is_unfinished();
                let mut p: pb::JobProgress =
                    serde_json::from_str::<crate::pipeline::Progress>(&row.progress_json)
                        .unwrap_or_default()
                        .to_pb(&id);
                if ended {
                    p.done = true;
                    p.state = row.state.as_str().into();
                    if p.error.is_empty() && row.state != JobState::Succeeded {
                        p.error = row.error.clone();
                    }
                }
                if p != last {
                    return Some((Ok(p.clone()), (engine, id, None, Some(p))));
                }
            }
        },
    )
}

/// A running distill service.
pub struct Running {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    /// Its stop signal also ends the `Watch` streams ([`Grpc::stopping`]).
    server: Serving,
}

impl Running {
    /// Stops serving (jobs in flight are interrupted where they stand and resume at the next start).
    pub async fn shutdown(self) {
        self.engine.stop().await;
        self.server.shutdown().await;
        self.engine.store.close().await;
    }

    /// Stops as a crash would: job tasks are aborted, nothing is recorded.
    pub async fn kill(self) {
        self.engine.kill();
        self.server.shutdown().await;
        self.engine.store.close().await;
    }

    /// Waits until the server has stopped (after `true` is sent on [`Running::stopper`]).
    pub async fn wait(self) {
        self.server.wait().await;
    }

    /// A handle that stops the server (and ends `Watch` streams) when `true` is sent.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.server.stopper()
    }
}

/// Opens the store, resumes unfinished jobs and serves `retort.v1.Distill` on `cfg.grpc_addr`.
pub async fn start(
    cfg: DistillConfig,
    prices: Vec<retort_pricing::Price>,
) -> Result<Running, Error> {
    let engine = Engine::open(cfg, prices).await?;
    serve(engine).await
}

/// Like [`start`] with an already opened store (tests isolate runs with it).
pub async fn start_with_store(
    cfg: DistillConfig,
    prices: Vec<retort_pricing::Price>,
    store: Store,
) -> Result<Running, Error> {
    serve(Engine::with_store(cfg, prices, store)?).await
}

async fn serve(engine: Arc<Engine>) -> Result<Running, Error> {
    let grpc = Grpc::new("distill");
    let svc = DistillService {
        engine: Arc::clone(&engine),
        stopping: grpc.stopping(),
    };
    // Health follows the database.
    let readiness = Readiness::new(Duration::from_secs(1), {
        let e = Arc::clone(&engine);
        move || {
            let e = Arc::clone(&e);
            async move {
                e.store
                    .ping()
                    .await
                    .map_err(|err| tracing::warn!(error = %err, "distill database unreachable"))
                    .is_ok()
            }
        }
    });
    let server = grpc
        .add_service(
            DistillServer::new(svc)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(64 << 20),
        )
        .spawn(engine.cfg.grpc_addr, readiness)
        .await?;
    // Bound first, so that a taken port fails the start before any job is resumed.
    let resumed = match engine.resume_all().await {
        Ok(n) => n,
        Err(e) => {
            server.shutdown().await;
            return Err(e);
        }
    };
    engine.start_keeper();
    let addr = server.addr;
    tracing::info!(%addr, db = engine.store.kind(), resumed, "distill listening");
    Ok(Running {
        addr,
        engine,
        server,
    })
}
