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
use crate::eval::{self, EvalReport, LatencyStats};
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
