//! `retort-bench-distill`: the spam distillation, end to end, measured. For each teacher error rate:
//! the simulator answers as the teacher (dataset mode over SpamAssassin), every training and
//! held-out mail is labelled by the teacher *through the gateway*, students are trained on the
//! teacher's labels and scored on the gold labels, a scikit-learn baseline is trained on the same
//! labels in the same run, the best student is deployed to the gateway's `local` provider over
//! `retort.v1.Students`, and its latency is measured through the gateway (OpenAI chat, keep-alive,
//! one request at a time). Writes a Markdown section with every number and assumption.
//!
//! A second section does the same for short generation (date normalisation, synthetic data generated
//! by the bench, `seq2seq` students, exact match and character error rate): see [`generation`].
//!
//! usage: retort-bench-distill --data DIR [--out FILE] [--error-rates 0,0.1] [--students linear/small,mlp/tiny]
//!        [--python PY] [--latency-requests N] [--prices FILE] [--teacher-price-model M]
//!        [--compute-usd-per-core-hour X] [--teacher-latency-ms MS]
//!        [--sections spam,generation] [--gen-train N] [--gen-evals N] [--gen-students seq2seq/tiny]
//!        [--gen-epochs N] [--gen-error-rates 0,0.1] [--gen-latency-requests N]
//! DIR holds train.jsonl, eval.jsonl and teacher.jsonl from `retort data fetch-spam --out DIR` (needed
//! for the spam section only).
#![allow(clippy::print_stdout)]
use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::StreamExt;
use retort_proto::v1::{self as pb, students_client::StudentsClient};
use retort_training::{
    Example, LabelVocab, Predictor, StudentSpec, TrainJob, TrainOptions,
    backend::{self, Inference, Training},
    data::read_jsonl,
};
use serde_json::{Value, json};

mod generation;

const ADMIN: &str = "sk-bench-admin";

struct Args {
    data: Option<PathBuf>,
    sections: Vec<String>,
    generation: generation::GenArgs,
    out: PathBuf,
    error_rates: Vec<f64>,
    students: Vec<String>,
    python: PathBuf,
    latency_requests: usize,
    prices: PathBuf,
    teacher_price_model: String,
    compute_usd_per_core_hour: f64,
    teacher_latency_ms: f64,
    concurrency: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut map: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let Some(k) = k.strip_prefix("--") else {
            bail!("unexpected argument {k}")
        };
        map.insert(
            k.to_owned(),
            it.next().with_context(|| format!("--{k} needs a value"))?,
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let get = |k: &str, d: &str| map.get(k).cloned().unwrap_or_else(|| d.to_owned());
    Ok(Args {
        data: map.get("data").map(PathBuf::from),
        sections: {
            let sections: Vec<String> = get("sections", "spam,generation")
                .split(',')
                .map(str::to_owned)
                .collect();
            if let Some(s) = sections
                .iter()
                .find(|s| !matches!(s.as_str(), "spam" | "generation"))
            {
                bail!("--sections: unknown section {s:?} (the sections are spam, generation)");
            }
            sections
        },
        generation: generation::GenArgs {
            train: get("gen-train", "2000").parse()?,
            evals: get("gen-evals", "300").parse()?,
            students: get("gen-students", "seq2seq/tiny")
                .split(',')
                .map(str::to_owned)
                .collect(),
            error_rates: get("gen-error-rates", "0,0.1")
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()?,
            max_epochs: get("gen-epochs", "20").parse()?,
            latency_requests: get("gen-latency-requests", "500").parse()?,
            concurrency: get("concurrency", "32").parse()?,
        },
        out: PathBuf::from(get(
            "out",
            &root.join("bench/out/distill.md").display().to_string(),
        )),
        error_rates: get("error-rates", "0,0.1")
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()?,
        students: get("students", "linear/small,mlp/tiny")
            .split(',')
            .map(str::to_owned)
            .collect(),
        python: PathBuf::from(get(
            "python",
            &root
                .join("bench/distill/.venv/bin/python")
                .display()
                .to_string(),
        )),
        latency_requests: get("latency-requests", "3000").parse()?,
        prices: PathBuf::from(get(
            "prices",
            &root
                .join("deploy/retort.example.toml")
                .display()
                .to_string(),
        )),
        teacher_price_model: get("teacher-price-model", "claude-sonnet-4-5"),
        compute_usd_per_core_hour: get("compute-usd-per-core-hour", "0.05").parse()?,
        teacher_latency_ms: get("teacher-latency-ms", "800").parse()?,
        concurrency: get("concurrency", "32").parse()?,
    })
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Pcts {
    p50: f64,
    p95: f64,
    p99: f64,
    mean: f64,
}

fn pcts(mut v: Vec<Duration>) -> Pcts {
    v.sort();
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64 * 1e6;
    Pcts {
        p50: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
        mean,
    }
}

struct Labelled {
    labels: Vec<String>,
    input_tokens: u64,
    output_tokens: u64,
    secs: f64,
}

/// Asks the teacher (through the gateway) for every text, `concurrency` at a time.
async fn label(
    http: &reqwest::Client,
    url: &str,
    texts: &[String],
    concurrency: usize,
) -> anyhow::Result<Labelled> {
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<(String, u64, u64)>> =
        futures::stream::iter(texts.iter().cloned())
            .map(|text| async move {
                let r: Value = http
                .post(url)
                .bearer_auth(ADMIN)
                .json(&json!({"model": "teacher", "messages": [{"role": "user", "content": text}]}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
                let answer = r["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .trim()
                    .to_lowercase();
                Ok((
                    answer,
                    r["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
                    r["usage"]["completion_tokens"].as_u64().unwrap_or(0),
                ))
            })
            .buffered(concurrency)
            .collect()
            .await;
    let mut out = Labelled {
        labels: Vec::with_capacity(texts.len()),
        input_tokens: 0,
        output_tokens: 0,
        secs: 0.0,
    };
    for r in results {
        let (a, i, o) = r?;
        out.labels.push(a);
        out.input_tokens += i;
        out.output_tokens += o;
    }
    out.secs = t0.elapsed().as_secs_f64();
    Ok(out)
}

fn accuracy(pred: &[String], gold: &[Example]) -> f64 {
    pred.iter()
        .zip(gold)
        .filter(|(p, g)| **p == g.label)
        .count() as f64
        / gold.len().max(1) as f64
}

struct StudentRun {
    spec: String,
    accuracy: f64,
    agreement: f64,
    train_secs: f64,
    examples_per_sec: f64,
    epochs: usize,
    params: usize,
    size_bytes: u64,
    in_process: Pcts,
    dir: PathBuf,
}

fn train_student(
    spec: &str,
    train: &[Example],
    validation: &[Example],
    eval: &[Example],
    teacher_eval: &[String],
    dir: &Path,
) -> anyhow::Result<StudentRun> {
    let labels = LabelVocab::from_labels(["ham", "spam"])?;
    let s: StudentSpec = spec.parse()?;
    let job = TrainJob {
        config: s.config(labels.len())?,
        labels,
        train,
        validation,
        options: TrainOptions::new().with_max_epochs(12).with_patience(2),
        checkpoint_dir: None,
    };
    let t0 = Instant::now();
    let trained = retort_training::trainer::train::<Training>(&job, &backend::device(), |p| {
        eprintln!(
            "  {spec} epoch {}: loss {:.4} val {:.4} ({:.1}s)",
            p.epoch, p.train_loss, p.val_accuracy, p.epoch_secs
        );
        std::ops::ControlFlow::Continue(())
    })?;
    let train_secs = t0.elapsed().as_secs_f64();
    let size_bytes = trained.predictor.save(dir)?;
    let p = Predictor::<Inference>::load_for_serving(dir)?;
    let pred: Vec<String> = eval
        .iter()
        .map(|e| p.classify(&e.text).label.to_owned())
        .collect();
    let mut times = Vec::new();
    for e in eval.iter().cycle().take(eval.len().max(1000)) {
        let t = Instant::now();
        std::hint::black_box(p.classify(&e.text));
        times.push(t.elapsed());
    }
    Ok(StudentRun {
        spec: spec.to_owned(),
        accuracy: accuracy(&pred, eval),
        agreement: pred
            .iter()
            .zip(teacher_eval)
            .filter(|(a, b)| a == b)
            .count() as f64
            / eval.len().max(1) as f64,
        train_secs,
        examples_per_sec: trained.report.examples_per_sec,
        epochs: trained.report.epochs_run,
        params: trained.report.num_params,
        size_bytes,
        in_process: pcts(times),
        dir: dir.to_owned(),
    })
}

struct RateResult {
    error_rate: f64,
    teacher_accuracy: f64,
    label_secs: f64,
    label_reqs: usize,
    teacher_in_per_req: f64,
    teacher_out_per_req: f64,
    students: Vec<StudentRun>,
    baseline: Value,
    best: usize,
    gateway: Pcts,
    deploy_ms: f64,
    pipeline_secs: f64,
    student_in_per_req: f64,
}

/// The simulated teacher (`models.teacher` in a `retort-sim` described by `sim_toml`) behind an in-process
/// gateway with the `local` provider for students and the bench's admin key, plus a keep-alive client for
/// its OpenAI chat endpoint.
struct Teacher {
    sim: retort_sim::SimHandle,
    gw: retort_gateway::Running,
    http: reqwest::Client,
    url: String,
}

impl Teacher {
    /// `gateway_extra` is appended to the gateway's TOML (e.g. an alias over `teacher`).
    async fn start(sim_toml: &str, gateway_extra: &str) -> anyhow::Result<Teacher> {
        let sim = retort_sim::spawn(retort_sim::SimConfig::from_toml(sim_toml)?).await?;
        let gw_toml = format!(
            r#"
            [server]
            http_addr = "127.0.0.1:0"
            grpc_addr = "127.0.0.1:0"
            [[users]]
            name = "bench"
            key = "{ADMIN}"
            admin = true
            [providers.sim]
            kind = "openai"
            base_url = "{}/v1"
            [providers.local]
            kind = "local"
            [models.teacher]
            provider = "sim"
            {gateway_extra}
            "#,
            sim.base_url()
        );
        let gw =
            retort_gateway::start(retort_gateway::config::Config::from_toml(&gw_toml)?).await?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?;
        let url = format!("http://{}/v1/chat/completions", gw.http_addr);
        Ok(Teacher { sim, gw, http, url })
    }
}

async fn run_rate(
    a: &Args,
    data: &Path,
    rate: f64,
    train: &[Example],
    eval: &[Example],
    work: &Path,
) -> anyhow::Result<RateResult> {
    let started = Instant::now();
    eprintln!("== teacher error rate {rate}");
    let sim_toml = format!(
        "[models.teacher]\nmode = \"dataset\"\ndataset = {:?}\nerror_rate = {rate}\n",
        data.join("teacher.jsonl").display().to_string()
    );
    let Teacher { sim, gw, http, url } =
        Teacher::start(&sim_toml, "[aliases.spam]\ntargets = [\"teacher\"]\n").await?;

    // 1. Label: every training mail and every held-out mail, through the gateway.
    let texts: Vec<String> = train.iter().chain(eval).map(|e| e.text.clone()).collect();
    let labelled = label(&http, &url, &texts, a.concurrency).await?;
    let (teacher_train, teacher_eval) = labelled.labels.split_at(train.len());
    let teacher_accuracy = accuracy(teacher_eval, eval);
    eprintln!(
        "  labelled {} mails in {:.1}s; teacher accuracy on gold {:.4}",
        texts.len(),
        labelled.secs,
        teacher_accuracy
    );
    let unknown = labelled
        .labels
        .iter()
        .filter(|l| *l != "spam" && *l != "ham")
        .count();
    if unknown > 0 {
        bail!("the teacher gave {unknown} answers that are neither spam nor ham");
    }
    let noisy: Vec<Example> = train
        .iter()
        .zip(teacher_train)
        .map(|(e, l)| Example::new(e.text.clone(), l.clone()))
        .collect();
    // Validation for early stopping: 10% of the teacher-labelled training mails (teacher labels, no gold).
    let cut = noisy.len() * 9 / 10;
    let (fit, validation) = noisy.split_at(cut);

    // 2. Baseline, on the same teacher labels.
    let dir = work.join(format!("rate-{rate}"));
    std::fs::create_dir_all(&dir)?;
    let teacher_train_path = dir.join("teacher-train.jsonl");
    retort_training::data::write_jsonl(&teacher_train_path, &noisy)?;
    let out = std::process::Command::new(&a.python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline.py"))
        .arg(&teacher_train_path)
        .arg(data.join("eval.jsonl"))
        .output()
        .with_context(|| format!("running the baseline with {}", a.python.display()))?;
    if !out.status.success() {
        bail!("baseline failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let baseline: Value = serde_json::from_slice(&out.stdout)?;
    eprintln!("  baseline: {baseline}");

    // 3. Students.
    let mut students = Vec::new();
    for spec in &a.students {
        let s = train_student(
            spec,
            fit,
            validation,
            eval,
            teacher_eval,
            &dir.join(spec.replace('/', "-")),
        )?;
        eprintln!(
            "  {spec}: accuracy {:.4} in {:.1}s",
            s.accuracy, s.train_secs
        );
        students.push(s);
    }
    let best = (0..students.len())
        .max_by(|&i, &j| {
            students[i].accuracy.total_cmp(&students[j].accuracy).then(
                students[j]
                    .in_process
                    .p50
                    .total_cmp(&students[i].in_process.p50),
            )
        })
        .context("no students")?;

    // 4. Deploy the best one, first on the alias, and time it through the gateway.
    let t0 = Instant::now();
    let mut sc = StudentsClient::connect(format!("http://{}", gw.grpc_addr)).await?;
    let mut req = tonic::Request::new(pb::DeployStudentRequest {
        name: "spam".into(),
        artefact_path: students[best].dir.display().to_string(),
        route: "spam".into(),
        first: true,
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse()?);
    sc.deploy_student(req).await?;
    let deploy_ms = t0.elapsed().as_secs_f64() * 1e3;
    let pipeline_secs = started.elapsed().as_secs_f64();
    let bodies: Vec<Vec<u8>> = eval
        .iter()
        .map(|e| serde_json::to_vec(&json!({"model": "distilled/spam", "messages": [{"role": "user", "content": e.text}]})).unwrap_or_default())
        .collect();
    let mut times = Vec::with_capacity(a.latency_requests);
    let mut student_in = 0u64;
    for (k, body) in bodies
        .iter()
        .cycle()
        .take(a.latency_requests + 300)
        .enumerate()
    {
        let t = Instant::now();
        let r = http
            .post(&url)
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        let d = t.elapsed();
        if !status.is_success() {
            bail!("the deployed student answered {status}: {v}");
        }
        if k >= 300 {
            times.push(d);
            student_in += v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        }
    }
    let gateway = pcts(times);
    eprintln!(
        "  through the gateway: p50 {:.0} µs p99 {:.0} µs",
        gateway.p50, gateway.p99
    );
    gw.shutdown().await;
    sim.shutdown();
    Ok(RateResult {
        error_rate: rate,
        teacher_accuracy,
        label_secs: labelled.secs,
        label_reqs: texts.len(),
        teacher_in_per_req: labelled.input_tokens as f64 / texts.len() as f64,
        teacher_out_per_req: labelled.output_tokens as f64 / texts.len() as f64,
        students,
        baseline,
        best,
        gateway,
        deploy_ms,
        pipeline_secs,
        student_in_per_req: student_in as f64 / a.latency_requests.max(1) as f64,
    })
}

fn teacher_prices(path: &Path, model: &str) -> anyhow::Result<(f64, f64, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t: toml::Table = toml::from_str(&text)?;
    let prices = t
        .get("prices")
        .and_then(|p| p.as_array())
        .context("no [[prices]] in the price file")?;
    let p = prices
        .iter()
        .rev()
        .find(|p| p.get("model").and_then(|m| m.as_str()) == Some(model))
        .with_context(|| format!("{model} has no price in {}", path.display()))?;
    let f = |k: &str| {
        p.get(k)
            .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
            .unwrap_or(0.0)
    };
    let from = p
        .get("effective_from")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned();
    Ok((f("input"), f("output"), from))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let work = std::env::temp_dir().join(format!("retort-bench-distill-{}", std::process::id()));
    let (pin, pout, price_from) = teacher_prices(&a.prices, &a.teacher_price_model)?;
    let mut md = String::new();
    if a.sections.iter().any(|s| s == "spam") {
        let data = a
            .data
            .as_deref()
            .context("--data DIR is required for the spam section (or --sections generation)")?;
        md.push_str(&spam_section(&a, data, &work, pin, pout, &price_from).await?);
    }
    if a.sections.iter().any(|s| s == "generation") {
        let prices = a
            .prices
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let from = format!("{price_from}, price table `{prices}`");
        let section = generation::run(
            &a.generation,
            &work,
            (pin, pout, &a.teacher_price_model, &from),
            a.compute_usd_per_core_hour,
            a.teacher_latency_ms,
        )
        .await?;
        md.push_str(&section);
    }
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&a.out, &md)?;
    println!("{md}");
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// The SpamAssassin section.
async fn spam_section(
    a: &Args,
    data: &Path,
    work: &Path,
    pin: f64,
    pout: f64,
    price_from: &str,
) -> anyhow::Result<String> {
    let train = read_jsonl(data.join("train.jsonl"))?;
    let eval = read_jsonl(data.join("eval.jsonl"))?;
    let mut results = Vec::new();
    for &rate in &a.error_rates {
        results.push(run_rate(a, data, rate, &train, &eval, work).await?);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## SpamAssassin distillation — `retort-bench-distill`\n"
    );
    let _ = writeln!(
        md,
        "Data: `retort data fetch-spam` ({} training mails, {} held out with gold labels). Teacher: the simulator in \
         dataset mode over the same corpus, called through the gateway (OpenAI chat, {} at a time), wrong on the \
         given fraction of prompts. Students train on the teacher's labels of the training mails (10% of them for \
         early stopping) on {} ({} cores); every accuracy is on the gold labels of the held-out mails. Baseline: \
         scikit-learn HashingVectorizer (word uni+bigrams, 2^20) + TF-IDF (sublinear) + LogisticRegression(C=20), \
         trained on the same teacher labels in the same run. Gateway latency: the best student deployed over \
         `retort.v1.Students`, then {} OpenAI chat requests of held-out mails one at a time over keep-alive \
         (after 300 warm-up), timed at the client, {} build.\n",
        train.len(),
        eval.len(),
        a.concurrency,
        backend::name(),
        cores,
        a.latency_requests,
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        }
    );
    let _ = writeln!(
        md,
        "| teacher error rate | teacher acc. (gold) | baseline acc. | student | student acc. | agreement w/ teacher | train s | train ex/s | epochs | params | artefact | in-process p50/p99 µs |"
    );
    let _ = writeln!(
        md,
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &results {
        for (i, s) in r.students.iter().enumerate() {
            let _ = writeln!(
                md,
                "| {:.2} | {:.2} % | {:.2} % | {}{} | {:.2} % | {:.2} % | {:.1} | {:.0} | {} | {} | {:.1} MB | {:.0} / {:.0} |",
                r.error_rate,
                r.teacher_accuracy * 100.0,
                r.baseline["accuracy"].as_f64().unwrap_or(0.0) * 100.0,
                s.spec,
                if i == r.best { " **(best)**" } else { "" },
                s.accuracy * 100.0,
                s.agreement * 100.0,
                s.train_secs,
                s.examples_per_sec,
                s.epochs,
                s.params,
                s.size_bytes as f64 / 1e6,
                s.in_process.p50,
                s.in_process.p99
            );
        }
    }
    let _ = writeln!(
        md,
        "\n| teacher error rate | labelling (reqs, s) | deploy ms | pipeline s (label+baseline+train+eval+deploy) | gateway p50 / p95 / p99 µs | student beats teacher by |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        let best = &r.students[r.best];
        let _ = writeln!(
            md,
            "| {:.2} | {} in {:.1} | {:.0} | {:.0} | {:.0} / {:.0} / {:.0} | {:+.2} points |",
            r.error_rate,
            r.label_reqs,
            r.label_secs,
            r.deploy_ms,
            r.pipeline_secs,
            r.gateway.p50,
            r.gateway.p95,
            r.gateway.p99,
            (best.accuracy - r.teacher_accuracy) * 100.0
        );
    }
    if let Some(r) = results.first() {
        let best = &r.students[r.best];
        let teacher_per_1k =
            1000.0 * (r.teacher_in_per_req * pin + r.teacher_out_per_req * pout) / 1e6;
        let student_secs = best.in_process.mean / 1e6;
        let student_per_1k = 1000.0 * student_secs / 3600.0 * a.compute_usd_per_core_hour;
        let _ = writeln!(
            md,
            "\nCost and speed against a frontier teacher (`{}` at ${pin}/M input, ${pout}/M output tokens, price table \
             `{}` effective {price_from}): the teacher's mean usage per mail was {:.0} input and {:.1} output tokens (the \
             simulator's counts), so **${:.4} per 1,000 mails**; the student ({}) uses {:.0} µs of one core per mail \
             (in-process mean), priced at ${} per core-hour (assumption): **${:.8} per 1,000 mails**, a cost ratio of \
             **{:.0}×**. Speed: assuming the frontier teacher answers in {} ms (assumption: the simulator answered at \
             zero latency), the deployed student's {:.2} ms p50 through the gateway is **{:.0}× faster**. The student's \
             own token counts (its featuriser) are {:.0} input and 1 output token per mail.\n",
            a.teacher_price_model,
            a.prices
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
            r.teacher_in_per_req,
            r.teacher_out_per_req,
            teacher_per_1k,
            best.spec,
            best.in_process.mean,
            a.compute_usd_per_core_hour,
            student_per_1k,
            teacher_per_1k / student_per_1k.max(1e-12),
            a.teacher_latency_ms,
            r.gateway.p50 / 1e3,
            a.teacher_latency_ms / (r.gateway.p50 / 1e3).max(1e-9),
            r.student_in_per_req,
        );
    }
    let _ = writeln!(
        md,
        "Baseline details: {}\n",
        results
            .iter()
            .map(|r| format!("error rate {}: {}", r.error_rate, r.baseline))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(md)
}
