//! Submit: a request checked (everything that can be known before a job runs is refused here
//! with `InvalidArgument`, naming the payload and line), its data parsed and written to the job's
//! folder, the job stored as queued and started.
use std::sync::Arc;

use retort_proto::v1 as pb;
use retort_time::now_ms;
use retort_training::{StudentSpec, TaskKind};

use super::{Engine, JobSpec, JobState, Progress, Stage, write_items};
use crate::{Error, data, store::JobRow};

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

impl Engine {
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
        let auto = super::auto::is_auto(&r.target);
        if auto && self.cfg.selector_addr.trim().is_empty() {
            return Err(Error::FailedPrecondition(
                "target auto: this distill service has no selector (set [distill] selector_addr; retort up runs one)"
                    .into(),
            ));
        }
        let target: StudentSpec = if auto {
            // A placeholder of the task's kind for the checks below; the screening picks the arm.
            match task {
                TaskKind::Classification => "linear/small",
                TaskKind::Generation => "seq2seq/small",
            }
            .parse()?
        } else {
            r.target
                .trim()
                .parse()
                .map_err(|e: retort_training::TrainingError| {
                    Error::InvalidArgument(format!("target: {e} (or auto)"))
                })?
        };
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
        if kind != "max_cost_savings" && !auto {
            return bad(format!(
                "objective.kind {kind:?}: an explicit target is judged by max_cost_savings (the other kinds, {}, choose a target: use target auto)",
                retort_training::selector::Objective::KINDS[1..].join(", ")
            ));
        }
        // Every kind's bounds checked (unknown kinds, negative or missing bounds refused).
        retort_training::selector::Objective::from_parts(
            &kind,
            objective.max_accuracy_drop_points,
            objective.max_latency_us,
            objective.max_usd_per_1k,
            objective.min_accuracy_percent,
        )
        .map_err(|e| {
            Error::InvalidArgument(e.to_string().replace("invalid configuration: ", ""))
        })?;
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
        if auto && evals.len() < super::auto::MIN_EVALS {
            return bad(format!(
                "evals: {} item(s); target auto needs at least {} to rank arms (below that one eval moves an accuracy by more than 5 points)",
                evals.len(),
                super::auto::MIN_EVALS
            ));
        }
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
            target: if auto {
                super::auto::AUTO.to_string()
            } else {
                target.to_string()
            },
            labels,
            objective: kind,
            max_accuracy_drop_points: drop,
            max_latency_us: objective.max_latency_us,
            max_usd_per_1k: objective.max_usd_per_1k,
            min_accuracy_percent: objective.min_accuracy_percent,
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
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        write_items(&dir.join("train.jsonl"), &train)?;
        write_items(&dir.join("evals.jsonl"), &evals)?;
        let now = now_ms();
        let progress = Progress {
            state: JobState::Queued.as_str().into(),
            stage: Stage::Validate.as_str().into(),
            message: "queued".into(),
            ..Progress::default()
        };
        self.store
            .insert_job(&JobRow {
                id: id.clone(),
                teacher,
                target: spec.target.clone(),
                state: JobState::Queued,
                stage: Stage::Validate,
                request_json: serde_json::to_string(&spec).unwrap_or_default(),
                progress_json: serde_json::to_string(&progress).unwrap_or_default(),
                description: r.description.clone(),
                created_ms: now,
                updated_ms: now,
                lease_owner: self.owner.clone(),
                lease_expires_ms: now + self.lease_ms,
                error: String::new(),
                eval_json: String::new(),
                report_json: String::new(),
                report_md: String::new(),
                deployed_model: String::new(),
            })
            .await?;
        self.set_progress(&id, |p| *p = progress.clone());
        self.spawn(&id);
        tracing::info!(job = %id, task = %spec.task, teacher = %spec.teacher, target = %spec.target, "distill job submitted");
        Ok(id)
    }
}
