//! `retort.v1.Distill` over gRPC: thin handlers over the [`Engine`], served by the workspace's one
//! scaffold ([`retort_server::Grpc`]: reflection, and `grpc.health.v1` tied to whether the database
//! answers).
use std::{
    collections::HashMap,
    io::Read,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::Stream;
use retort_proto::v1::{self as pb, distill_server::DistillServer};
use retort_server::{
    Grpc, Readiness, Serving,
    auth::{Caller, require},
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::{DistillConfig, Error, JobState, pipeline::Engine, store::Store};

/// Inline data may be this large (training sets of a few hundred MB should be given as paths).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Who submitted a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Owner {
    user: String,
    team: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    /// Job id → who submitted it.
    jobs: HashMap<String, Owner>,
    /// Student name → who deployed it first (`distilled/NAME` is theirs).
    names: HashMap<String, String>,
}

/// Who owns which job and which student name, kept in `distill-owners.json` (owner-only) in the
/// data directory. A job without a recorded owner is for admins only.
pub struct Owners {
    path: PathBuf,
    book: Mutex<Book>,
}

impl Owners {
    pub fn open(path: PathBuf) -> Owners {
        let book = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "distill: the owners file is unreadable; jobs without an owner are for admins only");
                Book::default()
            }),
            Err(_) => Book::default(),
        };
        Owners {
            path,
            book: Mutex::new(book),
        }
    }

    fn save(&self, book: &Book) {
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            std::io::Write::write_all(&mut f, &serde_json::to_vec(book).unwrap_or_default())?;
            std::fs::rename(&tmp, &self.path)
        };
        if let Err(e) = write() {
            tracing::error!(path = %self.path.display(), error = %e, "distill: cannot record job and name owners");
        }
    }

    fn job(&self, id: &str) -> Option<Owner> {
        self.book.lock().ok()?.jobs.get(id).cloned()
    }

    fn set_job(&self, id: &str, owner: Owner) {
        if let Ok(mut b) = self.book.lock() {
            b.jobs.insert(id.to_owned(), owner);
            self.save(&b);
        }
    }

    fn jobs_of(&self, user: &str) -> Vec<String> {
        self.book
            .lock()
            .map(|b| {
                b.jobs
                    .iter()
                    .filter(|(_, o)| o.user == user)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Claims `name` for `user`: free names are taken, a name already theirs stays theirs; another
    /// user's is refused unless `admin`. Returns whether the claim is new (to give back on failure).
    fn claim_name(&self, name: &str, user: &str, admin: bool) -> Result<bool, Status> {
        let mut b = self
            .book
            .lock()
            .map_err(|_| Status::internal("owners book poisoned"))?;
        match b.names.get(name) {
            Some(owner) if owner == user => Ok(false),
            Some(owner) if !admin => Err(Status::permission_denied(format!(
                "permission denied: distilled/{name} belongs to {owner}, who deployed it first (pick another name)"
            ))),
            Some(_) => Ok(false),
            None => {
                b.names.insert(name.to_owned(), user.to_owned());
                self.save(&b);
                Ok(true)
            }
        }
    }

    fn release_name(&self, name: &str) {
        if let Ok(mut b) = self.book.lock() {
            b.names.remove(name);
            self.save(&b);
        }
    }
}

pub struct DistillService {
    pub engine: Arc<Engine>,
    pub owners: Arc<Owners>,
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
        let caller = Caller::of(&r);
        let mut req = r.into_inner();
        self.admit_submit(&caller, &mut req).await?;
        let job_id = self.engine.submit(req).await?;
        if let Caller::Key(p) = &caller {
            self.owners.set_job(
                &job_id,
                Owner {
                    user: p.identity.user.clone(),
                    team: p.identity.team.clone(),
                },
            );
            tracing::info!(job = %job_id, by = %p.identity.user, "distill: job submitted");
        }
        Ok(Response::new(pb::SubmitResponse { job_id }))
    }

    type WatchStream = ProgressStream;

    async fn watch(
        &self,
        r: Request<pb::WatchJobRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let caller = Caller::of(&r);
        let id = r.into_inner().job_id;
        self.owner_or_admin(&caller, &id)?;
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
        let caller = Caller::of(&r);
        let id = r.into_inner().job_id;
        self.owner_or_admin(&caller, &id)?;
        Ok(Response::new(self.engine.job(&id).await?))
    }

    async fn list(
        &self,
        r: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = Caller::of(&r);
        let limit = match r.into_inner().limit {
            0 => 50,
            n => i64::from(n.min(10_000)),
        };
        let mut jobs = Vec::new();
        for row in self.engine.store.jobs(limit).await? {
            // Only the jobs the caller may see (their own; a team admin their team's; admins all).
            if self.owner_or_admin(&caller, &row.id).is_ok() {
                jobs.push(self.engine.to_pb(row).await?);
            }
        }
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn cancel(&self, r: Request<pb::CancelJobRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = Caller::of(&r);
        let id = r.into_inner().job_id;
        self.owner_or_admin(&caller, &id)?;
        tracing::info!(job = %id, by = caller.name(), "distill: job cancelled");
        Ok(Response::new(self.engine.cancel(&id).await?))
    }

    async fn report(
        &self,
        r: Request<pb::JobReportRequest>,
    ) -> Result<Response<pb::JobReportResponse>, Status> {
        let caller = Caller::of(&r);
        let id = r.into_inner().job_id;
        self.owner_or_admin(&caller, &id)?;
        let (json, markdown) = self.engine.report_of(&id).await?;
        Ok(Response::new(pb::JobReportResponse { json, markdown }))
    }

    async fn deploy(
        &self,
        r: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let caller = Caller::of(&r);
        let req = r.into_inner();
        self.owner_or_admin(&caller, &req.job_id)?;
        // Placing a student on a route changes what everyone calling it gets: admins only.
        require(
            req.route.trim().is_empty() || caller.is_admin(),
            "admins (placing a student on a route; deploy it as distilled/NAME without a route)",
        )?;
        let claimed = match caller.principal() {
            Some(p) if !p.is_service() => {
                self.owners
                    .claim_name(&req.name, &p.identity.user, p.is_admin())?
            }
            _ => false,
        };
        let name = req.name.clone();
        match self.engine.deploy(req).await {
            Ok(resp) => {
                tracing::info!(model = %resp.model, by = caller.name(), "distill: student deployed");
                Ok(Response::new(resp))
            }
            Err(e) => {
                if claimed {
                    self.owners.release_name(&name);
                }
                Err(e.into())
            }
        }
    }
}

/// Why a server path is refused (never quoting the file).
fn path_error(what: &str, why: &str) -> Status {
    Status::invalid_argument(format!("{what}: {why}"))
}

impl DistillService {
    /// Owners (and their team admin), admins and service identities may act on a job.
    fn owner_or_admin(&self, caller: &Caller, id: &str) -> Result<(), Status> {
        let Some(p) = caller.principal() else {
            return Ok(());
        };
        if p.is_operator() {
            return Ok(());
        }
        match self.owners.job(id) {
            Some(o) if p.may_act_for(&o.user, &o.team) => Ok(()),
            _ => Err(Status::permission_denied(format!(
                "permission denied: job {id:?} is not yours (its submitter and admins may see and act on it)"
            ))),
        }
    }

    /// The caps and the data rules of a submit: server paths for admins only, under the data root;
    /// non-admins within their caps (inline size, teacher concurrency, jobs at once).
    async fn admit_submit(&self, caller: &Caller, r: &mut pb::SubmitRequest) -> Result<(), Status> {
        let admin = caller.is_admin();
        let cfg = &self.engine.cfg;
        for (what, src) in [("train", &mut r.train), ("evals", &mut r.evals)] {
            let Some(s) = src.as_mut() else { continue };
            match &s.source {
                // Embedded without keys and without a data root: a trusted caller's path is read
                // by the job as given.
                Some(pb::data_source::Source::Path(_))
                    if *caller == Caller::Open && cfg.data_root.is_none() => {}
                Some(pb::data_source::Source::Path(p)) => {
                    require(admin, "admins (server paths; send the data inline)")?;
                    let bytes =
                        read_under_root(what, p, cfg.data_root.as_deref(), cfg.max_path_bytes)?;
                    // Read here, checked: the job sees the bytes, never the path.
                    s.source = Some(pb::data_source::Source::Inline(bytes));
                }
                Some(pb::data_source::Source::Inline(b))
                    if !admin && b.len() as u64 > cfg.user_max_inline_bytes =>
                {
                    return Err(Status::resource_exhausted(format!(
                        "{what}: {} bytes inline is over the {} bytes allowed (ask an admin)",
                        b.len(),
                        cfg.user_max_inline_bytes
                    )));
                }
                Some(pb::data_source::Source::Inline(_)) | None => {}
            }
        }
        if admin {
            return Ok(());
        }
        let cap = cfg.user_max_teacher_concurrency.max(1);
        let limits = r.limits.get_or_insert_with(Default::default);
        if limits.max_teacher_concurrency > cap {
            return Err(Status::resource_exhausted(format!(
                "limits.max_teacher_concurrency = {} is over the {cap} allowed (ask an admin)",
                limits.max_teacher_concurrency
            )));
        }
        if limits.max_teacher_concurrency == 0 {
            limits.max_teacher_concurrency = cap;
        }
        if let Some(p) = caller.principal() {
            let mut running = 0;
            for id in self.owners.jobs_of(&p.identity.user) {
                if let Ok(Some(row)) = self.engine.store.job(&id).await
                    && row.state.is_unfinished()
                {
                    running += 1;
                }
            }
            if running >= cfg.user_max_jobs {
                return Err(Status::resource_exhausted(format!(
                    "{running} of your jobs are unfinished, the most allowed at once (wait, or cancel one)"
                )));
            }
        }
        Ok(())
    }
}

/// Reads a server path for `Submit`: only under `root` (no `..`, no symlink out of it), a regular
/// file, at most `max` bytes. Errors name the path and the rule, never the file's contents.
fn read_under_root(what: &str, p: &str, root: Option<&Path>, max: u64) -> Result<Vec<u8>, Status> {
    let Some(root) = root else {
        return Err(path_error(
            what,
            "server paths are off (no [distill] data_root): send the data inline",
        ));
    };
    let given = Path::new(p);
    if given
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(path_error(what, "a path may not contain `..`"));
    }
    let root = root
        .canonicalize()
        .map_err(|_| path_error(what, "the data root does not exist"))?;
    let full = if given.is_absolute() {
        given.to_path_buf()
    } else {
        root.join(given)
    };
    // Resolved (symlinks followed): it must still lie under the root.
    let real = full
        .canonicalize()
        .map_err(|_| path_error(what, "no such file under the data root"))?;
    if !real.starts_with(&root) {
        return Err(path_error(what, "the path is outside the data root"));
    }
    let f =
        std::fs::File::open(&real).map_err(|_| path_error(what, "the file cannot be opened"))?;
    let meta = f
        .metadata()
        .map_err(|_| path_error(what, "the file cannot be read"))?;
    if !meta.is_file() {
        return Err(path_error(what, "not a regular file"));
    }
    if meta.len() > max {
        return Err(Status::resource_exhausted(format!(
            "{what}: the file is {} bytes, over the {max} allowed",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| path_error(what, "the file cannot be read"))?;
    if bytes.len() as u64 > max {
        return Err(Status::resource_exhausted(format!(
            "{what}: the file is over the {max} bytes allowed"
        )));
    }
    Ok(bytes)
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
    let mut grpc = Grpc::new("distill");
    if let Some(keys) = engine.cfg.keys.clone() {
        grpc = grpc.authenticate(keys);
    }
    let owners = Arc::new(Owners::open(
        engine.cfg.data_dir.join("distill-owners.json"),
    ));
    let svc = DistillService {
        engine: Arc::clone(&engine),
        owners,
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
