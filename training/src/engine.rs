//! Non-generic entry points on the default backend ([`crate::backend::Inference`], trained with
//! [`crate::backend::Training`]), for services that train and serve students.
//!
//! burn's generic kernels are monomorphised in the crate that names the backend. These functions
//! name it here, so the code is compiled with this crate's optimisation level (opt-level 3 in dev
//! builds too) instead of the caller's: a service built in the dev profile still trains at full speed.

use std::ops::ControlFlow;
use std::path::Path;

use crate::artefact::{Artefact, Predictor};
use crate::backend::{self, Inference, Training};
use crate::data::Example;
use crate::error::Result;
use crate::eval::{self, EvalReport, GenEvalReport, LatencyStats};
use crate::generation::{self, GenTrainJob, Generator, TrainedGenerator};
use crate::trainer::{self, EpochProgress, TrainJob, Trained};

/// [`trainer::train`] on the default backend and device.
pub fn train(
    job: &TrainJob<'_>,
    on_epoch: &mut dyn FnMut(&EpochProgress) -> ControlFlow<()>,
) -> Result<Trained<Inference>> {
    trainer::train::<Training>(job, &backend::device(), on_epoch)
}

/// [`Artefact::load`] onto the default device.
pub fn load(dir: &Path) -> Result<Predictor<Inference>> {
    Artefact::load::<Inference>(dir, &backend::device())
}

/// [`Predictor::save`].
pub fn save(predictor: &Predictor<Inference>, dir: &Path) -> Result<u64> {
    predictor.save(dir)
}

/// [`Predictor::predict`].
pub fn predict(predictor: &Predictor<Inference>, texts: &[&str]) -> Vec<(String, f32)> {
    predictor.predict(texts)
}

/// [`eval::evaluate`].
pub fn evaluate(
    predictor: &Predictor<Inference>,
    examples: &[Example],
    max_errors_per_class: usize,
) -> Result<EvalReport> {
    eval::evaluate(predictor, examples, max_errors_per_class)
}

/// [`eval::measure_latency`].
pub fn measure_latency(
    predictor: &Predictor<Inference>,
    texts: &[&str],
    warmup: usize,
) -> Result<LatencyStats> {
    eval::measure_latency(predictor, texts, warmup)
}

/// Trains a generation student ([`crate::model::Seq2seq`]) on the default backend and device.
/// `on_epoch` is called after every epoch (`val_accuracy` is validation exact match); returning
/// `ControlFlow::Break(())` stops the run with [`crate::TrainingError::Cancelled`].
pub fn train_generator(
    job: &GenTrainJob<'_>,
    on_epoch: &mut dyn FnMut(&EpochProgress) -> ControlFlow<()>,
) -> Result<TrainedGenerator> {
    let (model, report) = generation::train::<Training>(job, &backend::device(), on_epoch)?;
    let config = job
        .config
        .seq2seq()
        .cloned()
        .ok_or_else(|| job.config.wrong_task(crate::model::TaskKind::Generation))?;
    Ok(TrainedGenerator {
        generator: Generator::new(
            model,
            config,
            Some(report.clone()),
            crate::trainer::effective_template(&job.options, job.train, job.validation),
        ),
        report,
    })
}

/// [`Generator::load_for_serving`].
pub fn load_generator(dir: &Path) -> Result<Generator> {
    Generator::load_for_serving(dir)
}

/// Generates an answer for every example (in batches) and reports exact match, character error
/// rate and up to `max_errors` mismatches.
pub fn evaluate_generation(
    generator: &Generator,
    examples: &[Example],
    max_errors: usize,
) -> Result<GenEvalReport> {
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let generated: Vec<String> = generator
        .generate_batch(&texts)
        .into_iter()
        .map(|g| g.text)
        .collect();
    eval::gen_report(examples, &generated, max_errors)
}

/// Times single-input [`Generator::generate`] calls in-process, one per text, after `warmup`
/// untimed calls: the student's own latency, no network, no serialisation.
pub fn measure_generation_latency(
    generator: &Generator,
    texts: &[&str],
    warmup: usize,
) -> Result<LatencyStats> {
    eval::time_each(texts, warmup, |text| {
        std::hint::black_box(generator.generate(text));
    })
}
