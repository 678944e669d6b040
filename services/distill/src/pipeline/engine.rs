//! The engine: the distill service's state, the job runner (the stages in order, each recorded in
//! the store by [`Engine::staged`], the one place that does), the lease keeper (renews this
//! process's leases, stops jobs taken over elsewhere, takes over jobs whose holder died) and resume.
use std::{
    collections::{HashMap, HashSet},
    future::Future,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use retort_pricing::PriceTable;
use retort_proto::v1 as pb;
use retort_time::now_ms;
use tokio::sync::{Semaphore, watch};

use super::{JobSpec, JobState, Labelled, Progress, Stage, StageState, read_items};
use crate::{
    DistillConfig, Error,
    data::Item,
    store::{JobRow, Store},
    teacher::Gateway,
};

/// A running job's controls.
struct Live {
    cancel: Arc<AtomicBool>,
    /// Set with `cancel` when another process took the job over: stop without writing anything.
    lost: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

/// The distill service's state, shared by the gRPC handlers and the job tasks.
pub struct Engine {
    pub store: Store,
    pub cfg: DistillConfig,
    pub(super) prices: PriceTable,
    pub(super) gateway: Gateway,
    live: Mutex<HashMap<String, Live>>,
    progress: Mutex<HashMap<String, watch::Sender<Progress>>>,
    pub(super) training: Semaphore,
    /// This process's name in job leases.
    pub(super) owner: String,
    pub(super) lease_ms: i64,
    /// The task renewing leases, persisting progress and taking over orphaned jobs.
    keeper: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Engine {
    /// Opens the store, prepares the job folders and the gateway client.
    pub async fn open(
        cfg: DistillConfig,
        prices: Vec<retort_pricing::Price>,
    ) -> Result<Arc<Engine>, Error> {
        let store = Store::connect(&cfg.database_url(), cfg.database_schema.as_deref()).await?;
        Self::with_store(cfg, prices, store)
    }

    pub fn with_store(
        mut cfg: DistillConfig,
        prices: Vec<retort_pricing::Price>,
        store: Store,
    ) -> Result<Arc<Engine>, Error> {
        std::fs::create_dir_all(cfg.jobs_dir())
            .map_err(|e| Error::io("creating", &cfg.jobs_dir(), e))?;
        // Artefact paths go to the gateway: make them absolute.
        if let Ok(abs) = std::fs::canonicalize(&cfg.data_dir) {
            cfg.data_dir = abs;
        }
        let prices = PriceTable::new(prices).map_err(|e| Error::Config(e.to_string()))?;
        let gateway = Gateway::new(
            &cfg.gateway_url,
            &cfg.gateway_key,
            cfg.teacher_max_tokens,
            cfg.teacher_attempts,
            Duration::from_millis(cfg.teacher_timeout_ms),
        )?;
        let owner = cfg.instance.clone().unwrap_or_else(|| {
            format!(
                "distill-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        });
        Ok(Arc::new(Engine {
            store,
            training: Semaphore::new(cfg.max_parallel_training),
            owner,
            lease_ms: cfg.lease_secs as i64 * 1000,
            keeper: Mutex::new(None),
            cfg,
            prices,
            gateway,
            live: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
        }))
    }

    pub(super) fn job_dir(&self, id: &str) -> PathBuf {
        self.cfg.jobs_dir().join(id)
    }

    /// The artefact folder of a job.
    pub fn artefact_dir(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("student")
    }

    /// The stored row of a job; `NotFound` when there is none.
    pub(super) async fn row(&self, id: &str) -> Result<JobRow, Error> {
        self.store
            .job(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no job {id:?}")))
    }

    /// Resumes every unfinished job whose lease this process can take: those it held before a
    /// restart under the same `instance`, those nobody holds, those whose holder let the lease
    /// lapse. Returns how many it resumed.
    pub async fn resume_all(self: &Arc<Self>) -> Result<usize, Error> {
        let mut resumed = 0;
        for id in self.store.unfinished_jobs().await? {
            if self.is_live(&id)
                || !self
                    .store
                    .acquire_lease(&id, &self.owner, self.lease_ms)
                    .await?
            {
                continue;
            }
            tracing::info!(job = %id, owner = %self.owner, "resuming distill job");
            self.spawn(&id);
            resumed += 1;
        }
        Ok(resumed)
    }

    /// Whether this process runs the job now.
    pub fn is_live(&self, id: &str) -> bool {
        self.live.lock().is_ok_and(|l| l.contains_key(id))
    }

    /// This process's name in job leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Starts the lease keeper: every second (at most a third of the lease) it renews the lease of
    /// each job running here, storing its progress with it, and stops a job whose lease was taken
    /// over or which was cancelled by another process; every half lease it takes over unfinished
    /// jobs whose holder let the lease lapse.
    pub fn start_keeper(self: &Arc<Self>) {
        let engine = Arc::downgrade(self);
        let tick = Duration::from_millis((self.lease_ms as u64 / 3).clamp(100, 1000));
        let sweep_every = (self.lease_ms / 2).max(1);
        let task = tokio::spawn(async move {
            let mut last_sweep = now_ms();
            loop {
                tokio::time::sleep(tick).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.renew_all().await;
                if now_ms() - last_sweep >= sweep_every {
                    last_sweep = now_ms();
                    if let Err(e) = engine.resume_all().await {
                        tracing::warn!(error = %e, "distill: looking for jobs to take over failed");
                    }
                }
            }
        });
        if let Ok(mut k) = self.keeper.lock()
            && let Some(old) = k.replace(task.abort_handle())
        {
            old.abort();
        }
    }

    async fn renew_all(&self) {
        let ids: Vec<(String, Arc<AtomicBool>, Arc<AtomicBool>)> = match self.live.lock() {
            Ok(l) => l
                .iter()
                .map(|(id, l)| (id.clone(), Arc::clone(&l.cancel), Arc::clone(&l.lost)))
                .collect(),
            Err(_) => return,
        };
        for (id, cancel, lost) in ids {
            let progress = self
                .progress_now(&id)
                .map(|p| serde_json::to_string(&p).unwrap_or_default())
                .unwrap_or_default();
            match self
                .store
                .renew_lease(&id, &self.owner, self.lease_ms, &progress)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    // Taken over (our lease lapsed), or cancelled / ended elsewhere.
                    let row = self.store.job(&id).await.ok().flatten();
                    if row.as_ref().is_some_and(|r| r.lease_owner != self.owner) {
                        tracing::warn!(job = %id, owner = %self.owner, "lost the lease of a distill job: another process runs it now");
                        lost.store(true, Ordering::SeqCst);
                    }
                    cancel.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "cannot renew a distill job's lease")
                }
            }
        }
    }

    pub(super) fn spawn(self: &Arc<Self>, id: &str) {
        let cancel = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let engine = Arc::clone(self);
        let job = id.to_string();
        let flag = Arc::clone(&cancel);
        let gone = Arc::clone(&lost);
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        if live.contains_key(id) {
            return;
        }
        let task = tokio::spawn(async move { engine.run(&job, flag, gone).await });
        live.insert(
            id.to_string(),
            Live {
                cancel,
                lost,
                task: task.abort_handle(),
            },
        );
    }

    /// Stops every job task at once without recording anything, as a crash would (tests use it to
    /// check that jobs resume); the leases stay until they lapse.
    pub fn kill(&self) {
        if let Ok(mut k) = self.keeper.lock()
            && let Some(t) = k.take()
        {
            t.abort();
        }
        if let Ok(mut live) = self.live.lock() {
            for (_, l) in live.drain() {
                l.cancel.store(true, Ordering::SeqCst);
                l.task.abort();
            }
        }
    }

    /// Stops every job task and gives their leases back, so another process goes on at once.
    pub async fn stop(&self) {
        self.kill();
        if let Err(e) = self.store.release_leases(&self.owner).await {
            tracing::warn!(error = %e, "cannot give back the distill job leases");
        }
    }

    /// Updates (creating if needed) the in-memory progress of a job.
    pub(super) fn set_progress(&self, id: &str, f: impl FnOnce(&mut Progress)) {
        if let Ok(mut map) = self.progress.lock() {
            let tx = map
                .entry(id.to_string())
                .or_insert_with(|| watch::channel(Progress::default()).0);
            tx.send_modify(f);
        }
    }

    fn progress_now(&self, id: &str) -> Option<Progress> {
        self.progress
            .lock()
            .ok()?
            .get(id)
            .map(|tx| tx.borrow().clone())
    }

    /// Follows the progress of a job this process ran or runs. `stored` seeds it for a job running
    /// here that has not reported yet (just resumed); `None` when the job is not this process's.
    pub fn subscribe(
        &self,
        id: &str,
        running_here: bool,
        stored: &str,
    ) -> Option<watch::Receiver<Progress>> {
        let mut map = self.progress.lock().ok()?;
        if let Some(tx) = map.get(id) {
            return Some(tx.subscribe());
        }
        if !running_here {
            return None;
        }
        let seed: Progress = serde_json::from_str(stored).unwrap_or_default();
        let tx = watch::channel(seed).0;
        let rx = tx.subscribe();
        map.insert(id.to_string(), tx);
        Some(rx)
    }

    async fn save_progress(&self, id: &str) {
        if let Some(p) = self.progress_now(id) {
            let _ = self
                .store
                .set_progress(id, &serde_json::to_string(&p).unwrap_or_default())
                .await;
        }
    }

    /// A job as the API shows it.
    pub async fn job(&self, id: &str) -> Result<pb::Job, Error> {
        let row = self.row(id).await?;
        self.to_pb(row).await
    }

    pub async fn to_pb(&self, row: JobRow) -> Result<pb::Job, Error> {
        let stages = self.store.stages(&row.id).await?;
        let progress = self
            .progress_now(&row.id)
            .or_else(|| serde_json::from_str(&row.progress_json).ok())
            .unwrap_or_default();
        let task = serde_json::from_str::<JobSpec>(&row.request_json)
            .map(|s| s.task)
            .unwrap_or_default();
        Ok(pb::Job {
            task: task.name().into(),
            progress: Some(progress.to_pb(&row.id)),
            id: row.id,
            teacher: row.teacher,
            target: row.target,
            state: row.state.as_str().into(),
            stage: row.stage.as_str().into(),
            error: row.error,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            stages: stages
                .into_iter()
                .map(|s| pb::StageInfo {
                    name: s.name.as_str().into(),
                    state: s.state.as_str().into(),
                    started_ms: s.started_ms,
                    finished_ms: s.finished_ms,
                    summary: s.summary,
                })
                .collect(),
            deployed_model: row.deployed_model,
            description: row.description,
        })
    }

    /// Cancels a queued or running job.
    pub async fn cancel(&self, id: &str) -> Result<pb::Job, Error> {
        let row = self.row(id).await?;
        if !row.state.is_unfinished() {
            return Err(Error::FailedPrecondition(format!(
                "job {id} is {}: nothing to cancel",
                row.state
            )));
        }
        let live = self
            .live
            .lock()
            .ok()
            .and_then(|l| l.get(id).map(|l| Arc::clone(&l.cancel)));
        match live {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                // The job notices at its next check (between teacher answers, after an epoch).
                for _ in 0..600 {
                    let unfinished = self
                        .store
                        .job(id)
                        .await?
                        .is_some_and(|r| r.state.is_unfinished());
                    if !unfinished {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            None => {
                self.cleanup(id);
                self.store
                    .set_state(id, JobState::Cancelled, row.stage, "cancelled")
                    .await?;
            }
        }
        self.job(id).await
    }

    /// Removes what a stopped job must not leave behind: a checkpoint and an artefact.
    fn cleanup(&self, id: &str) {
        let dir = self.job_dir(id);
        for sub in ["checkpoint", "student"] {
            let _ = std::fs::remove_dir_all(dir.join(sub));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains(".partial") {
                    let _ = std::fs::remove_dir_all(e.path());
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Stops a stage when the job was cancelled or ran past its time limit.
    pub(super) fn check(
        &self,
        flag: &AtomicBool,
        deadline: Option<i64>,
        limit: u64,
    ) -> Result<(), Error> {
        if flag.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        if deadline.is_some_and(|d| now_ms() > d) {
            return Err(Error::TimeLimit(limit));
        }
        Ok(())
    }

    async fn run(self: Arc<Self>, id: &str, flag: Arc<AtomicBool>, lost: Arc<AtomicBool>) {
        let result = self.run_stages(id, &flag, &lost).await;
        if lost.load(Ordering::SeqCst) {
            // Another process runs the job now: leave its folder and its records alone.
            if let Ok(mut live) = self.live.lock() {
                live.remove(id);
            }
            if let Ok(mut map) = self.progress.lock() {
                map.remove(id);
            }
            return;
        }
        if let Err(e) = result {
            let (state, msg) = match &e {
                Error::Cancelled => (JobState::Cancelled, "cancelled".to_string()),
                e => (JobState::Failed, e.to_string()),
            };
            if matches!(e, Error::Cancelled | Error::TimeLimit(_)) {
                self.cleanup(id);
            }
            // The stage the job was in: the one it last reported, else the one stored.
            let stage = match self
                .progress_now(id)
                .and_then(|p| p.stage.parse::<Stage>().ok())
            {
                Some(s) => s,
                None => self
                    .store
                    .job(id)
                    .await
                    .ok()
                    .flatten()
                    .map_or(Stage::Validate, |r| r.stage),
            };
            tracing::warn!(job = %id, %stage, error = %msg, "distill job ended without a report");
            // The store first: whoever sees `done` on the stream must find the final state.
            let _ = self.store.set_state(id, state, stage, &msg).await;
            self.set_progress(id, |p| {
                p.state = state.as_str().into();
                p.done = true;
                p.error = msg.clone();
                p.message = format!("{state}: {msg}");
                p.eta_secs = 0.0;
            });
            self.save_progress(id).await;
        }
        if let Ok(mut live) = self.live.lock() {
            live.remove(id);
        }
    }

    /// Runs `work` as `stage` of job `id`, recording in the store when it starts and how it ended
    /// (its summary, or the error). The one place a stage's record is written. When `lost` is set
    /// (another process took the job over), a failure is not recorded: the record is theirs now.
    async fn staged<T>(
        &self,
        id: &str,
        stage: Stage,
        lost: Option<&AtomicBool>,
        summary: impl FnOnce(&T) -> &str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.store.stage_started(id, stage).await?;
        match work.await {
            Ok(done) => {
                self.store
                    .stage_finished(id, stage, StageState::Done, summary(&done))
                    .await?;
                Ok(done)
            }
            Err(e) => {
                if lost.is_some_and(|l| l.load(Ordering::SeqCst)) {
                    return Err(e);
                }
                let state = match e {
                    Error::Cancelled => StageState::Cancelled,
                    _ => StageState::Failed,
                };
                self.store
                    .stage_finished(id, stage, state, &e.to_string())
                    .await?;
                Err(e)
            }
        }
    }

    /// Runs one stage of the pipeline; returns its summary.
    async fn run_stage(
        self: &Arc<Self>,
        stage: Stage,
        id: &str,
        spec: &JobSpec,
        flag: &Arc<AtomicBool>,
        deadline: Option<i64>,
    ) -> Result<String, Error> {
        // An auto job's stages after the screening train, evaluate and report its winner.
        let spec = &self.resolved(id, spec)?;
        match stage {
            Stage::Validate => self.validate(id, spec).await,
            Stage::Label => self.label(id, spec, flag, deadline).await,
            Stage::Screen => self.screen(id, spec, flag, deadline).await,
            Stage::Train => self.train(id, spec, flag, deadline).await,
            Stage::Evaluate => self.evaluate(id, spec).await,
            Stage::Report => self.report(id, spec).await,
            // Deploy is asked for once the job has succeeded; a job never runs it on its own.
            Stage::Deploy => Err(Error::FailedPrecondition(format!(
                "job {id}: deploy is not a stage of the pipeline (ask for it once the job succeeded)"
            ))),
        }
    }

    async fn run_stages(
        self: &Arc<Self>,
        id: &str,
        flag: &Arc<AtomicBool>,
        lost: &AtomicBool,
    ) -> Result<(), Error> {
        let row = self.row(id).await?;
        let spec = JobSpec::parse(id, &row.request_json)?;
        let deadline =
            (spec.time_limit_secs > 0).then(|| row.created_ms + spec.time_limit_secs as i64 * 1000);
        let done: HashSet<Stage> = self
            .store
            .stages(id)
            .await?
            .into_iter()
            .filter(|s| s.state == StageState::Done)
            .map(|s| s.name)
            .collect();
        let warnings = row.error.clone();
        if self.progress_now(id).is_none() {
            let stored: Progress = serde_json::from_str(&row.progress_json).unwrap_or_default();
            self.set_progress(id, |p| *p = stored);
        }
        for stage in Stage::PIPELINE {
            // Only auto-target screens.
            if done.contains(&stage)
                || (stage == Stage::Screen && !super::auto::is_auto(&spec.target))
            {
                continue;
            }
            self.check(flag, deadline, spec.time_limit_secs)?;
            // Keep the warnings an earlier stage recorded (teacher failures).
            let warnings = self
                .store
                .job(id)
                .await?
                .map(|r| r.error)
                .unwrap_or(warnings.clone());
            if !self.store.set_running(id, stage, &warnings).await? {
                // Cancelled by another process between two stages.
                return Err(Error::Cancelled);
            }
            let work = async {
                self.set_progress(id, |p| {
                    p.state = JobState::Running.as_str().into();
                    p.stage = stage.as_str().into();
                    p.message = format!("{stage}…");
                    p.eta_secs = 0.0;
                });
                self.run_stage(stage, id, &spec, flag, deadline).await
            };
            let summary = self
                .staged(id, stage, Some(lost), String::as_str, work)
                .await?;
            self.set_progress(id, |p| p.message = format!("{stage}: {summary}"));
            self.save_progress(id).await;
        }
        let warnings = self
            .store
            .job(id)
            .await?
            .map(|r| r.error)
            .unwrap_or_default();
        self.store
            .set_state(id, JobState::Succeeded, Stage::Report, &warnings)
            .await?;
        self.set_progress(id, |p| {
            p.state = JobState::Succeeded.as_str().into();
            p.stage = Stage::Report.as_str().into();
            p.done = true;
            p.eta_secs = 0.0;
            p.message = "succeeded: the report is ready".into();
        });
        self.save_progress(id).await;
        tracing::info!(job = %id, "distill job succeeded");
        Ok(())
    }

    /// Records the deploy stage of a finished job around `work` (which returns the model it
    /// serves as, and a summary), then marks the job as deployed.
    pub(super) async fn deploy_staged(
        &self,
        row: &JobRow,
        work: impl Future<Output = Result<(String, String), Error>>,
    ) -> Result<String, Error> {
        let id = row.id.as_str();
        let (model, _) = self
            .staged(
                id,
                Stage::Deploy,
                None,
                |(_, s): &(String, String)| s.as_str(),
                work,
            )
            .await?;
        self.store.set_deployed(id, &model).await?;
        self.store
            .set_state(id, JobState::Succeeded, Stage::Deploy, &row.error)
            .await?;
        Ok(model)
    }

    /// The job's data, as submitted (train, evals).
    pub(super) fn load_items(&self, id: &str) -> Result<(Vec<Item>, Vec<Item>), Error> {
        let dir = self.job_dir(id);
        Ok((
            read_items(&dir.join("train.jsonl"), "train")?,
            read_items(&dir.join("evals.jsonl"), "evals")?,
        ))
    }

    /// What the label stage left.
    pub(super) fn labelled(&self, id: &str) -> Result<Labelled, Error> {
        let path = self.job_dir(id).join("labelled.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            context: path.display().to_string(),
            source,
        })
    }

    /// The stored report (JSON, Markdown).
    pub async fn report_of(&self, id: &str) -> Result<(String, String), Error> {
        let row = self.row(id).await?;
        if row.report_json.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "job {id} has no report yet (state {}, stage {})",
                row.state, row.stage
            )));
        }
        Ok((row.report_json, row.report_md))
    }
}
