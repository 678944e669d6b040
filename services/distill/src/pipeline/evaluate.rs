//! The evaluate stage: student and teacher on the same evals, agreement, latency, throughput, size;
//! the measurements are stored with the job for the report.
use std::{path::Path, sync::Arc, time::Instant};

use retort_training::{EvalReport, Example, GenEvalReport, TaskKind, engine, eval};

use super::{Engine, JobSpec, Labelled};
use crate::{
    Error,
    data::{self, Item},
    report::{Evaluation, GenerationEval},
};

impl Engine {
    pub(super) async fn evaluate(
        self: &Arc<Self>,
        id: &str,
        spec: &JobSpec,
    ) -> Result<String, Error> {
        let labelled = self.labelled(id)?;
        let (train, evals) = self.load_items(id)?;
        let features = data::features(&train, &evals, &spec.template, spec.task);
        let artefact = self.artefact_dir(id);
        let spec2 = spec.clone();
        let eval = tokio::task::spawn_blocking(move || {
            evaluate_blocking(&artefact, &spec2, &evals, labelled, features)
        })
        .await
        .map_err(|source| Error::Thread {
            what: "evaluation",
            source,
        })??;
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
}

/// The size of an artefact folder, in bytes.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The evaluate stage's work (CPU-bound: runs on a blocking thread).
fn evaluate_blocking(
    artefact: &Path,
    spec: &JobSpec,
    evals: &[Item],
    labelled: Labelled,
    features: data::Features,
) -> Result<Evaluation, Error> {
    if spec.task == TaskKind::Generation {
        return evaluate_generation(artefact, spec, evals, labelled, features);
    }
    let predictor = engine::load(artefact)?;
    let prompts: Vec<String> = evals
        .iter()
        .map(|e| data::render(&spec.template, &e.text))
        .collect();
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let mut predicted = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(256) {
        predicted.extend(engine::predict(&predictor, chunk));
    }
    let throughput = texts.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
    let teacher = &labelled.eval_teacher;
    let agree_pairs: Vec<(&str, &str)> = predicted
        .iter()
        .zip(teacher)
        .filter_map(|((s, _), t)| t.as_deref().map(|t| (s.as_str(), t)))
        .collect();
    let agreement = if agree_pairs.is_empty() {
        0.0
    } else {
        agree_pairs.iter().filter(|(s, t)| s == t).count() as f64 / agree_pairs.len() as f64
    };
    let (student_eval, teacher_eval, student_accuracy, teacher_accuracy) = if spec.gold_evals {
        let gold: Vec<Example> = prompts
            .iter()
            .zip(evals)
            .map(|(p, e)| Example::new(p.clone(), e.label.clone().unwrap_or_default()))
            .collect();
        // Compare case-insensitively: map each gold label to the teacher label it names.
        let canon = |l: &str| {
            labelled
                .labels
                .iter()
                .find(|k| k.eq_ignore_ascii_case(l))
                .cloned()
                .unwrap_or_else(|| l.to_string())
        };
        let gold: Vec<Example> = gold
            .into_iter()
            .map(|e| Example::new(e.text, canon(&e.label)))
            .collect();
        let s = eval::report(&gold, &predicted, 5)?;
        let t_pred: Vec<(String, f32)> = teacher
            .iter()
            .map(|t| (t.clone().unwrap_or_else(|| "(no answer)".into()), 1.0))
            .collect();
        let t = eval::report(&gold, &t_pred, 5)?;
        let (sa, ta) = (s.accuracy, t.accuracy);
        (s, Some(t), Some(sa), Some(ta))
    } else {
        let pairs: Vec<(Example, (String, f32))> = prompts
            .iter()
            .zip(teacher)
            .zip(&predicted)
            .filter_map(|((p, t), s)| {
                t.as_ref()
                    .map(|t| (Example::new(p.clone(), t.clone()), s.clone()))
            })
            .collect();
        if pairs.is_empty() {
            return Err(Error::Job(
                "the teacher answered none of the evals: nothing to compare with".into(),
            ));
        }
        let (ex, pr): (Vec<Example>, Vec<(String, f32)>) = pairs.into_iter().unzip();
        (eval::report(&ex, &pr, 5)?, None, None, None)
    };
    let timed: Vec<&str> = texts.iter().copied().take(500).collect();
    let latency = engine::measure_latency(&predictor, &timed, 20)?;
    let artefact_bytes = folder_bytes(artefact);
    let meta = predictor.metadata();
    let train = meta.train.clone();
    Ok(Evaluation {
        task: TaskKind::Classification,
        generation: None,
        teacher: spec.teacher.clone(),
        student: spec.target.clone(),
        backend: train
            .as_ref()
            .map_or_else(retort_training::backend::name, |t| t.backend.clone()),
        labels: labelled.labels.clone(),
        features,
        label_stats: labelled.stats.clone(),
        n_evals: evals.len(),
        student_accuracy,
        teacher_accuracy,
        agreement,
        agreement_n: agree_pairs.len(),
        student_eval,
        teacher_eval,
        latency,
        throughput_per_sec: throughput,
        parameters: meta.num_params,
        artefact_bytes,
        training: train.as_ref().into(),
        teacher_usage: labelled.usage.clone(),
        gateway_latency: None,
        deployed_model: None,
    })
}

/// A generation student's evaluation: its answers and the teacher's on the same evals, exact match
/// and character error rate against the expected answers (or the student's against the teacher's
/// without them), identical answers between the two, errors with examples, latency of one greedy
/// generation.
fn evaluate_generation(
    artefact: &Path,
    spec: &JobSpec,
    evals: &[Item],
    labelled: Labelled,
    features: data::Features,
) -> Result<Evaluation, Error> {
    let generator = engine::load_generator(artefact)?;
    let prompts: Vec<String> = evals
        .iter()
        .map(|e| data::render(&spec.template, &e.text))
        .collect();
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let mut generated = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(128) {
        generated.extend(generator.generate_batch(chunk));
    }
    let throughput = texts.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
    let mean_output_tokens = generated
        .iter()
        .map(|g| g.output_tokens as f64)
        .sum::<f64>()
        / generated.len().max(1) as f64;
    let student: Vec<String> = generated.into_iter().map(|g| g.text).collect();
    let teacher = &labelled.eval_teacher;
    // Student and teacher on the evals the teacher answered.
    let answered: Vec<(Example, String)> = prompts
        .iter()
        .zip(teacher)
        .zip(&student)
        .filter_map(|((p, t), s)| {
            t.as_ref()
                .map(|t| (Example::new(p.clone(), t.clone()), s.clone()))
        })
        .collect();
    let agreement = if answered.is_empty() {
        0.0
    } else {
        answered.iter().filter(|(t, s)| t.label == *s).count() as f64 / answered.len() as f64
    };
    let (student_gen, teacher_gen): (GenEvalReport, Option<GenEvalReport>) = if spec.gold_evals {
        let gold: Vec<Example> = prompts
            .iter()
            .zip(evals)
            .map(|(p, e)| Example::new(p.clone(), e.label.clone().unwrap_or_default()))
            .collect();
        // A failed teacher call counts as an empty (wrong) answer.
        let t: Vec<String> = teacher
            .iter()
            .map(|t| t.clone().unwrap_or_default())
            .collect();
        (
            eval::gen_report(&gold, &student, 10)?,
            Some(eval::gen_report(&gold, &t, 10)?),
        )
    } else {
        if answered.is_empty() {
            return Err(Error::Job(
                "the teacher answered none of the evals: nothing to compare with".into(),
            ));
        }
        let (ex, st): (Vec<Example>, Vec<String>) = answered.iter().cloned().unzip();
        (eval::gen_report(&ex, &st, 10)?, None)
    };
    let agreement_cer = if answered.is_empty() {
        None
    } else {
        let (ex, st): (Vec<Example>, Vec<String>) = answered.iter().cloned().unzip();
        Some(eval::gen_report(&ex, &st, 0)?.cer)
    };
    let timed: Vec<&str> = texts.iter().copied().take(200).collect();
    let latency = engine::measure_generation_latency(&generator, &timed, 5)?;
    let meta = generator.metadata();
    let train = meta.train.clone();
    let student_accuracy = spec.gold_evals.then_some(student_gen.exact_match);
    let teacher_accuracy = teacher_gen.as_ref().map(|t| t.exact_match);
    Ok(Evaluation {
        task: TaskKind::Generation,
        teacher: spec.teacher.clone(),
        student: spec.target.clone(),
        backend: train
            .as_ref()
            .map_or_else(retort_training::backend::name, |t| t.backend.clone()),
        labels: Vec::new(),
        features,
        label_stats: labelled.stats.clone(),
        n_evals: evals.len(),
        student_accuracy,
        teacher_accuracy,
        agreement,
        agreement_n: answered.len(),
        student_eval: EvalReport {
            n: student_gen.examples,
            accuracy: student_gen.exact_match,
            per_class: Vec::new(),
            confusions: Vec::new(),
        },
        teacher_eval: None,
        generation: Some(GenerationEval {
            student_cer: student_gen.cer,
            teacher_cer: teacher_gen.as_ref().map(|t| t.cer),
            agreement_cer,
            mean_output_tokens,
            student: student_gen,
            teacher: teacher_gen,
        }),
        latency,
        throughput_per_sec: throughput,
        parameters: meta.num_params,
        artefact_bytes: folder_bytes(artefact),
        training: train.as_ref().into(),
        teacher_usage: labelled.usage.clone(),
        gateway_latency: None,
        deployed_model: None,
    })
}
