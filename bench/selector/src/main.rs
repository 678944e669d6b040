//! The selector's exhaustive grid: every arm (student class × size serving the task's kind) trained
//! on every suite task on the teacher's labels, scored on the gold evals; one JSON line per
//! (task, arm, budget) in `bench/selector/grid.jsonl`.
//!
//! ```sh
//! bench/selector/fetch-suite.sh --out /tmp/suite                  # the 13 tasks
//! cargo run -p retort-bench-selector -- --suite /tmp/suite [--tasks a,b] [--arms linear/tiny,...]
//!   (the dev profile is enough: training and serving run in retort-training, built at opt-level 3)
//! bench/selector/.venv/bin/python bench/selector/baseline.py --work /tmp/suite-grid   # sklearn rows
//! ```
//!
//! The teacher is the provider simulator in dataset mode (each task's `teacher.jsonl`, its error
//! rate and kind of wrong answer, seed 0), asked over HTTP for every training and eval prompt, as a
//! distillation job asks it through the gateway. Students train on the teacher's answers (wrong ones
//! included) with the task's template stripped, 15 % held out for early stopping; every arm's budget
//! is bounded (`--max-epochs`, `--max-train-secs` per arm), and each arm also gets a probe row (a
//! fraction of the data for one epoch: a learning-curve point the selector learns from). Rows that
//! are already in the output file are skipped, so a run resumes where it stopped.
//!
//! Each row: accuracy on the gold evals (generation: exact match, plus character error rate), the
//! teacher's accuracy on the same evals, training seconds and examples/s, single-prediction latency
//! p50/p99 in-process (the serving path: `Predictor::classify`, `Generator::generate`), the saved
//! artefact's bytes, and a cost-per-1,000-requests estimate (see [`CPU_USD_PER_HOUR`] and
//! [`TEACHER_USD_PER_MTOK`]).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use retort_sim::{AnswerMode, ModelBehavior, SimConfig, WrongAnswers};
use retort_training::data::{self, Example, LabelVocab, SplitMix64};
use retort_training::{
    GenTrainJob, StudentClass, StudentSpec, TaskKind, TrainJob, TrainOptions, engine, eval,
};
use serde::Deserialize;
use serde_json::json;

/// One CPU core's price, for the students' serving cost (an on-demand cloud vCPU, roughly).
const CPU_USD_PER_HOUR: f64 = 0.04;
/// The teacher's list price per million tokens (input, output): a frontier model's.
const TEACHER_USD_PER_MTOK: (f64, f64) = (3.0, 15.0);
/// Characters per token, for the teacher's token counts.
const CHARS_PER_TOKEN: f64 = 4.0;

#[derive(Parser, Debug)]
#[command(about = "Trains every student arm on every suite task (the selector's grid)")]
struct Args {
    /// The suite `fetch-suite.sh --out DIR` built.
    #[arg(long, default_value = "/tmp/suite")]
    suite: PathBuf,
    /// Where the rows go (appended; rows already there are skipped).
    #[arg(long, default_value = "bench/selector/grid.jsonl")]
    out: PathBuf,
    /// Where each task's teacher-labelled data is written (for the scikit-learn baseline).
    #[arg(long, default_value = "/tmp/suite-grid")]
    work: PathBuf,
    /// Only these tasks (comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// Only these arms (`class/size`, comma-separated); every arm serving the task's kind by default.
    #[arg(long, value_delimiter = ',')]
    arms: Vec<String>,
    /// At most this many epochs per full run.
    #[arg(long, default_value_t = 8)]
    max_epochs: usize,
    /// Stop an arm after the first epoch past this many seconds of training.
    #[arg(long, default_value_t = 20.0)]
    max_train_secs: f64,
    /// Fraction of the training data a probe trains on (one epoch); 0 skips probes.
    #[arg(long, default_value_t = 0.25)]
    probe_fraction: f64,
    /// Single predictions timed per arm.
    #[arg(long, default_value_t = 300)]
    latency_samples: usize,
    /// At most this many gold evals scored per arm (generation decodes are slow).
    #[arg(long, default_value_t = 1000)]
    max_evals: usize,
}

#[derive(Deserialize, Debug)]
struct Task {
    name: String,
    kind: String,
    template: String,
    #[serde(default)]
    labels: Vec<String>,
    teacher_error_rate: f64,
    wrong_answers: String,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}
#[derive(Deserialize)]
struct Choice {
    message: Message,
}
#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

fn render(template: &str, text: &str) -> String {
    template.replace("{input}", text)
}

/// Asks the simulated teacher `model` every prompt over HTTP (32 at a time); answers in order.
async fn ask_all(
    client: &reqwest::Client,
    base: &str,
    model: &str,
    prompts: &[String],
) -> Result<Vec<String>> {
    let url = format!("{base}/v1/chat/completions");
    let answers: Vec<Result<String>> = futures::stream::iter(prompts.iter())
        .map(|p| {
            let body = json!({"model": model, "messages": [{"role": "user", "content": p}]});
            let (client, url) = (client.clone(), url.clone());
            async move {
                let r: Completion = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                Ok(r.choices
                    .into_iter()
                    .next()
                    .and_then(|c| c.message.content)
                    .unwrap_or_default()
                    .trim()
                    .to_string())
            }
        })
        .buffered(32)
        .collect()
        .await;
    answers.into_iter().collect()
}

/// The arms serving `kind`, in order of increasing cost.
fn arms(kind: TaskKind, only: &[String]) -> Vec<StudentSpec> {
    let mut out = Vec::new();
    for class in StudentClass::ALL.into_iter().filter(|c| c.task() == kind) {
        for size in StudentClass::SIZES {
            let spec = StudentSpec {
                class,
                size: size.to_string(),
            };
            if only.is_empty() || only.contains(&spec.to_string()) {
                out.push(spec);
            }
        }
    }
    out
}

/// Teacher cost of 1,000 requests: the rendered prompts' and answers' tokens at list price.
fn teacher_cost_per_1k(prompts: &[String], answers: &[String]) -> f64 {
    let n = prompts.len().max(1) as f64;
    let input: f64 = prompts
        .iter()
        .map(|p| p.chars().count() as f64)
        .sum::<f64>()
        / n;
    let output: f64 = answers
        .iter()
        .map(|a| a.chars().count() as f64)
        .sum::<f64>()
        / n;
    let tokens = |chars: f64| (chars / CHARS_PER_TOKEN).ceil().max(1.0);
    1000.0 * (tokens(input) * TEACHER_USD_PER_MTOK.0 + tokens(output) * TEACHER_USD_PER_MTOK.1)
        / 1e6
}

/// A student's cost of 1,000 requests: its single-prediction CPU time on one core.
fn student_cost_per_1k(p50_us: f64) -> f64 {
    1000.0 * p50_us * 1e-6 * CPU_USD_PER_HOUR / 3600.0
}

fn key(task: &str, arm: &str, probe: bool) -> String {
    format!("{task}\u{0}{arm}\u{0}{probe}")
}

/// (task, arm, probe) of every row already in `out`.
fn done_rows(out: &Path) -> HashSet<String> {
    let Ok(text) = std::fs::read_to_string(out) else {
        return HashSet::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some(key(
                v.get("task")?.as_str()?,
                v.get("arm")?.as_str()?,
                v.get("probe")?.as_bool()?,
            ))
        })
        .collect()
}

/// Splits off a validation fraction by a seeded shuffle (generation answers are mostly unique, so
/// no stratification).
fn split_plain(examples: &[Example], fraction: f64, seed: u64) -> data::Split {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let n_val = ((examples.len() as f64 * fraction).round() as usize)
        .clamp(1, examples.len().saturating_sub(1).max(1));
    data::Split {
        validation: order[..n_val]
            .iter()
            .map(|&i| examples[i].clone())
            .collect(),
        train: order[n_val..]
            .iter()
            .map(|&i| examples[i].clone())
            .collect(),
    }
}

/// The first `fraction` of a seeded shuffle of `examples` (at least 2 per label kept by taking a
/// stratified split's training part).
fn subsample(examples: &[Example], fraction: f64, classification: bool) -> Result<Vec<Example>> {
    if fraction >= 1.0 {
        return Ok(examples.to_vec());
    }
    Ok(if classification {
        data::split(examples, 1.0 - fraction, 11)?.train
    } else {
        split_plain(examples, 1.0 - fraction, 11).train
    })
}

struct Prepared {
    task: Task,
    kind: TaskKind,
    /// Teacher-labelled rendered prompts.
    labelled: Vec<Example>,
    /// Gold-labelled rendered eval prompts.
    gold: Vec<Example>,
    teacher_accuracy: f64,
    teacher_cost: f64,
    labels: Option<LabelVocab>,
}

async fn prepare(
    args: &Args,
    client: &reqwest::Client,
    base: &str,
    dir: &Path,
) -> Result<Prepared> {
    let task: Task = serde_json::from_str(&std::fs::read_to_string(dir.join("task.json"))?)?;
    let kind = match task.kind.as_str() {
        "classification" => TaskKind::Classification,
        "generation" => TaskKind::Generation,
        other => bail!("task {}: unknown kind {other}", task.name),
    };
    let train = data::read_jsonl(dir.join("train.jsonl"))?;
    let mut evals = data::read_jsonl(dir.join("evals.jsonl"))?;
    evals.truncate(args.max_evals);
    let train_prompts: Vec<String> = train
        .iter()
        .map(|e| render(&task.template, &e.text))
        .collect();
    let eval_prompts: Vec<String> = evals
        .iter()
        .map(|e| render(&task.template, &e.text))
        .collect();
    let started = Instant::now();
    let train_answers = ask_all(client, base, &task.name, &train_prompts).await?;
    let eval_answers = ask_all(client, base, &task.name, &eval_prompts).await?;
    eprintln!(
        "{}: teacher answered {} prompts in {:.1}s",
        task.name,
        train_prompts.len() + eval_prompts.len(),
        started.elapsed().as_secs_f64()
    );
    let classification = kind == TaskKind::Classification;
    let canon = |a: &str| -> Option<String> {
        if classification {
            task.labels
                .iter()
                .find(|l| l.eq_ignore_ascii_case(a))
                .cloned()
        } else {
            (!a.is_empty()).then(|| a.to_string())
        }
    };
    let labelled: Vec<Example> = train_prompts
        .iter()
        .zip(&train_answers)
        .filter_map(|(p, a)| canon(a).map(|l| Example::new(p.clone(), l)))
        .collect();
    let teacher_right = evals
        .iter()
        .zip(&eval_answers)
        .filter(|(e, a)| canon(a).as_deref() == Some(e.label.as_str()))
        .count();
    let gold: Vec<Example> = eval_prompts
        .iter()
        .zip(&evals)
        .map(|(p, e)| Example::new(p.clone(), e.label.clone()))
        .collect();
    // The teacher-labelled inputs (template stripped) for the scikit-learn baseline.
    let work = args.work.join(&task.name);
    std::fs::create_dir_all(&work)?;
    let raw_train: Vec<Example> = train
        .iter()
        .zip(&train_answers)
        .filter_map(|(e, a)| canon(a).map(|l| Example::new(e.text.clone(), l)))
        .collect();
    data::write_jsonl(work.join("train.jsonl"), &raw_train)?;
    data::write_jsonl(work.join("evals.jsonl"), &evals)?;
    std::fs::write(
        work.join("teacher.json"),
        json!({"task": task.name, "kind": task.kind, "teacher_accuracy": teacher_right as f64 / evals.len().max(1) as f64}).to_string(),
    )?;
    let labels = classification
        .then(|| LabelVocab::from_labels(task.labels.clone()))
        .transpose()?;
    Ok(Prepared {
        teacher_accuracy: teacher_right as f64 / evals.len().max(1) as f64,
        teacher_cost: teacher_cost_per_1k(&eval_prompts, &eval_answers),
        task,
        kind,
        labelled,
        gold,
        labels,
    })
}

/// Trains one arm under one budget and measures it; the row to write.
fn run_arm(
    args: &Args,
    p: &Prepared,
    spec: &StudentSpec,
    fraction: f64,
    max_epochs: usize,
) -> Result<serde_json::Value> {
    let classification = p.kind == TaskKind::Classification;
    let pool = subsample(&p.labelled, fraction, classification)?;
    let parts = if classification {
        data::split(&pool, 0.15, 7)?
    } else {
        split_plain(&pool, 0.15, 7)
    };
    let options = TrainOptions::new()
        .with_max_epochs(max_epochs)
        .with_patience(2)
        .with_template(Some(p.task.template.clone()))
        .with_max_train_secs(Some(args.max_train_secs));
    let texts: Vec<&str> = p
        .gold
        .iter()
        .take(args.latency_samples)
        .map(|e| e.text.as_str())
        .collect();
    let artefact = std::env::temp_dir().join(format!(
        "retort-grid-{}-{}-{}",
        std::process::id(),
        p.task.name,
        spec.to_string().replace('/', "-")
    ));
    let mut on_epoch = |_: &retort_training::EpochProgress| ControlFlow::Continue(());
    let row = match &p.labels {
        Some(labels) => {
            let job = TrainJob {
                config: spec.config(labels.len())?,
                labels: labels.clone(),
                train: &parts.train,
                validation: &parts.validation,
                options,
                checkpoint_dir: None,
            };
            let trained = engine::train(&job, &mut on_epoch)?;
            let report = engine::evaluate(&trained.predictor, &p.gold, 0)?;
            let latency = eval::time_each(&texts, 20, |t| {
                std::hint::black_box(trained.predictor.classify(t));
            })?;
            let bytes = engine::save(&trained.predictor, &artefact)?;
            json!({
                "accuracy": report.accuracy,
                "train": trained.report,
                "latency": latency,
                "artefact_bytes": bytes,
            })
        }
        None => {
            let job = GenTrainJob {
                config: spec.config(0)?,
                train: &parts.train,
                validation: &parts.validation,
                options,
                checkpoint_dir: None,
            };
            let trained = engine::train_generator(&job, &mut on_epoch)?;
            let report = engine::evaluate_generation(&trained.generator, &p.gold, 0)?;
            let latency = engine::measure_generation_latency(
                &trained.generator,
                &texts[..texts.len().min(100)],
                5,
            )?;
            let bytes = trained.generator.save(&artefact)?;
            json!({
                "accuracy": report.exact_match,
                "cer": report.cer,
                "train": trained.report,
                "latency": latency,
                "artefact_bytes": bytes,
            })
        }
    };
    let _ = std::fs::remove_dir_all(&artefact);
    let train = &row["train"];
    let accuracy = row["accuracy"].as_f64().unwrap_or(0.0);
    let p50 = row["latency"]["p50_us"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "task": p.task.name,
        "kind": p.kind.name(),
        "arm": spec.to_string(),
        "class": spec.class.name(),
        "size": spec.size,
        "probe": fraction < 1.0 || max_epochs < args.max_epochs,
        "budget": {"fraction": fraction, "max_epochs": max_epochs, "max_train_secs": args.max_train_secs},
        "accuracy": accuracy,
        "cer": row.get("cer"),
        "teacher_accuracy": p.teacher_accuracy,
        "student_minus_teacher": accuracy - p.teacher_accuracy,
        "val_accuracy": train["best_val_accuracy"],
        "epochs_run": train["epochs_run"],
        "best_epoch": train["best_epoch"],
        "train_examples": train["train_examples"],
        "train_secs": train["train_secs"],
        "examples_per_sec": train["examples_per_sec"],
        "latency_p50_us": p50,
        "latency_p99_us": row["latency"]["p99_us"],
        "artefact_bytes": row["artefact_bytes"],
        "num_params": train["num_params"],
        "cost_per_1k_usd": student_cost_per_1k(p50),
        "teacher_cost_per_1k_usd": p.teacher_cost,
        "n_evals": p.gold.len(),
        "backend": train["backend"],
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut tasks: Vec<PathBuf> = std::fs::read_dir(&args.suite)
        .with_context(|| format!("reading the suite {}", args.suite.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("task.json").exists())
        .filter(|p| {
            args.tasks.is_empty()
                || p.file_name()
                    .is_some_and(|n| args.tasks.iter().any(|t| n == t.as_str()))
        })
        .collect();
    tasks.sort();
    if tasks.is_empty() {
        bail!(
            "no tasks under {} (run bench/selector/fetch-suite.sh --out DIR)",
            args.suite.display()
        );
    }
    // One simulated teacher per task: dataset mode on its teacher.jsonl.
    let mut models = BTreeMap::new();
    for dir in &tasks {
        let task: Task = serde_json::from_str(&std::fs::read_to_string(dir.join("task.json"))?)?;
        models.insert(
            task.name.clone(),
            ModelBehavior {
                mode: AnswerMode::Dataset,
                dataset: Some(dir.join("teacher.jsonl")),
                error_rate: task.teacher_error_rate,
                wrong_answers: if task.wrong_answers == "typo" {
                    WrongAnswers::Typo
                } else {
                    WrongAnswers::Other
                },
                ..Default::default()
            },
        );
    }
    let sim = retort_sim::spawn(SimConfig {
        strict_models: true,
        models,
        ..SimConfig::default()
    })
    .await?;
    let client = reqwest::Client::new();
    let done = done_rows(&args.out);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)?;
    let grid_started = Instant::now();
    for dir in &tasks {
        let p = prepare(&args, &client, &sim.base_url(), dir).await?;
        let mut budgets = vec![(1.0, args.max_epochs)];
        if args.probe_fraction > 0.0 && args.probe_fraction < 1.0 {
            budgets.push((args.probe_fraction, 1));
        }
        for spec in arms(p.kind, &args.arms) {
            for &(fraction, epochs) in &budgets {
                let probe = fraction < 1.0;
                if done.contains(&key(&p.task.name, &spec.to_string(), probe)) {
                    continue;
                }
                let started = Instant::now();
                let row =
                    tokio::task::block_in_place(|| run_arm(&args, &p, &spec, fraction, epochs));
                match row {
                    Ok(mut row) => {
                        row["wall_secs"] = json!(started.elapsed().as_secs_f64());
                        eprintln!(
                            "{} {spec}{}: accuracy {:.3} (teacher {:.3}), {:.1}s, p99 {:.0} µs",
                            p.task.name,
                            if probe { " (probe)" } else { "" },
                            row["accuracy"].as_f64().unwrap_or(0.0),
                            p.teacher_accuracy,
                            started.elapsed().as_secs_f64(),
                            row["latency_p99_us"].as_f64().unwrap_or(0.0),
                        );
                        writeln!(out, "{row}")?;
                        out.flush()?;
                    }
                    Err(e) => eprintln!("{} {spec}: failed: {e:#}", p.task.name),
                }
            }
        }
    }
    eprintln!(
        "grid: {:.0}s for {} task(s)",
        grid_started.elapsed().as_secs_f64(),
        tasks.len()
    );
    Ok(())
}
