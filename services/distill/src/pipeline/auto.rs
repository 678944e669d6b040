//! Auto-target (`target: "auto"`): the selector (`retort.v1.Selector`, over gRPC) ranks every
//! class × size for the job's objective; the top arms are screened with cheap probes (successive
//! halving: a quarter of the data for a quarter of the epochs, then the better half with twice
//! that), each probe recorded with the selector and fed back into its ranking; the last arm standing
//! is trained in full by the train stage. The report says what was chosen and why — the arms
//! considered, probed and dropped with their interim numbers, the winner's predicted and measured
//! numbers, the Pareto front, the compute spent against training every arm — or that the teacher
//! should be kept, with the evidence. Every job, whatever its target, records its final result with
//! the selector, so each one teaches it.
//!
//! The screening runs as the job's `screen` stage (after `label`); its findings are kept in the job
//! folder as `auto.json`, which the later stages read.
use std::{
    ops::ControlFlow,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use retort_proto::v1::{self as pb, selector_client::SelectorClient};
use retort_time::now_ms;
use retort_training::{
    Example, LabelVocab, StudentSpec, TaskKind, TrainJob, TrainOptions,
    data::split,
    engine,
    selector::{Budget, HalvingPlan, Objective, TaskContext},
};
use serde::{Deserialize, Serialize};

use super::{Engine, JobSpec, Labelled, write_atomic};
use crate::{
    Error,
    data::{self, Item},
    report::{Evaluation, Report},
};

/// The target that asks for auto-target.
pub const AUTO: &str = "auto";
/// Evals needed to rank arms: below this, one eval moves an accuracy by more than 5 points.
pub const MIN_EVALS: usize = 20;
/// Arms screened (the selector's top ones).
const SCREEN_ARMS: usize = 4;
/// The first screening round's budget.
const FIRST_BUDGET: Budget = Budget {
    data_fraction: 0.25,
    epoch_fraction: 0.25,
};
/// Evals timed for a probe's latency.
const LATENCY_SAMPLES: usize = 100;

pub fn is_auto(target: &str) -> bool {
    target.trim().eq_ignore_ascii_case(AUTO)
}

/// The job's objective as the selector reads it.
pub fn objective(spec: &JobSpec) -> Result<Objective, Error> {
    Objective::from_parts(
        &spec.objective,
        spec.max_accuracy_drop_points,
        spec.max_latency_us,
        spec.max_usd_per_1k,
        spec.min_accuracy_percent,
    )
    .map_err(|e| Error::InvalidArgument(e.to_string().replace("invalid configuration: ", "")))
}

/// One arm as the selector ranked it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmView {
    pub arm: String,
    pub accuracy: f64,
    pub accuracy_sd: f64,
    pub latency_us: f64,
    pub usd_per_1k: f64,
    pub p_feasible: f64,
    pub p_best: f64,
    pub score: f64,
    pub probed: bool,
}

impl From<&pb::RankedArm> for ArmView {
    fn from(r: &pb::RankedArm) -> ArmView {
        let a = r.accuracy.unwrap_or_default();
        ArmView {
            arm: r.arm.clone(),
            accuracy: a.mean,
            accuracy_sd: a.sd,
            latency_us: r.latency_us,
            usd_per_1k: r.usd_per_1k,
            p_feasible: r.p_feasible,
            p_best: r.p_best,
            score: r.score,
            probed: r.probed,
        }
    }
}

/// One probe: an arm trained on part of the data for part of the epochs, measured on the evals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub round: usize,
    pub arm: String,
    pub data_fraction: f64,
    pub epoch_fraction: f64,
    pub epochs: usize,
    pub train_examples: usize,
    pub accuracy: f64,
    pub latency_p99_us: f64,
    pub usd_per_1k: f64,
    pub train_secs: f64,
}

/// One screening round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundView {
    pub round: usize,
    pub data_fraction: f64,
    pub epochs: usize,
    pub alive: Vec<String>,
    pub kept: Vec<String>,
    pub dropped: Vec<String>,
    /// The selector's probe-corrected ranking of the arms alive, after the round.
    pub ranking: Vec<ArmView>,
}

/// What the screen stage found (`auto.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Screening {
    pub objective: Objective,
    pub objective_text: String,
    pub context: TaskContext,
    /// What the selector had learned from when asked.
    pub selector_runs: u64,
    pub selector_tasks: u64,
    /// The ranking before any probe: every arm considered.
    pub prior: Vec<ArmView>,
    pub rounds: Vec<RoundView>,
    pub probes: Vec<Probe>,
    /// The arm trained in full, and the selector's prediction of its full run.
    pub winner: String,
    pub predicted: ArmView,
    /// Whether keep-the-teacher ranked first once the probes were in.
    pub keep_teacher_predicted: bool,
    pub probe_secs: f64,
}

/// A task as the selector's wire form describes it.
pub fn describe(c: &TaskContext) -> pb::TaskDescription {
    pb::TaskDescription {
        kind: c.kind.name().into(),
        n_train: c.n_train as u64,
        n_evals: c.n_evals as u64,
        n_labels: c.n_labels as u32,
        label_balance: c.label_balance,
        majority_fraction: c.majority_fraction,
        mean_input_chars: c.mean_input_chars,
        p95_input_chars: c.p95_input_chars,
        mean_output_chars: c.mean_output_chars,
        mean_input_words: c.mean_input_words,
        vocabulary: c.vocabulary as u64,
        type_token_ratio: c.type_token_ratio,
        alpha_fraction: c.alpha_fraction,
        digit_fraction: c.digit_fraction,
        punct_fraction: c.punct_fraction,
        non_ascii_fraction: c.non_ascii_fraction,
        teacher_accuracy: c.teacher_accuracy,
        teacher_usd_per_1k: c.teacher_usd_per_1k,
        teacher_latency_us: c.teacher_latency_us,
    }
}

fn pb_objective(spec: &JobSpec) -> pb::Objective {
    pb::Objective {
        kind: spec.objective.clone(),
        max_accuracy_drop_points: spec.max_accuracy_drop_points,
        max_latency_us: spec.max_latency_us,
        max_usd_per_1k: spec.max_usd_per_1k,
        min_accuracy_percent: spec.min_accuracy_percent,
    }
}

/// The expected answer of each eval: the gold label (as the teacher's label set spells it), or the
/// teacher's answer without gold (None where the teacher gave none).
fn references(spec: &JobSpec, labelled: &Labelled, evals: &[Item]) -> Vec<Option<String>> {
    if spec.gold_evals {
        evals
            .iter()
            .map(|e| {
                e.label.as_ref().map(|l| {
                    labelled
                        .labels
                        .iter()
                        .find(|k| k.eq_ignore_ascii_case(l))
                        .cloned()
                        .unwrap_or_else(|| l.clone())
                })
            })
            .collect()
    } else {
        labelled.eval_teacher.clone()
    }
}

fn accuracy_of(answers: &[String], reference: &[Option<String>]) -> f64 {
    let scored: Vec<(&String, &String)> = answers
        .iter()
        .zip(reference)
        .filter_map(|(a, r)| r.as_ref().map(|r| (a, r)))
        .collect();
    if scored.is_empty() {
        return 0.0;
    }
    scored.iter().filter(|(a, r)| a == r).count() as f64 / scored.len() as f64
}

impl Engine {
    /// The task as the selector sees it: the data's statistics and the teacher's accuracy, cost
    /// and latency.
    fn task_context(
        &self,
        spec: &JobSpec,
        labelled: &Labelled,
        train: &[Item],
        evals: &[Item],
    ) -> TaskContext {
        let inputs: Vec<&str> = train.iter().map(|i| i.text.as_str()).collect();
        let outputs: Vec<&str> = labelled.train.iter().map(|e| e.label.as_str()).collect();
        let mut c = TaskContext::from_data(spec.task, &inputs, &outputs);
        c.n_evals = evals.len();
        if spec.gold_evals {
            let teacher: Vec<String> = labelled
                .eval_teacher
                .iter()
                .map(|t| t.clone().unwrap_or_default())
                .collect();
            c.teacher_accuracy = Some(accuracy_of(&teacher, &references(spec, labelled, evals)));
        }
        let u = &labelled.usage;
        let day = retort_time::day_of(now_ms());
        c.teacher_usd_per_1k = u
            .served_models
            .iter()
            .chain(std::iter::once(&spec.teacher))
            .find_map(|m| self.prices.lookup(m, day))
            .map(|p| {
                (u.mean_input_tokens * p.input + u.mean_output_tokens * p.output) / 1e6 * 1000.0
            });
        c.teacher_latency_us = (u.mean_latency_ms > 0.0).then_some(u.mean_latency_ms * 1000.0);
        c
    }

    async fn selector(&self) -> Result<SelectorClient<tonic::transport::Channel>, Error> {
        let addr = self.cfg.selector_addr.trim();
        if addr.is_empty() {
            return Err(Error::FailedPrecondition(
                "target auto needs the selector: set [distill] selector_addr (retort up sets it)"
                    .into(),
            ));
        }
        let endpoint = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .map_err(|e| Error::Config(format!("selector_addr {endpoint:?}: {e}")))?
            .connect()
            .await
            .map_err(|e| Error::Selector(format!("connecting to {endpoint}: {e}")))?;
        Ok(SelectorClient::new(channel))
    }

    fn keyed<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Ok(v) = format!("Bearer {}", self.cfg.selector_key()).parse() {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    async fn recommend(
        &self,
        client: &mut SelectorClient<tonic::transport::Channel>,
        spec: &JobSpec,
        task: &pb::TaskDescription,
        probes: &[pb::Run],
    ) -> Result<pb::RecommendResponse, Error> {
        Ok(client
            .recommend(self.keyed(pb::RecommendRequest {
                task: Some(task.clone()),
                objective: Some(pb_objective(spec)),
                probes: probes.to_vec(),
                draws: 128,
                seed: spec.seed,
            }))
            .await
            .map_err(|s| Error::Selector(format!("Recommend: {}", s.message())))?
            .into_inner())
    }

    /// The screen stage: rank, probe by successive halving, pick the arm to train in full.
    pub(super) async fn screen(
        self: &Arc<Self>,
        id: &str,
        spec: &JobSpec,
        flag: &Arc<AtomicBool>,
        deadline: Option<i64>,
    ) -> Result<String, Error> {
        let objective = objective(spec)?;
        let labelled = self.labelled(id)?;
        let (train_items, evals) = self.load_items(id)?;
        let ctx = self.task_context(spec, &labelled, &train_items, &evals);
        let task = describe(&ctx);
        let mut client = self.selector().await?;
        let prior = self.recommend(&mut client, spec, &task, &[]).await?;
        let candidates: Vec<StudentSpec> = prior
            .arms
            .iter()
            .filter_map(|a| a.arm.parse::<StudentSpec>().ok())
            .take(SCREEN_ARMS)
            .collect();
        if candidates.is_empty() {
            return Err(Error::Job("the selector offered no student arm".into()));
        }
        let generation = spec.task == TaskKind::Generation;
        let vocab = (!generation)
            .then(|| LabelVocab::from_labels(labelled.labels.clone()))
            .transpose()?;
        let parts = if generation {
            super::train::split_unstratified(&labelled.train, 0.15, spec.seed)
        } else {
            split(&labelled.train, 0.15, spec.seed)
        }
        .map_err(|e| Error::Job(format!("cannot hold out a validation split: {e}")))?;
        let prompts: Vec<String> = evals
            .iter()
            .map(|e| data::render(&spec.template, &e.text))
            .collect();
        let reference = references(spec, &labelled, &evals);
        let plan = HalvingPlan::new(candidates.len(), 2, FIRST_BUDGET);
        let mut alive = candidates.clone();
        let mut probes: Vec<Probe> = Vec::new();
        let mut runs: Vec<pb::Run> = Vec::new();
        let mut rounds: Vec<RoundView> = Vec::new();
        let total_rounds = plan.rounds.len();
        let shared = Arc::new((parts, prompts, reference, vocab));
        for (r, round) in plan.rounds.iter().enumerate() {
            let epochs =
                ((spec.max_epochs as f64 * round.budget.epoch_fraction).round() as usize).max(1);
            let subset = subset_of(
                &shared.0.train,
                round.budget.data_fraction,
                spec.seed,
                generation,
            );
            let subset = Arc::new(subset);
            for (k, arm) in alive.iter().enumerate() {
                self.check(flag, deadline, spec.time_limit_secs)?;
                let interim = interim(&probes, r + 1);
                self.set_progress(id, |p| {
                    p.epoch = 0;
                    p.max_epochs = epochs as u32;
                    p.message = format!(
                        "screening round {}/{total_rounds}: {} arms alive, probing {arm} ({}/{}) on {:.0}% of the data for {epochs} epochs{interim}",
                        r + 1,
                        alive.len(),
                        k + 1,
                        alive.len(),
                        round.budget.data_fraction * 100.0,
                    );
                });
                let _permit = self
                    .training
                    .acquire()
                    .await
                    .map_err(|_| Error::Cancelled)?;
                let started = now_ms();
                let measured = {
                    let (arm, shared, subset, flag) = (
                        arm.clone(),
                        Arc::clone(&shared),
                        Arc::clone(&subset),
                        Arc::clone(flag),
                    );
                    let seed = spec.seed;
                    let price = self.cfg.compute_usd_per_cpu_hour;
                    tokio::task::spawn_blocking(move || {
                        let (parts, prompts, reference, vocab) = &*shared;
                        probe(
                            &arm,
                            vocab.as_ref(),
                            &subset,
                            &parts.validation,
                            prompts,
                            reference,
                            epochs,
                            seed,
                            price,
                            &flag,
                        )
                    })
                    .await
                    .map_err(|source| Error::Thread {
                        what: "probe",
                        source,
                    })??
                };
                if flag.load(Ordering::SeqCst) {
                    return Err(Error::Cancelled);
                }
                let p = Probe {
                    round: r + 1,
                    arm: arm.to_string(),
                    data_fraction: round.budget.data_fraction,
                    epoch_fraction: round.budget.epoch_fraction,
                    epochs,
                    train_examples: subset.len(),
                    accuracy: measured.accuracy,
                    latency_p99_us: measured.latency_p99_us,
                    usd_per_1k: measured.usd_per_1k,
                    train_secs: ((now_ms() - started) as f64 / 1000.0).max(measured.train_secs),
                };
                let run = pb::Run {
                    task: id.to_string(),
                    context: Some(task.clone()),
                    arm: p.arm.clone(),
                    data_fraction: p.data_fraction,
                    epoch_fraction: p.epoch_fraction,
                    accuracy: p.accuracy,
                    latency_p99_us: p.latency_p99_us,
                    usd_per_1k: p.usd_per_1k,
                    train_secs: p.train_secs,
                    evaluated: evals.len() as u64,
                };
                // Every probe teaches the selector, whatever this job decides.
                if let Err(s) = client
                    .record(self.keyed(pb::RecordRequest {
                        runs: vec![run.clone()],
                    }))
                    .await
                {
                    tracing::warn!(job = %id, error = %s.message(), "selector: a probe could not be recorded");
                }
                runs.push(run);
                probes.push(p);
            }
            let ranked = self.recommend(&mut client, spec, &task, &runs).await?;
            let names: Vec<String> = alive.iter().map(ToString::to_string).collect();
            let order: Vec<&pb::RankedArm> = ranked
                .arms
                .iter()
                .filter(|a| names.contains(&a.arm))
                .collect();
            let keep = plan.keep(alive.len());
            let kept: Vec<String> = order.iter().take(keep).map(|a| a.arm.clone()).collect();
            let dropped: Vec<String> = names
                .iter()
                .filter(|n| !kept.contains(n))
                .cloned()
                .collect();
            rounds.push(RoundView {
                round: r + 1,
                data_fraction: round.budget.data_fraction,
                epochs,
                alive: names,
                kept: kept.clone(),
                dropped,
                ranking: order.iter().map(|a| ArmView::from(*a)).collect(),
            });
            alive.retain(|a| kept.contains(&a.to_string()));
        }
        let last = self.recommend(&mut client, spec, &task, &runs).await?;
        let winner = alive
            .first()
            .cloned()
            .unwrap_or_else(|| candidates[0].clone())
            .to_string();
        let predicted = last
            .arms
            .iter()
            .find(|a| a.arm == winner)
            .map(ArmView::from)
            .unwrap_or_default();
        let screening = Screening {
            objective_text: objective.describe(),
            objective,
            context: ctx,
            selector_runs: prior.runs,
            selector_tasks: prior.tasks,
            prior: prior.arms.iter().map(ArmView::from).collect(),
            rounds,
            probe_secs: probes.iter().map(|p| p.train_secs).sum(),
            probes,
            winner: winner.clone(),
            predicted: predicted.clone(),
            keep_teacher_predicted: last.keep_teacher,
        };
        write_atomic(
            &self.job_dir(id).join("auto.json"),
            &serde_json::to_vec_pretty(&screening).unwrap_or_default(),
        )?;
        Ok(format!(
            "{} of {} arms screened in {} rounds ({:.1} s): {winner} goes on to full training (predicted {:.1}% ± {:.1}){}",
            candidates.len(),
            screening.prior.len(),
            screening.rounds.len(),
            screening.probe_secs,
            predicted.accuracy * 100.0,
            predicted.accuracy_sd * 100.0,
            if last.keep_teacher {
                "; the selector expects no student to meet the objective: keep the teacher unless the full run says otherwise"
            } else {
                ""
            }
        ))
    }

    /// What the screen stage found, for an auto job that has screened.
    pub(super) fn screening(&self, id: &str) -> Result<Option<Screening>, Error> {
        let path = self.job_dir(id).join("auto.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| Error::Json {
                    context: path.display().to_string(),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading", &path, e)),
        }
    }

    /// The spec a stage runs with: an auto job's target is its screening's winner once screened.
    pub(super) fn resolved(&self, id: &str, spec: &JobSpec) -> Result<JobSpec, Error> {
        if !is_auto(&spec.target) {
            return Ok(spec.clone());
        }
        let mut s = spec.clone();
        if let Some(screening) = self.screening(id)? {
            s.target = screening.winner;
        }
        Ok(s)
    }

    /// Records a finished job's result with the selector (any target). A failure is logged: the
    /// job's result stands without it.
    pub(super) async fn record_result(
        &self,
        id: &str,
        spec: &JobSpec,
        eval: &Evaluation,
        report: &Report,
    ) {
        if self.cfg.selector_addr.trim().is_empty() {
            return;
        }
        let run = async {
            let labelled = self.labelled(id)?;
            let (train, evals) = self.load_items(id)?;
            let ctx = self.task_context(spec, &labelled, &train, &evals);
            let mut client = self.selector().await?;
            client
                .record(self.keyed(pb::RecordRequest {
                    runs: vec![pb::Run {
                        task: id.to_string(),
                        context: Some(describe(&ctx)),
                        arm: spec.target.clone(),
                        data_fraction: 1.0,
                        epoch_fraction: 1.0,
                        accuracy: eval.student_accuracy.unwrap_or(eval.agreement).clamp(0.0, 1.0),
                        latency_p99_us: eval.latency.p99_us,
                        usd_per_1k: report.costs.student_usd_per_1k,
                        train_secs: eval.training.train_secs,
                        evaluated: eval.n_evals as u64,
                    }],
                }))
                .await
                .map_err(|s| Error::Selector(format!("Record: {}", s.message())))?;
            Ok::<(), Error>(())
        };
        if let Err(e) = run.await {
            tracing::warn!(job = %id, error = %e, "selector: the job's result could not be recorded");
        }
    }

    /// The auto-target section of an auto job's report (JSON and Markdown), with its verdict.
    pub(super) fn auto_section(
        &self,
        id: &str,
        spec: &JobSpec,
        eval: &Evaluation,
        report: &Report,
    ) -> Result<Option<(serde_json::Value, String)>, Error> {
        let Some(s) = self.screening(id)? else {
            return Ok(None);
        };
        Ok(Some(auto_report(&s, spec, eval, report)))
    }
}

/// The interim scores so far in a round, for the progress line.
fn interim(probes: &[Probe], round: usize) -> String {
    let this: Vec<String> = probes
        .iter()
        .filter(|p| p.round == round)
        .map(|p| format!("{} {:.1}%", p.arm, p.accuracy * 100.0))
        .collect();
    if this.is_empty() {
        String::new()
    } else {
        format!(" — so far: {}", this.join(", "))
    }
}

/// `fraction` of the training examples: stratified by label for a classifier, by a seeded hash
/// for a generator; at least 8 examples.
fn subset_of(train: &[Example], fraction: f64, seed: u64, generation: bool) -> Vec<Example> {
    if fraction >= 0.999 || train.len() <= 8 {
        return train.to_vec();
    }
    let picked = if generation {
        super::train::split_unstratified(train, 1.0 - fraction, seed ^ 0x5eed).map(|s| s.train)
    } else {
        split(train, 1.0 - fraction, seed ^ 0x5eed).map(|s| s.train)
    };
    match picked {
        Ok(s) if s.len() >= 8 => s,
        _ => train
            .iter()
            .take(8.max((train.len() as f64 * fraction) as usize))
            .cloned()
            .collect(),
    }
}

/// What a probe measured.
struct Measured {
    accuracy: f64,
    latency_p99_us: f64,
    usd_per_1k: f64,
    train_secs: f64,
}

/// Trains `arm` on `train` for `epochs` and measures it on the evals (CPU-bound: a blocking thread).
#[allow(clippy::too_many_arguments)]
fn probe(
    arm: &StudentSpec,
    vocab: Option<&LabelVocab>,
    train: &[Example],
    validation: &[Example],
    prompts: &[String],
    reference: &[Option<String>],
    epochs: usize,
    seed: u64,
    usd_per_cpu_hour: f64,
    flag: &AtomicBool,
) -> Result<Measured, Error> {
    let options = TrainOptions::new().with_seed(seed).with_max_epochs(epochs);
    let mut on_epoch = |_: &retort_training::EpochProgress| {
        if flag.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let timed: Vec<&str> = texts.iter().copied().take(LATENCY_SAMPLES).collect();
    let cost = |mean_us: f64| mean_us / 1e6 / 3600.0 * usd_per_cpu_hour * 1000.0;
    match vocab {
        Some(labels) => {
            let config = arm.config(labels.len())?;
            let t = engine::train(
                &TrainJob {
                    config,
                    labels: labels.clone(),
                    train,
                    validation,
                    options,
                    checkpoint_dir: None,
                },
                &mut on_epoch,
            )?;
            let mut answers = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(256) {
                answers.extend(
                    engine::predict(&t.predictor, chunk)
                        .into_iter()
                        .map(|(l, _)| l),
                );
            }
            let latency = engine::measure_latency(&t.predictor, &timed, 5)?;
            Ok(Measured {
                accuracy: accuracy_of(&answers, reference),
                latency_p99_us: latency.p99_us,
                usd_per_1k: cost(latency.mean_us),
                train_secs: t.report.train_secs,
            })
        }
        None => {
            let config = arm.config(0)?;
            let t = engine::train_generator(
                &retort_training::GenTrainJob {
                    config,
                    train,
                    validation,
                    options,
                    checkpoint_dir: None,
                },
                &mut on_epoch,
            )?;
            let mut answers = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(128) {
                answers.extend(
                    t.generator
                        .generate_batch(chunk)
                        .into_iter()
                        .map(|g| g.text),
                );
            }
            let timed: Vec<&str> = timed.into_iter().take(20).collect();
            let latency = engine::measure_generation_latency(&t.generator, &timed, 2)?;
            Ok(Measured {
                accuracy: accuracy_of(&answers, reference),
                latency_p99_us: latency.p99_us,
                usd_per_1k: cost(latency.mean_us),
                train_secs: t.report.train_secs,
            })
        }
    }
}

/// Non-dominated points (accuracy up, latency and cost down).
fn pareto(points: &[(String, f64, f64, f64)]) -> Vec<(String, f64, f64, f64)> {
    points
        .iter()
        .filter(|(_, a, l, c)| {
            !points.iter().any(|(_, a2, l2, c2)| {
                a2 >= a && l2 <= l && c2 <= c && (a2 > a || l2 < l || c2 < c)
            })
        })
        .cloned()
        .collect()
}

/// The report's auto-target section: the verdict and why.
fn auto_report(
    s: &Screening,
    spec: &JobSpec,
    eval: &Evaluation,
    report: &Report,
) -> (serde_json::Value, String) {
    use std::fmt::Write as _;
    let reference = eval.teacher_accuracy.unwrap_or(1.0);
    let measured = eval.student_accuracy.unwrap_or(eval.agreement);
    let latency = eval.latency.p99_us;
    let cost = report.costs.student_usd_per_1k;
    let met = s.objective.feasible(reference, measured, latency, cost);
    let teacher_accuracy_ok = match &s.objective {
        Objective::MaxAccuracy { .. } => measured >= reference,
        _ => true,
    };
    let distill = met && teacher_accuracy_ok;
    let verdict = if distill {
        format!("distill to {}", spec.target)
    } else {
        "keep the teacher".to_string()
    };
    let why = if distill {
        format!(
            "{} met the objective ({}): accuracy {:.2}% (teacher {:.2}%), p99 {:.0} µs, ${:.2e} per 1,000 requests",
            spec.target,
            s.objective_text,
            measured * 100.0,
            reference * 100.0,
            latency,
            cost
        )
    } else {
        format!(
            "the best screened student, {} trained in full, reached {:.2}% against the teacher's {:.2}% (p99 {:.0} µs): it does not meet the objective ({}){}",
            spec.target,
            measured * 100.0,
            reference * 100.0,
            latency,
            s.objective_text,
            if s.keep_teacher_predicted {
                "; the selector predicted as much after screening"
            } else {
                ""
            }
        )
    };
    // Compute: the probes and the full run, against every arm trained in full (each probed
    // arm's time extrapolated from its largest probe; arms never probed at the mean of those).
    let full_secs = eval.training.train_secs;
    let mut per_arm: Vec<(String, f64)> = Vec::new();
    for p in &s.probes {
        let est = p.train_secs / (p.data_fraction * p.epoch_fraction).max(1e-3);
        match per_arm.iter_mut().find(|(a, _)| *a == p.arm) {
            Some(e) => e.1 = est,
            None => per_arm.push((p.arm.clone(), est)),
        }
    }
    if let Some(w) = per_arm.iter_mut().find(|(a, _)| *a == s.winner) {
        w.1 = full_secs;
    }
    let students = s
        .prior
        .iter()
        .filter(|a| a.arm != "keep-the-teacher")
        .count();
    let mean = if per_arm.is_empty() {
        full_secs
    } else {
        per_arm.iter().map(|(_, t)| t).sum::<f64>() / per_arm.len() as f64
    };
    let all_secs = per_arm.iter().map(|(_, t)| t).sum::<f64>()
        + mean * students.saturating_sub(per_arm.len()) as f64;
    let spent = s.probe_secs + full_secs;
    let share = if all_secs > 0.0 {
        spent / all_secs
    } else {
        0.0
    };
    // The Pareto front over the teacher, the full run and the probed arms' corrected predictions.
    let mut points: Vec<(String, f64, f64, f64)> = vec![
        (
            format!("{} (measured, full run)", spec.target),
            measured,
            latency,
            cost,
        ),
        (
            "keep-the-teacher".into(),
            reference,
            s.context.teacher_latency_us.unwrap_or(1e6),
            s.context.teacher_usd_per_1k.unwrap_or(f64::INFINITY),
        ),
    ];
    if let Some(last) = s.rounds.last() {
        for a in last
            .ranking
            .iter()
            .chain(s.rounds.iter().flat_map(|r| r.ranking.iter()))
        {
            if a.arm != s.winner && !points.iter().any(|p| p.0.starts_with(&a.arm)) {
                points.push((
                    format!("{} (predicted)", a.arm),
                    a.accuracy,
                    a.latency_us,
                    a.usd_per_1k,
                ));
            }
        }
    }
    let front = pareto(&points);
    let dropped: Vec<(String, usize)> = s
        .rounds
        .iter()
        .flat_map(|r| r.dropped.iter().map(move |d| (d.clone(), r.round)))
        .collect();
    let json = serde_json::json!({
        "verdict": verdict,
        "why": why,
        "objective": s.objective_text,
        "objective_met": distill,
        "chosen": spec.target,
        "predicted": s.predicted,
        "measured": {"accuracy": measured, "teacher_accuracy": reference, "latency_p99_us": latency, "usd_per_1k": cost, "train_secs": full_secs},
        "considered": s.prior,
        "probes": s.probes,
        "rounds": s.rounds,
        "dropped": dropped.iter().map(|(a, r)| serde_json::json!({"arm": a, "round": r})).collect::<Vec<_>>(),
        "pareto_front": front.iter().map(|(n, a, l, c)| serde_json::json!({"arm": n, "accuracy": a, "latency_p99_us": l, "usd_per_1k": if c.is_finite() { Some(*c) } else { None }})).collect::<Vec<_>>(),
        "compute": {"probe_secs": s.probe_secs, "full_run_secs": full_secs, "spent_secs": spent, "every_arm_secs_estimate": all_secs, "share_of_every_arm": share},
        "selector": {"runs": s.selector_runs, "tasks": s.selector_tasks},
    });
    let mut m = String::new();
    let _ = writeln!(m, "\n## Auto-target: {verdict}\n");
    let _ = writeln!(m, "{why}.\n");
    let _ = writeln!(
        m,
        "Objective: {}. The selector had learned from {} runs over {} tasks.\n",
        s.objective_text, s.selector_runs, s.selector_tasks
    );
    let _ = writeln!(
        m,
        "| | accuracy | p99 latency | USD / 1k requests |\n|---|---|---|---|"
    );
    let _ = writeln!(
        m,
        "| {} predicted | {:.2}% ± {:.2} | {:.0} µs | {:.2e} |",
        s.winner,
        s.predicted.accuracy * 100.0,
        s.predicted.accuracy_sd * 100.0,
        s.predicted.latency_us,
        s.predicted.usd_per_1k
    );
    let _ = writeln!(
        m,
        "| {} measured | {:.2}% | {:.0} µs | {:.2e} |\n",
        spec.target,
        measured * 100.0,
        latency,
        cost
    );
    let _ = writeln!(
        m,
        "### Arms considered (the selector's ranking before any probe)\n"
    );
    let _ = writeln!(
        m,
        "| arm | accuracy | p99 latency | P(meets) | P(best) | probed |\n|---|---|---|---|---|---|"
    );
    for a in &s.prior {
        let probed = s.probes.iter().any(|p| p.arm == a.arm);
        let _ = writeln!(
            m,
            "| {} | {:.1}% ± {:.1} | {:.0} µs | {:.2} | {:.2} | {} |",
            a.arm,
            a.accuracy * 100.0,
            a.accuracy_sd * 100.0,
            a.latency_us,
            a.p_feasible,
            a.p_best,
            if probed { "yes" } else { "" }
        );
    }
    let _ = writeln!(m, "\n### Screening (successive halving)\n");
    let _ = writeln!(
        m,
        "| round | arm | data | epochs | accuracy | p99 latency | train s | outcome |\n|---|---|---|---|---|---|---|---|"
    );
    for p in &s.probes {
        let outcome = match s.rounds.iter().find(|r| r.round == p.round) {
            Some(r) if r.dropped.contains(&p.arm) => "dropped",
            Some(r) if r.kept.contains(&p.arm) => "kept",
            _ => "",
        };
        let _ = writeln!(
            m,
            "| {} | {} | {:.0}% ({} ex.) | {} | {:.2}% | {:.0} µs | {:.1} | {} |",
            p.round,
            p.arm,
            p.data_fraction * 100.0,
            p.train_examples,
            p.epochs,
            p.accuracy * 100.0,
            p.latency_p99_us,
            p.train_secs,
            outcome
        );
    }
    let _ = writeln!(m, "\n### Pareto front (accuracy ↑, latency ↓, cost ↓)\n");
    let _ = writeln!(
        m,
        "| arm | accuracy | p99 latency | USD / 1k requests |\n|---|---|---|---|"
    );
    for (n, a, l, c) in &front {
        let _ = writeln!(
            m,
            "| {n} | {:.2}% | {:.0} µs | {} |",
            a * 100.0,
            l,
            if c.is_finite() {
                format!("{c:.2e}")
            } else {
                "unknown".into()
            }
        );
    }
    let _ = writeln!(
        m,
        "\n### Compute\n\nScreening {:.1} s + full run {:.1} s = {:.1} s, {:.0}% of training all {} student arms in full (about {:.0} s, estimated from the probes).",
        s.probe_secs,
        full_secs,
        spent,
        share * 100.0,
        students,
        all_secs
    );
    (json, m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_pareto_front_keeps_only_undominated_points() {
        let pts = vec![
            ("a".to_string(), 0.9, 100.0, 1.0),
            ("b".to_string(), 0.8, 200.0, 2.0),
            ("c".to_string(), 0.95, 1000.0, 10.0),
        ];
        let front: Vec<String> = pareto(&pts).into_iter().map(|p| p.0).collect();
        assert_eq!(front, ["a", "c"]);
    }

    #[test]
    fn accuracy_counts_only_evals_with_a_reference() {
        let a = vec!["x".to_string(), "y".to_string(), "z".to_string()];
        let r = vec![Some("x".to_string()), None, Some("q".to_string())];
        assert!((accuracy_of(&a, &r) - 0.5).abs() < 1e-9);
        assert_eq!(accuracy_of(&a, &[None, None, None]), 0.0);
        assert!(is_auto(" AUTO ") && !is_auto("linear/small"));
    }
}
