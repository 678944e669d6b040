//! Training-speed bench: examples per second for every student family on each CPU backend.
//!
//! `cargo run --release -p retort-bench-training [-- --out FILE] [--generation]`
//!
//! `--generation` runs only the generation table: seq2seq/tiny and seq2seq/small on the synthetic
//! date task (`data::synthetic_dates`), on the default backend, trained for a fixed number of
//! epochs; it reports training examples/s, held-out exact match and CER, and single-input
//! generation latency (encode once + cached greedy decoding) p50/p99.
//!
//! Data are synthetic spam/ham mails of ~120 words (generated from a seed, nothing downloaded).
//! Each (backend, class/size) trains for one epoch on a class-specific number of examples (the CNN
//! and transformer are far slower per example) and reports examples/s of optimiser steps, plus the
//! median single-item prediction latency. Results print as a Markdown table and, with `--out`, are
//! appended to that file.

use std::io::Write;
use std::ops::ControlFlow;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use retort_training::backend::{FlexCpu, NdArrayCpu};
use retort_training::data::{self, Example, LabelVocab, SplitMix64};
use retort_training::{
    GenTrainJob, StudentSpec, TrainJob, TrainOptions, backend, engine, eval, train,
};

const SPAM: &[&str] = &[
    "free",
    "win",
    "winner",
    "cash",
    "prize",
    "offer",
    "click",
    "claim",
    "urgent",
    "lottery",
    "bonus",
    "credit",
    "discount",
    "guaranteed",
    "million",
    "deal",
    "cheap",
    "casino",
    "unsubscribe",
    "limited",
    "$$$",
    "!!!",
];
const HAM: &[&str] = &[
    "meeting", "tomorrow", "report", "project", "lunch", "attached", "review", "agenda", "notes",
    "team", "schedule", "draft", "budget", "minutes", "thanks", "call", "question", "update",
    "deadline", "office",
];
const SHARED: &[&str] = &[
    "the", "a", "you", "your", "we", "our", "this", "that", "today", "now", "please", "will", "be",
    "is", "for", "to", "and", "of", "in", "on", "with", "at", "it", "as", "from", "have", "has",
    "not", "are", "was",
];

fn mails(n: usize, seed: u64) -> Vec<Example> {
    let mut rng = SplitMix64::new(seed);
    let mut pick = |words: &[&'static str]| words[(rng.next_u64() % words.len() as u64) as usize];
    (0..n)
        .map(|i| {
            let (label, own) = if i % 2 == 0 {
                ("spam", SPAM)
            } else {
                ("ham", HAM)
            };
            let words: Vec<&str> = (0..120)
                .map(|j| if j % 4 == 0 { pick(own) } else { pick(SHARED) })
                .collect();
            Example::new(words.join(" "), label)
        })
        .collect()
}

struct Row {
    backend: String,
    spec: String,
    examples: usize,
    examples_per_sec: f64,
    params: usize,
    p50_us: f64,
}

fn bench<B: AutodiffBackend>(spec: &str, n: usize, device: &B::Device) -> anyhow::Result<Row> {
    let spec: StudentSpec = spec.parse()?;
    let data = mails(n + 64, 7);
    let (train_set, valid) = data.split_at(n);
    let labels = LabelVocab::from_examples(&data)?;
    let job = TrainJob {
        config: spec.config(labels.len())?,
        labels,
        train: train_set,
        validation: valid,
        options: TrainOptions::new().with_max_epochs(1).with_batch_size(32),
        checkpoint_dir: None,
    };
    let trained = train::<B>(&job, device, |_| ControlFlow::Continue(()))?;
    let texts: Vec<&str> = valid.iter().map(|e| e.text.as_str()).collect();
    let latency = eval::measure_latency(&trained.predictor, &texts, 8)?;
    Ok(Row {
        backend: <B::InnerBackend as Backend>::name(device),
        spec: spec.to_string(),
        examples: n,
        examples_per_sec: trained.report.examples_per_sec,
        params: trained.report.num_params,
        p50_us: latency.p50_us,
    })
}

/// One generation row: train `spec` for `epochs` on `n` dates, then evaluate and time it.
fn bench_generation(spec: &str, n: usize, epochs: usize) -> anyhow::Result<String> {
    let spec: StudentSpec = spec.parse()?;
    let train_set = data::synthetic_dates(n, 1);
    let validation = data::synthetic_dates(100, 2);
    let test = data::synthetic_dates(200, 3);
    let job = GenTrainJob {
        config: spec.config(0)?,
        train: &train_set,
        validation: &validation,
        options: TrainOptions::new()
            .with_max_epochs(epochs)
            .with_patience(epochs)
            .with_learning_rate(Some(0.003)),
        checkpoint_dir: None,
    };
    let trained = engine::train_generator(&job, &mut |_| ControlFlow::Continue(()))?;
    let report = engine::evaluate_generation(&trained.generator, &test, 0)?;
    let texts: Vec<&str> = test.iter().map(|e| e.text.as_str()).collect();
    let latency = engine::measure_generation_latency(&trained.generator, &texts, 20)?;
    let start = Instant::now();
    let batch = trained.generator.generate_batch(&texts);
    let batch_us = start.elapsed().as_secs_f64() * 1e6 / batch.len().max(1) as f64;
    Ok(format!(
        "| {} | {spec} | {n} × {epochs} | {:.0} | {} | {:.3} | {:.4} | {:.0} | {:.0} | {:.0} |\n",
        backend::name(),
        trained.report.examples_per_sec,
        trained.report.num_params,
        report.exact_match,
        report.cer,
        latency.p50_us,
        latency.p99_us,
        batch_us,
    ))
}

fn generation_table() -> anyhow::Result<String> {
    let mut md = String::from(
        "| backend | student | train examples × epochs | train examples/s | params | exact match | CER | generate p50 (µs) | generate p99 (µs) | batched µs/input |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    md.push_str(&bench_generation("seq2seq/tiny", 1200, 6)?);
    md.push_str(&bench_generation("seq2seq/small", 1200, 3)?);
    Ok(md)
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args().skip_while(|a| a != "--out").nth(1);
    if std::env::args().any(|a| a == "--generation") {
        let started = Instant::now();
        let mut md = generation_table()?;
        md.push_str(&format!(
            "\n(total bench time {:.0} s)\n",
            started.elapsed().as_secs_f64()
        ));
        std::io::stdout().lock().write_all(md.as_bytes())?;
        if let Some(path) = out {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?
                .write_all(md.as_bytes())?;
        }
        return Ok(());
    }
    let plan: &[(&str, usize)] = &[
        ("linear/small", 2048),
        ("mlp/tiny", 2048),
        ("mlp/small", 1024),
        ("cnn/tiny", 64),
        ("transformer/tiny", 256),
    ];
    let started = Instant::now();
    let mut rows = Vec::new();
    for &(spec, n) in plan {
        rows.push(bench::<Autodiff<NdArrayCpu>>(spec, n, &Default::default())?);
        rows.push(bench::<Autodiff<FlexCpu>>(spec, n, &Default::default())?);
    }
    let mut md = String::new();
    md.push_str(
        "| backend | student | examples | train examples/s | params | predict p50 (µs) |\n",
    );
    md.push_str("|---|---|---:|---:|---:|---:|\n");
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {:.0} |\n",
            r.backend, r.spec, r.examples, r.examples_per_sec, r.params, r.p50_us
        ));
    }
    md.push('\n');
    md.push_str(&generation_table()?);
    md.push_str(&format!(
        "\n(total bench time {:.0} s)\n",
        started.elapsed().as_secs_f64()
    ));
    std::io::stdout().lock().write_all(md.as_bytes())?;
    if let Some(path) = out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(md.as_bytes())?;
    }
    Ok(())
}
