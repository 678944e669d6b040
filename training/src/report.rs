//! What training reports: progress after each epoch and the finished run's summary (also stored in an
//! artefact's metadata). Its own module so that the trainer and the artefact both depend on it and
//! never on each other.
use serde::{Deserialize, Serialize};

/// What the progress callback sees after every epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// 1-based epoch just finished.
    pub epoch: usize,
    /// The configured upper bound.
    pub max_epochs: usize,
    /// Mean training cross-entropy over the epoch.
    pub train_loss: f64,
    /// Accuracy on the validation split after the epoch.
    pub val_accuracy: f64,
    /// Best validation accuracy so far.
    pub best_val_accuracy: f64,
    /// Epoch that reached it.
    pub best_epoch: usize,
    /// Seconds this epoch took (training and validation).
    pub epoch_secs: f64,
    /// Training examples per second in this epoch (optimiser steps only).
    pub examples_per_sec: f64,
    /// Upper bound on the seconds left: mean epoch time × epochs left before `max_epochs`
    /// (early stopping usually ends sooner).
    pub eta_secs: f64,
}

/// What a finished training run reports (also stored in the artefact's metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Backend that ran, as burn names it.
    pub backend: String,
    /// The seed.
    pub seed: u64,
    /// The learning rate used.
    pub learning_rate: f64,
    /// Epochs completed (including those before a resume).
    pub epochs_run: usize,
    /// Epoch whose weights were kept.
    pub best_epoch: usize,
    /// Validation accuracy of the kept weights.
    pub best_val_accuracy: f64,
    /// Whether patience ran out before `max_epochs`.
    pub stopped_early: bool,
    /// Epoch the run resumed after, if it resumed from a checkpoint.
    pub resumed_after_epoch: Option<usize>,
    /// Training examples.
    pub train_examples: usize,
    /// Validation examples.
    pub validation_examples: usize,
    /// Seconds spent in optimiser steps, over all epochs (including those before a resume).
    pub train_secs: f64,
    /// Training examples per second over all epochs.
    pub examples_per_sec: f64,
    /// Trainable parameters.
    pub num_params: usize,
    /// One entry per epoch.
    pub history: Vec<EpochProgress>,
}
