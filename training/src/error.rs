//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while reading data, training, saving or loading a student.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path that was being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSONL line is not a valid example. `line` is 1-based.
    #[error("line {line}: {message}")]
    Jsonl {
        /// 1-based line number in the input.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// There is nothing to train or evaluate on.
    #[error("empty data: {0}")]
    EmptyData(String),
    /// A student class that does not exist.
    #[error("unknown student class {class:?} (known: {known})")]
    UnknownClass {
        /// What was asked for.
        class: String,
        /// The classes that exist, comma-separated.
        known: String,
    },
    /// A size that the class does not come in.
    #[error("unknown size {size:?} for student class {class} (known: {known})")]
    UnknownSize {
        /// The class.
        class: String,
        /// What was asked for.
        size: String,
        /// The sizes that exist, comma-separated.
        known: String,
    },
    /// A target spec that is not `class/size`.
    #[error("bad student spec {0:?}: expected CLASS/SIZE, e.g. mlp/small")]
    BadSpec(String),
    /// An example's label is not in the label vocabulary.
    #[error("label {label:?} is not among the training labels ({known})")]
    UnknownLabel {
        /// The label.
        label: String,
        /// The known labels, comma-separated.
        known: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// burn could not save or load a record (weights, optimizer state).
    #[error("record {path}: {message}")]
    Record {
        /// The record's path (without the extension burn adds).
        path: PathBuf,
        /// burn's message.
        message: String,
    },
    /// An artefact or checkpoint directory is incomplete or inconsistent.
    #[error("artefact {path}: {message}")]
    Artefact {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint exists but belongs to a different job.
    #[error("checkpoint in {path} was written by a different job: {message}")]
    CheckpointMismatch {
        /// The checkpoint directory.
        path: PathBuf,
        /// What differs.
        message: String,
    },
    /// The progress callback asked training to stop.
    #[error("training cancelled")]
    Cancelled,
}

impl TrainingError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = TrainingError> = std::result::Result<T, E>;
