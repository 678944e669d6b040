//! The job pipeline: submit-time checks, then validate → label → (screen) → train → evaluate → report, each
//! stage recorded in the store when it starts and when it finishes (by the engine, in one place); a
//! job resumes at the first stage not finished. `Deploy` runs on request once the report exists.
//!
//! The engine (`engine.rs`) runs jobs, keeps their leases and resumes them; `submit.rs` checks and
//! stores a request; each stage is a file of its own, whose function returns the stage's summary.
//!
//! Job folder (`DATA_DIR/distill/JOB`): `train.jsonl` and `evals.jsonl` (the submitted data, as
//! parsed), `labelled.json` (written when the label stage ends), `auto.json` (an auto-target job's
//! screening, see `auto.rs`), `checkpoint/` (while training; the
//! trainer resumes from it), `student/` (the artefact, renamed into place only when complete).
use std::path::Path;

use retort_proto::v1 as pb;
use retort_training::{Example, TaskKind};
use serde::{Deserialize, Serialize};

pub mod auto;
mod deploy;
mod engine;
mod evaluate;
mod label;
mod report;
mod submit;
mod train;
mod validate;

pub use crate::job::{JobState, Stage, StageState};
pub use engine::Engine;

use crate::{
    Error,
    data::{self, Item},
    report::{LabelStats, TeacherUsage},
};

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
    /// The other objectives' bounds (0: none); jobs stored before they existed have none.
    #[serde(default)]
    pub max_latency_us: f64,
    #[serde(default)]
    pub max_usd_per_1k: f64,
    #[serde(default)]
    pub min_accuracy_percent: f64,
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

impl JobSpec {
    /// The spec stored with job `id`.
    fn parse(id: &str, request_json: &str) -> Result<JobSpec, Error> {
        serde_json::from_str(request_json).map_err(|source| Error::Unreadable {
            job: id.to_string(),
            what: "request",
            source,
        })
    }
}

/// A job's progress (kept in memory while it runs, stored at every stage boundary). `state` and
/// `stage` are the names of a [`JobState`] and a [`Stage`] (empty before the job first reports),
/// kept as text because this is the snapshot clients read and the store holds as JSON.
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

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("writing", path, e))
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
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    data::parse_items(&bytes, what)
}
