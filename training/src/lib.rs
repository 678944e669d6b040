//! Student models, their trainer and their evaluation, for distillation, built on burn 0.21.
//!
//! A distillation job hands this crate labelled examples (the teacher's answers) and a target
//! `class/size`; it gets back a trained [`Predictor`] that saves to and loads from an artefact
//! directory, plus a [`TrainReport`] and [`EvalReport`]s. For short generation tasks
//! ([`TaskKind::Generation`], class `seq2seq`) it is a [`Generator`] and a [`GenEvalReport`]
//! (exact match, character error rate) instead; [`ArtefactMetadata::task`] says which an artefact is.
//!
//! - [`data`]: the JSONL example format, label vocabulary, deterministic split.
//! - [`features`]: hashed n-gram, hashed word and byte featurisers (built from the text alone).
//! - [`model`]: the student families and their sizes, behind one [`Student`] module.
//! - [`trainer`]: AdamW, early stopping, determinism under a seed, resumable checkpoints.
//! - [`report`]: what training reports (per epoch, and the finished run).
//! - [`generation`]: the seq2seq student's training objective and the [`Generator`] that serves it.
//! - [`artefact`]: weights + featuriser + labels + template + metadata, and the [`Predictor`] that loads them.
//! - [`template`]: the prompt template stripped from every text before a student reads it.
//! - [`bandit`]: Neural-Linear Thompson sampling, the learning core of the selector and learned routes.
//! - [`selector`]: which student to distill a task to (or keep the teacher), learned from every run.
//! - [`eval`]: accuracy, per-class errors, agreement, in-process latency percentiles.
//! - [`backend`]: the one place a backend is chosen (CPU by default, CUDA with `--features cuda`).
//! - [`engine`]: the same operations, non-generic, on that backend (compiled optimised here, for services).
//!
//! This crate never talks to the network or a database and never downloads anything: it trains and
//! evaluates on data it is handed, and tokenisation is byte-level or hashed from the data itself.

pub mod artefact;
pub mod backend;
pub mod bandit;
pub mod data;
pub mod dense;
pub mod engine;
pub mod error;
pub mod eval;
pub mod features;
pub mod generation;
pub mod model;
pub mod report;
mod rng;
pub mod selector;
pub mod template;
pub mod trainer;

pub use artefact::{Artefact, ArtefactMetadata, Predictor};
pub use data::{Example, LabelVocab, Split};
pub use error::{Result, TrainingError};
pub use eval::{EvalReport, GenError, GenEvalReport, LatencyStats};
pub use features::{Featuriser, Inputs};
pub use generation::{GenTrainJob, Generation, Generator, TrainedGenerator};
pub use model::{Student, StudentClass, StudentConfig, StudentSpec, TaskKind};
pub use report::{EpochProgress, TrainReport};
pub use trainer::{TrainJob, TrainOptions, Trained, train};
