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
pub mod job;
pub mod pipeline;
pub mod report;
pub mod store;
pub mod teacher;

pub use config::DistillConfig;
pub use grpc::{Running, start};
pub use job::{JobState, Stage, StageState};

/// Everything that can go wrong in the distill crate. Where another library's error is the cause,
/// the variant keeps it as its `source` (its text is also in the message, which is what gRPC callers
/// and the job's status show).
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
    Store(#[from] sqlx::Error),
    #[error("database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A JSON document the store holds for a job (its request, its evaluation) does not parse.
    #[error("database: job {job}: unreadable {what}: {source}")]
    Unreadable {
        job: String,
        what: &'static str,
        source: serde_json::Error,
    },
    /// A job's stored name (state, stage) is none of the known cases.
    #[error("database: {0}")]
    UnknownName(#[from] job::UnknownName),
    /// A file of a job's folder: `context` says which and what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A JSON file of a job's folder does not parse.
    #[error("{context}: {source}")]
    Json {
        context: String,
        source: serde_json::Error,
    },
    #[error("training: {0}")]
    Training(#[source] retort_training::TrainingError),
    /// A blocking thread (training, evaluation) panicked or was cancelled.
    #[error("training: the {what} thread failed: {source}")]
    Thread {
        what: &'static str,
        source: tokio::task::JoinError,
    },
    /// The gateway (teacher calls, deploy) failed.
    #[error("gateway: {0}")]
    Gateway(String),
    /// The gateway could not be reached or read; `context` names the call.
    #[error("gateway: {context}: {source}")]
    GatewayHttp {
        context: &'static str,
        source: reqwest::Error,
    },
    /// The gateway's gRPC port could not be reached.
    #[error("gateway: connecting to {addr}: {source}")]
    GatewayConnect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    /// The selector (auto-target, recording results) failed or could not be reached.
    #[error("selector: {0}")]
    Selector(String),
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

impl Error {
    /// An I/O error on `path`, saying what was being done (`reading`, `writing`, `creating`).
    pub(crate) fn io(doing: &str, path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            context: format!("{doing} {}", path.display()),
            source,
        }
    }
}

impl From<retort_server::ServeError> for Error {
    fn from(e: retort_server::ServeError) -> Self {
        match e {
            retort_server::ServeError::Bind { addr, source } => Error::Bind { addr, source },
        }
    }
}

impl From<retort_training::TrainingError> for Error {
    fn from(e: retort_training::TrainingError) -> Self {
        match e {
            retort_training::TrainingError::Cancelled => Error::Cancelled,
            e => Error::Training(e),
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
            Error::Store(_)
            | Error::Migrate(_)
            | Error::Unreadable { .. }
            | Error::UnknownName(_)
            | Error::Gateway(_)
            | Error::GatewayHttp { .. }
            | Error::GatewayConnect { .. }
            | Error::Selector(_)
            | Error::Bind { .. } => tonic::Code::Unavailable,
            Error::Io { .. } | Error::Json { .. } | Error::Training(_) | Error::Thread { .. } => {
                tonic::Code::Internal
            }
        };
        tonic::Status::new(code, e.to_string())
    }
}
