//! Retort's distillation service (`retort.v1.Distill`). An engineer submits a teacher (any model or
//! alias of the gateway), training inputs, evals, a prompt template and a target student
//! (`class/size`); the service labels the inputs with the teacher *through the gateway* (metered,
//! failover-safe, concurrency-limited, answers cached), trains the student with `retort-training`,
//! evaluates student and teacher on the same evals, writes a JSON + Markdown report and, on request,
//! deploys the student to the gateway's `local` provider as `distilled/NAME`.
//!
//! Every stage is persisted (SQLite by default, Postgres when the URL says so); after a restart a job
//! resumes at its last finished stage. Every finished run leaves a row in `distill_results` (task
//! features, student class and size, what it achieved) for the student selector.
//!
//! This crate never calls a model provider directly: teacher calls go through the gateway only.
pub mod config;
pub mod data;
pub mod grpc;
pub mod pipeline;
pub mod report;
pub mod store;
pub mod teacher;

pub use config::DistillConfig;
pub use grpc::{Running, start};

/// Everything that can go wrong in the distill crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong; the message says where (line numbers for JSONL).
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// The job is not in a state that allows the request.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("database: {0}")]
    Store(String),
    #[error("{0}")]
    Io(String),
    #[error("training: {0}")]
    Training(String),
    /// The gateway (teacher calls, deploy) failed.
    #[error("gateway: {0}")]
    Gateway(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("time limit of {0} s exceeded")]
    TimeLimit(u64),
    /// The job's data or the teacher's answers make it impossible to go on.
    #[error("{0}")]
    Job(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Store(e.to_string())
    }
}

impl From<retort_training::TrainingError> for Error {
    fn from(e: retort_training::TrainingError) -> Self {
        match e {
            retort_training::TrainingError::Cancelled => Error::Cancelled,
            e => Error::Training(e.to_string()),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument(_) | Error::Config(_) => tonic::Code::InvalidArgument,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::FailedPrecondition(_) | Error::Job(_) => tonic::Code::FailedPrecondition,
            Error::Cancelled => tonic::Code::Cancelled,
            Error::TimeLimit(_) => tonic::Code::DeadlineExceeded,
            Error::Store(_) | Error::Gateway(_) | Error::Bind { .. } => tonic::Code::Unavailable,
            Error::Io(_) | Error::Training(_) => tonic::Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
