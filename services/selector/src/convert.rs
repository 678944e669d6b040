//! The wire forms (`retort.v1`) of the selector's types, checked: a malformed message is an
//! `InvalidArgument` naming the field.
use retort_proto::v1 as pb;
use retort_training::{
    TaskKind,
    selector::{Budget, Estimate, Experience, Objective, Outcome, Ranked, TaskContext},
};

use crate::Error;

fn bad(m: String) -> Error {
    Error::InvalidArgument(m)
}

fn fraction(what: &str, v: f64) -> Result<f64, Error> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(bad(format!("{what} must be between 0 and 1 (got {v})")))
    }
}

fn non_negative(what: &str, v: f64) -> Result<f64, Error> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(bad(format!(
            "{what} must be a non-negative number (got {v})"
        )))
    }
}

pub fn kind(s: &str) -> Result<TaskKind, Error> {
    match s.trim() {
        "" | "classification" => Ok(TaskKind::Classification),
        "generation" => Ok(TaskKind::Generation),
        other => Err(bad(format!(
            "task kind {other:?}: expected classification or generation"
        ))),
    }
}

/// A task description as the model reads it.
pub fn context(t: Option<&pb::TaskDescription>) -> Result<TaskContext, Error> {
    let t = t.ok_or_else(|| bad("task: missing (describe the task)".into()))?;
    Ok(TaskContext {
        kind: kind(&t.kind)?,
        n_train: t.n_train as usize,
        n_evals: t.n_evals as usize,
        n_labels: t.n_labels as usize,
        label_balance: fraction("task.label_balance", t.label_balance)?,
        majority_fraction: fraction("task.majority_fraction", t.majority_fraction)?,
        mean_input_chars: non_negative("task.mean_input_chars", t.mean_input_chars)?,
        p95_input_chars: non_negative("task.p95_input_chars", t.p95_input_chars)?,
        mean_output_chars: non_negative("task.mean_output_chars", t.mean_output_chars)?,
        mean_input_words: non_negative("task.mean_input_words", t.mean_input_words)?,
        vocabulary: t.vocabulary as usize,
        type_token_ratio: fraction("task.type_token_ratio", t.type_token_ratio)?,
        alpha_fraction: fraction("task.alpha_fraction", t.alpha_fraction)?,
        digit_fraction: fraction("task.digit_fraction", t.digit_fraction)?,
        punct_fraction: fraction("task.punct_fraction", t.punct_fraction)?,
        non_ascii_fraction: fraction("task.non_ascii_fraction", t.non_ascii_fraction)?,
        teacher_accuracy: t
            .teacher_accuracy
            .map(|v| fraction("task.teacher_accuracy", v))
            .transpose()?,
        teacher_usd_per_1k: t
            .teacher_usd_per_1k
            .map(|v| non_negative("task.teacher_usd_per_1k", v))
            .transpose()?,
        teacher_latency_us: t
            .teacher_latency_us
            .map(|v| non_negative("task.teacher_latency_us", v))
            .transpose()?,
    })
}

/// A run as the model learns from it.
pub fn run(r: &pb::Run) -> Result<Experience, Error> {
    let arm = r
        .arm
        .parse()
        .map_err(|e| bad(format!("run.arm {:?}: {e}", r.arm)))?;
    let budget = |v: f64, what: &str| -> Result<f64, Error> {
        if v == 0.0 { Ok(1.0) } else { fraction(what, v) }
    };
    if r.task.trim().is_empty() {
        return Err(bad("run.task: missing (the task's id)".into()));
    }
    Ok(Experience {
        task: r.task.clone(),
        context: context(r.context.as_ref())?,
        arm,
        budget: Budget {
            data_fraction: budget(r.data_fraction, "run.data_fraction")?,
            epoch_fraction: budget(r.epoch_fraction, "run.epoch_fraction")?,
        },
        outcome: Outcome {
            accuracy: fraction("run.accuracy", r.accuracy)?,
            latency_us: non_negative("run.latency_p99_us", r.latency_p99_us)?,
            usd_per_1k: non_negative("run.usd_per_1k", r.usd_per_1k)?,
            train_secs: non_negative("run.train_secs", r.train_secs)?,
        },
        evaluated: r.evaluated as usize,
    })
}

/// The objective; absent, `max_cost_savings` with a 1-point drop.
pub fn objective(o: Option<&pb::Objective>) -> Result<Objective, Error> {
    let o = o.cloned().unwrap_or_default();
    Objective::from_parts(
        &o.kind,
        o.max_accuracy_drop_points,
        o.max_latency_us,
        o.max_usd_per_1k,
        o.min_accuracy_percent,
    )
    .map_err(|e| bad(e.to_string().replace("invalid configuration: ", "")))
}

fn estimate(e: Estimate) -> Option<pb::Estimate> {
    Some(pb::Estimate {
        mean: e.mean,
        sd: e.sd,
    })
}

pub fn ranked(r: &Ranked) -> pb::RankedArm {
    pb::RankedArm {
        arm: r.arm.to_string(),
        accuracy: estimate(r.accuracy),
        log10_latency_us: estimate(r.log10_latency_us),
        log10_usd_per_1k: estimate(r.log10_usd_per_1k),
        latency_us: r.latency_us(),
        usd_per_1k: r.usd_per_1k(),
        p_feasible: r.p_feasible,
        p_best: r.p_best,
        score: r.score,
        probed: r.probed,
    }
}
