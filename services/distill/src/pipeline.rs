//! The job pipeline: submit-time checks, then validate → label → train → evaluate → report, each
//! stage recorded in the store when it starts and when it finishes; a job resumes at the first stage
//! not finished. `Deploy` runs on request once the report exists.
//!
//! Job folder (`DATA_DIR/distill/JOB`): `train.jsonl` and `evals.jsonl` (the submitted data, as
//! parsed), `labelled.json` (written when the label stage ends), `checkpoint/` (while training; the
//! trainer resumes from it), `student/` (the artefact, renamed into place only when complete).
use std::{
    collections::{HashMap, HashSet},
    ops::ControlFlow,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use retort_pricing::PriceTable;
use retort_proto::v1 as pb;
use retort_training::{
    Example, GenTrainJob, LabelVocab, StudentSpec, TaskKind, TrainJob, TrainOptions, data::split,
    engine,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

mod deploy;
mod evaluate;
mod label;

use crate::{
    DistillConfig, Error,
    data::{self, Item},
    now_ms,
    report::{self, Evaluation, LabelStats, TeacherUsage},
    store::{JobRow, ResultRow, Store},
    teacher::Gateway,
};

/// The stages every job runs, in order (`deploy` comes on request).
pub const STAGES: [&str; 5] = ["validate", "label", "train", "evaluate", "report"];

/// A job's request, without its data (stored as JSON with the job).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Classification (labels) or generation (short texts); jobs stored before generation existed
    /// are classification.
    #[serde(default)]
    pub task: TaskKind,
    pub teacher: String,
    pub template: String,
    pub target: String,
    pub labels: Vec<String>,
    pub objective: String,
    pub max_accuracy_drop_points: f64,
    pub max_teacher_concurrency: usize,
    pub max_epochs: usize,
    pub time_limit_secs: u64,
    pub max_teacher_failure_fraction: f64,
    pub seed: u64,
    pub gold_evals: bool,
    /// Where the data came from (`inline (N bytes)` or the path), for the record.
    pub train_source: String,
    pub evals_source: String,
}

/// A job's progress (kept in memory while it runs, stored at every stage boundary).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub state: String,
    pub stage: String,
    pub items_labelled: u64,
    pub items_total: u64,
    pub cache_hits: u64,
    pub teacher_failures: u64,
    pub epoch: u32,
    pub max_epochs: u32,
    pub loss: f64,
    pub val_accuracy: f64,
    pub eta_secs: f64,
    pub message: String,
    pub done: bool,
    pub error: String,
}

impl Progress {
    pub fn to_pb(&self, job_id: &str) -> pb::JobProgress {
        pb::JobProgress {
            job_id: job_id.into(),
            state: self.state.clone(),
            stage: self.stage.clone(),
            items_labelled: self.items_labelled,
            items_total: self.items_total,
            cache_hits: self.cache_hits,
            teacher_failures: self.teacher_failures,
            epoch: self.epoch,
            max_epochs: self.max_epochs,
            loss: self.loss,
            val_accuracy: self.val_accuracy,
            eta_secs: self.eta_secs,
            message: self.message.clone(),
            done: self.done,
            error: self.error.clone(),
        }
    }
}

/// What the label stage leaves for the next ones.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Labelled {
    labels: Vec<String>,
    /// Rendered prompt → the teacher's label.
    train: Vec<Example>,
    /// The teacher's label of each eval (None: the call failed or named no label).
    eval_teacher: Vec<Option<String>>,
    stats: LabelStats,
    usage: TeacherUsage,
}

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
    prices: PriceTable,
    gateway: Gateway,
    live: Mutex<HashMap<String, Live>>,
    progress: Mutex<HashMap<String, watch::Sender<Progress>>>,
    training: Semaphore,
    /// This process's name in job leases.
    owner: String,
    lease_ms: i64,
    /// The task renewing leases, persisting progress and taking over orphaned jobs.
    keeper: Mutex<Option<tokio::task::AbortHandle>>,
}

/// The data of a submit request, read.
fn read_source(src: Option<&pb::DataSource>, what: &str) -> Result<(Vec<u8>, String), Error> {
    match src.and_then(|s| s.source.as_ref()) {
        Some(pb::data_source::Source::Inline(b)) => {
            Ok((b.clone(), format!("inline ({} bytes)", b.len())))
        }
        Some(pb::data_source::Source::Path(p)) => std::fs::read(p)
            .map(|b| (b, p.clone()))
            .map_err(|e| Error::InvalidArgument(format!("{what}: cannot read {p}: {e}"))),
        None => Err(Error::InvalidArgument(format!(
            "{what}: missing (give inline bytes or a path)"
        ))),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)
        .map_err(|e| Error::Io(format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io(format!("writing {}: {e}", path.display())))
}

fn write_items(path: &Path, items: &[Item]) -> Result<(), Error> {
    let mut out = String::new();
    for i in items {
        out.push_str(&serde_json::to_string(i).unwrap_or_default());
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
}

fn read_items(path: &Path, what: &str) -> Result<Vec<Item>, Error> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Io(format!("reading {}: {e}", path.display())))?;
    data::parse_items(&bytes, what)
}

/// A train/validation split that does not group by label (a generation task's answers are mostly
/// unique): each example goes to validation by a seeded hash of its text, `fraction` of them (at
/// least one, never all).
fn split_unstratified(
    examples: &[Example],
    fraction: f64,
    seed: u64,
) -> retort_training::Result<retort_training::Split> {
    if examples.len() < 2 {
        return Err(retort_training::TrainingError::EmptyData(format!(
            "{} example(s): at least 2 are needed to hold one out",
            examples.len()
        )));
    }
    let mut order: Vec<(String, usize)> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                data::prompt_hash(&format!("{seed}\u{0}{i}\u{0}{}", e.text)),
                i,
            )
        })
        .collect();
    order.sort();
    let n_val = ((examples.len() as f64 * fraction).round() as usize).clamp(1, examples.len() - 1);
    let pick = |r: &[(String, usize)]| r.iter().map(|(_, i)| examples[*i].clone()).collect();
    Ok(retort_training::Split {
        validation: pick(&order[..n_val]),
        train: pick(&order[n_val..]),
    })
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
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
            .map_err(|e| Error::Io(format!("creating {}: {e}", cfg.jobs_dir().display())))?;
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

    fn job_dir(&self, id: &str) -> PathBuf {
        self.cfg.jobs_dir().join(id)
    }

    /// The artefact folder of a job.
    pub fn artefact_dir(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("student")
    }

    /// Checks a request, stores the job and starts it. Errors are `InvalidArgument` with the
    /// payload and line named.
    pub async fn submit(self: &Arc<Self>, r: pb::SubmitRequest) -> Result<String, Error> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        let teacher = r.teacher.trim().to_string();
        if teacher.is_empty() {
            return bad("teacher: missing (a model or alias of the gateway)".into());
        }
        if !r.prompt_template.contains("{input}") {
            return bad("prompt_template must contain {input} (where the item's text goes)".into());
        }
        let task = match r.task.trim() {
            "" | "classification" => TaskKind::Classification,
            "generation" => TaskKind::Generation,
            other => {
                return bad(format!(
                    "task {other:?}: expected classification (the default) or generation"
                ));
            }
        };
        let target: StudentSpec =
            r.target
                .trim()
                .parse()
                .map_err(|e: retort_training::TrainingError| {
                    Error::InvalidArgument(format!("target: {e}"))
                })?;
        if target.class.task() != task {
            let fits: Vec<&str> = retort_training::StudentClass::ALL
                .iter()
                .filter(|c| c.task() == task)
                .map(|c| c.name())
                .collect();
            return bad(format!(
                "target {target}: a {} student, and this is a {task} task (its classes: {})",
                target.class.task(),
                fits.join(", ")
            ));
        }
        let objective = r.objective.clone().unwrap_or_default();
        let kind = if objective.kind.is_empty() {
            "max_cost_savings".to_string()
        } else {
            objective.kind.clone()
        };
        if kind != "max_cost_savings" {
            return bad(format!(
                "objective.kind {kind:?}: the only kind is max_cost_savings"
            ));
        }
        let drop = if objective.max_accuracy_drop_points == 0.0 {
            1.0
        } else {
            objective.max_accuracy_drop_points
        };
        if !(drop.is_finite() && (0.0..=100.0).contains(&drop)) {
            return bad("objective.max_accuracy_drop_points must be between 0 and 100".into());
        }
        let limits = r.limits.unwrap_or_default();
        let failure = if limits.max_teacher_failure_fraction == 0.0 {
            0.1
        } else {
            limits.max_teacher_failure_fraction
        };
        if !(0.0..=1.0).contains(&failure) {
            return bad("limits.max_teacher_failure_fraction must be between 0 and 1".into());
        }
        let mut labels: Vec<String> = Vec::new();
        for l in &r.labels {
            let l = l.trim().to_string();
            if l.is_empty() {
                return bad("labels: an empty label".into());
            }
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
        if task == TaskKind::Generation && !labels.is_empty() {
            return bad(
                "labels: a generation task has no label set (the teacher's answers are kept as text)"
                    .into(),
            );
        }
        if labels.len() == 1 {
            return bad("labels: a classifier needs at least 2 labels".into());
        }
        let (train_bytes, train_source) = read_source(r.train.as_ref(), "train")?;
        let (evals_bytes, evals_source) = read_source(r.evals.as_ref(), "evals")?;
        let train = data::parse_items(&train_bytes, "train")?;
        let mut evals = data::parse_items(&evals_bytes, "evals")?;
        let gold = data::evals_have_labels(&evals)?;
        if task == TaskKind::Generation {
            // Expected answers are compared as the teacher's are: trimmed, whitespace collapsed.
            for e in &mut evals {
                e.label = e.label.as_deref().and_then(data::normalise_text);
            }
        }
        if gold && !labels.is_empty() {
            let lower: Vec<String> = labels.iter().map(|l| l.to_lowercase()).collect();
            if let Some((i, e)) = evals.iter().enumerate().find(|(_, e)| {
                e.label
                    .as_ref()
                    .is_some_and(|l| !lower.contains(&l.to_lowercase()))
            }) {
                return bad(format!(
                    "evals: item {} expects {:?}, which is not one of the labels ({})",
                    i + 1,
                    e.label.as_deref().unwrap_or_default(),
                    labels.join(", ")
                ));
            }
        }
        let spec = JobSpec {
            task,
            teacher: teacher.clone(),
            template: r.prompt_template.clone(),
            target: target.to_string(),
            labels,
            objective: kind,
            max_accuracy_drop_points: drop,
            max_teacher_concurrency: if limits.max_teacher_concurrency == 0 {
                8
            } else {
                limits.max_teacher_concurrency as usize
            },
            max_epochs: if limits.max_epochs == 0 {
                20
            } else {
                limits.max_epochs as usize
            },
            time_limit_secs: limits.time_limit_secs,
            max_teacher_failure_fraction: failure,
            seed: if r.seed == 0 { 42 } else { r.seed },
            gold_evals: gold,
            train_source,
            evals_source,
        };
        let id = format!("dj-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let dir = self.job_dir(&id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("creating {}: {e}", dir.display())))?;
        write_items(&dir.join("train.jsonl"), &train)?;
        write_items(&dir.join("evals.jsonl"), &evals)?;
        let now = now_ms();
        let progress = Progress {
            state: "queued".into(),
            stage: "validate".into(),
            message: "queued".into(),
            ..Progress::default()
        };
        self.store
            .insert_job(&JobRow {
                id: id.clone(),
                teacher,
                target: spec.target.clone(),
                state: "queued".into(),
                stage: "validate".into(),
                request_json: serde_json::to_string(&spec).unwrap_or_default(),
                progress_json: serde_json::to_string(&progress).unwrap_or_default(),
                description: r.description.clone(),
                created_ms: now,
                updated_ms: now,
                lease_owner: self.owner.clone(),
                lease_expires_ms: now + self.lease_ms,
                ..JobRow::default()
            })
            .await?;
        self.set_progress(&id, |p| *p = progress.clone());
        self.spawn(&id);
        tracing::info!(job = %id, task = %spec.task, teacher = %spec.teacher, target = %spec.target, "distill job submitted");
        Ok(id)
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

    fn spawn(self: &Arc<Self>, id: &str) {
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
        {
            live.insert(
                id.to_string(),
                Live {
                    cancel,
                    lost,
                    task: task.abort_handle(),
                },
            );
        }
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
    fn set_progress(&self, id: &str, f: impl FnOnce(&mut Progress)) {
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
        let row = self
            .store
            .job(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no job {id:?}")))?;
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
            state: row.state,
            stage: row.stage,
            error: row.error,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            stages: stages
                .into_iter()
                .map(|s| pb::StageInfo {
                    name: s.name,
                    state: s.state,
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
        let row = self
            .store
            .job(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no job {id:?}")))?;
        if !matches!(row.state.as_str(), "queued" | "running") {
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
                    let state = self
                        .store
                        .job(id)
                        .await?
                        .map(|r| r.state)
                        .unwrap_or_default();
                    if !matches!(state.as_str(), "queued" | "running") {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            None => {
                self.cleanup(id);
                self.store
                    .set_state(id, "cancelled", &row.stage, "cancelled")
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

    fn check(&self, flag: &AtomicBool, deadline: Option<i64>, limit: u64) -> Result<(), Error> {
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
                Error::Cancelled => ("cancelled", "cancelled".to_string()),
                e => ("failed", e.to_string()),
            };
            if matches!(e, Error::Cancelled | Error::TimeLimit(_)) {
                self.cleanup(id);
            }
            let stage = self.progress_now(id).map(|p| p.stage).unwrap_or_default();
            tracing::warn!(job = %id, %stage, error = %msg, "distill job ended without a report");
            // The store first: whoever sees `done` on the stream must find the final state.
            let _ = self.store.set_state(id, state, &stage, &msg).await;
            self.set_progress(id, |p| {
                p.state = state.into();
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

    async fn run_stages(
        self: &Arc<Self>,
        id: &str,
        flag: &Arc<AtomicBool>,
        lost: &AtomicBool,
    ) -> Result<(), Error> {
        let row = self
            .store
            .job(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no job {id:?}")))?;
        let spec: JobSpec = serde_json::from_str(&row.request_json)
            .map_err(|e| Error::Store(format!("job {id}: unreadable request: {e}")))?;
        let deadline =
            (spec.time_limit_secs > 0).then(|| row.created_ms + spec.time_limit_secs as i64 * 1000);
        let done: HashSet<String> = self
            .store
            .stages(id)
            .await?
            .into_iter()
            .filter(|s| s.state == "done")
            .map(|s| s.name)
            .collect();
        let warnings = row.error.clone();
        if self.progress_now(id).is_none() {
            let stored: Progress = serde_json::from_str(&row.progress_json).unwrap_or_default();
            self.set_progress(id, |p| *p = stored);
        }
        for stage in STAGES {
            if done.contains(stage) {
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
            self.store.stage_started(id, stage).await?;
            self.set_progress(id, |p| {
                p.state = "running".into();
                p.stage = stage.into();
                p.message = format!("{stage}…");
                p.eta_secs = 0.0;
            });
            let result = match stage {
                "validate" => self.validate(id, &spec).await,
                "label" => self.label(id, &spec, flag, deadline).await,
                "train" => self.train(id, &spec, flag, deadline).await,
                "evaluate" => self.evaluate(id, &spec).await,
                _ => self.report(id, &spec).await,
            };
            match result {
                Ok(summary) => {
                    self.store
                        .stage_finished(id, stage, "done", &summary)
                        .await?;
                    self.set_progress(id, |p| p.message = format!("{stage}: {summary}"));
                    self.save_progress(id).await;
                }
                Err(e) => {
                    if lost.load(Ordering::SeqCst) {
                        return Err(e);
                    }
                    let state = if matches!(e, Error::Cancelled) {
                        "cancelled"
                    } else {
                        "failed"
                    };
                    self.store
                        .stage_finished(id, stage, state, &e.to_string())
                        .await?;
                    return Err(e);
                }
            }
        }
        let warnings = self
            .store
            .job(id)
            .await?
            .map(|r| r.error)
            .unwrap_or_default();
        self.store
            .set_state(id, "succeeded", "report", &warnings)
            .await?;
        self.set_progress(id, |p| {
            p.state = "succeeded".into();
            p.stage = "report".into();
            p.done = true;
            p.eta_secs = 0.0;
            p.message = "succeeded: the report is ready".into();
        });
        self.save_progress(id).await;
        tracing::info!(job = %id, "distill job succeeded");
        Ok(())
    }

    fn load_items(&self, id: &str) -> Result<(Vec<Item>, Vec<Item>), Error> {
        let dir = self.job_dir(id);
        Ok((
            read_items(&dir.join("train.jsonl"), "train")?,
            read_items(&dir.join("evals.jsonl"), "evals")?,
        ))
    }

    async fn validate(&self, id: &str, spec: &JobSpec) -> Result<String, Error> {
        let (train, evals) = self.load_items(id)?;
        // The gateway may still be starting (retort up): a few tries before giving up.
        let mut models = Err(Error::Gateway("not tried".into()));
        for attempt in 0..20 {
            models = self.gateway.models().await;
            if models.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250 * (attempt + 1).min(4))).await;
        }
        let models = models?;
        if !models.contains(&spec.teacher) {
            return Err(Error::Job(format!(
                "teacher {:?} is not a model or alias of the gateway (it serves: {})",
                spec.teacher,
                models.join(", ")
            )));
        }
        let f = data::features(&train, &evals, &spec.template, spec.task);
        Ok(format!(
            "{} inputs, {} evals ({}), inputs {:.0} chars on average (p95 {:.0})",
            f.n_train,
            f.n_evals,
            if f.gold_evals {
                "with expected answers"
            } else {
                "no expected answers: agreement is the measure"
            },
            f.mean_input_chars,
            f.p95_input_chars
        ))
    }

    fn labelled(&self, id: &str) -> Result<Labelled, Error> {
        let path = self.job_dir(id).join("labelled.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Io(format!("reading {}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
    }

    async fn train(
        self: &Arc<Self>,
        id: &str,
        spec: &JobSpec,
        flag: &Arc<AtomicBool>,
        deadline: Option<i64>,
    ) -> Result<String, Error> {
        let labelled = self.labelled(id)?;
        let target: StudentSpec = spec.target.parse()?;
        let generation = spec.task == TaskKind::Generation;
        // A classifier's labels; none for a generator.
        let vocab = (!generation)
            .then(|| LabelVocab::from_labels(labelled.labels.clone()))
            .transpose()?;
        let config = target.config(vocab.as_ref().map_or(0, LabelVocab::len))?;
        let parts = if generation {
            split_unstratified(&labelled.train, 0.15, spec.seed)
        } else {
            split(&labelled.train, 0.15, spec.seed)
        }
        .map_err(|e| Error::Job(format!("cannot hold out a validation split: {e}")))?;
        self.set_progress(id, |p| p.message = "waiting for a training slot".into());
        let _permit = self
            .training
            .acquire()
            .await
            .map_err(|_| Error::Cancelled)?;
        self.check(flag, deadline, spec.time_limit_secs)?;
        let dir = self.job_dir(id);
        let engine = Arc::clone(self);
        let job_id = id.to_string();
        let flag = Arc::clone(flag);
        let max_epochs = spec.max_epochs;
        let seed = spec.seed;
        let limit = spec.time_limit_secs;
        let n_train = parts.train.len();
        let task =
            tokio::task::spawn_blocking(move || -> Result<retort_training::TrainReport, Error> {
                let options = TrainOptions::new()
                    .with_seed(seed)
                    .with_max_epochs(max_epochs);
                let checkpoint = dir.join("checkpoint");
                std::fs::create_dir_all(&checkpoint)
                    .map_err(|e| Error::Io(format!("creating {}: {e}", checkpoint.display())))?;
                let mut on_epoch = |p: &retort_training::EpochProgress| {
                    engine.set_progress(&job_id, |g| {
                        g.epoch = p.epoch as u32;
                        g.max_epochs = p.max_epochs as u32;
                        g.loss = p.train_loss;
                        g.val_accuracy = p.val_accuracy;
                        g.eta_secs = p.eta_secs;
                        g.message = format!(
                            "epoch {}/{}: loss {:.4}, validation {} {:.2}%",
                            p.epoch,
                            p.max_epochs,
                            p.train_loss,
                            if generation {
                                "exact match"
                            } else {
                                "accuracy"
                            },
                            p.val_accuracy * 100.0
                        );
                    });
                    if flag.load(Ordering::SeqCst) || deadline.is_some_and(|d| now_ms() > d) {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                };
                // The student, and how to save it once training was not stopped.
                type Save = Box<dyn FnOnce(&Path) -> retort_training::Result<u64>>;
                let trained = match vocab {
                    Some(labels) => engine::train(
                        &TrainJob {
                            config,
                            labels,
                            train: &parts.train,
                            validation: &parts.validation,
                            options,
                            checkpoint_dir: Some(checkpoint.clone()),
                        },
                        &mut on_epoch,
                    )
                    .map(|t| {
                        let p = t.predictor;
                        (
                            Box::new(move |d: &Path| engine::save(&p, d)) as Save,
                            t.report,
                        )
                    }),
                    None => engine::train_generator(
                        &GenTrainJob {
                            config,
                            train: &parts.train,
                            validation: &parts.validation,
                            options,
                            checkpoint_dir: Some(checkpoint.clone()),
                        },
                        &mut on_epoch,
                    )
                    .map(|t| {
                        let g = t.generator;
                        (Box::new(move |d: &Path| g.save(d)) as Save, t.report)
                    }),
                };
                let (save, report) = match trained {
                    Err(retort_training::TrainingError::Cancelled)
                        if !flag.load(Ordering::SeqCst) =>
                    {
                        return Err(Error::TimeLimit(limit));
                    }
                    r => r?,
                };
                if flag.load(Ordering::SeqCst) {
                    return Err(Error::Cancelled);
                }
                save(&dir.join("student"))?;
                let _ = std::fs::remove_dir_all(&checkpoint);
                Ok(report)
            });
        let report = task
            .await
            .map_err(|e| Error::Training(format!("the training thread failed: {e}")))??;
        Ok(format!(
            "{} examples, {} epochs{}, best epoch {} at {:.2}% validation {}, {:.1} s{}",
            n_train,
            report.epochs_run,
            if report.stopped_early {
                " (stopped early)"
            } else {
                ""
            },
            report.best_epoch,
            report.best_val_accuracy * 100.0,
            if generation {
                "exact match"
            } else {
                "accuracy"
            },
            report.train_secs,
            report
                .resumed_after_epoch
                .map_or_else(String::new, |e| format!(", resumed after epoch {e}"))
        ))
    }

    async fn evaluate(self: &Arc<Self>, id: &str, spec: &JobSpec) -> Result<String, Error> {
        let labelled = self.labelled(id)?;
        let (train, evals) = self.load_items(id)?;
        let features = data::features(&train, &evals, &spec.template, spec.task);
        let artefact = self.artefact_dir(id);
        let spec2 = spec.clone();
        let eval = tokio::task::spawn_blocking(move || {
            evaluate::evaluate_blocking(&artefact, &spec2, &evals, labelled, features)
        })
        .await
        .map_err(|e| Error::Training(format!("the evaluation thread failed: {e}")))??;
        let summary = format!(
            "student {} vs teacher {} on {} evals, agreement {:.2}%, p50 {:.0} µs",
            eval.student_accuracy
                .map_or_else(|| "—".into(), |a| format!("{:.2}%", a * 100.0)),
            eval.teacher_accuracy
                .map_or_else(|| "—".into(), |a| format!("{:.2}%", a * 100.0)),
            eval.n_evals,
            eval.agreement * 100.0,
            eval.latency.p50_us
        );
        self.store
            .set_eval(id, &serde_json::to_string(&eval).unwrap_or_default())
            .await?;
        Ok(summary)
    }

    fn build_report(&self, id: &str, spec: &JobSpec, eval: &Evaluation) -> report::Report {
        report::build(
            id,
            eval,
            &self.prices,
            self.cfg.compute_usd_per_cpu_hour,
            &spec.objective,
            spec.max_accuracy_drop_points,
        )
    }

    async fn report(&self, id: &str, spec: &JobSpec) -> Result<String, Error> {
        let row = self
            .store
            .job(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no job {id:?}")))?;
        let eval: Evaluation = serde_json::from_str(&row.eval_json)
            .map_err(|e| Error::Store(format!("job {id}: unreadable evaluation: {e}")))?;
        let report = self.build_report(id, spec, &eval);
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        self.store.set_report(id, &json, &report.markdown()).await?;
        let (class, size) = spec.target.split_once('/').unwrap_or((&spec.target, ""));
        let f = &eval.features;
        self.store
            .insert_result(&ResultRow {
                job_id: id.into(),
                teacher: spec.teacher.clone(),
                task_kind: f.kind.clone(),
                n_train: f.n_train as i64,
                n_evals: f.n_evals as i64,
                n_labels: eval.labels.len() as i64,
                mean_input_chars: f.mean_input_chars,
                p95_input_chars: f.p95_input_chars,
                gold_evals: f.gold_evals,
                teacher_accuracy: eval.teacher_accuracy,
                student_class: class.into(),
                student_size: size.into(),
                student_accuracy: eval.student_accuracy.unwrap_or(eval.agreement),
                agreement: eval.agreement,
                latency_p50_us: eval.latency.p50_us,
                latency_p99_us: eval.latency.p99_us,
                parameters: eval.parameters as i64,
                artefact_bytes: eval.artefact_bytes as i64,
                train_secs: eval.training.train_secs,
                teacher_usd_per_1k: report.costs.teacher_usd_per_1k,
                student_usd_per_1k: report.costs.student_usd_per_1k,
                objective_met: report.objective.met,
                backend: eval.backend.clone(),
                student_cer: eval.generation.as_ref().map(|g| g.student_cer),
                teacher_cer: eval.generation.as_ref().and_then(|g| g.teacher_cer),
            })
            .await?;
        Ok(format!(
            "objective {}; cost per 1,000 requests: teacher {}, student ${:.3e}",
            if report.objective.met {
                "met"
            } else {
                "not met"
            },
            report
                .costs
                .teacher_usd_per_1k
                .map_or_else(|| "unknown".into(), |c| format!("${c:.4}")),
            report.costs.student_usd_per_1k
        ))
    }

    /// The stored report (JSON, Markdown).
    pub async fn report_of(&self, id: &str) -> Result<(String, String), Error> {
        let row = self
            .store
            .job(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no job {id:?}")))?;
        if row.report_json.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "job {id} has no report yet (state {}, stage {})",
                row.state, row.stage
            )));
        }
        Ok((row.report_json, row.report_md))
    }
}
