//! Retort's student selector (`retort.v1.Selector`): which student (class × size) to distill a task
//! to — or none, keep the teacher — learned from every distillation result and screening probe.
//!
//! The model is [`retort_training::selector::Selector`] (a Neural-Linear bandit trained with burn);
//! this crate owns its experience store ([`store`]: SQLite by default, Postgres by URL), its persisted
//! state (`DATA_DIR/selector/state.json`: restored at start, rebuilt from the stored runs when it is
//! missing, corrupt or behind the store — logged, never a crash) and the gRPC service, served through
//! the workspace's scaffold with a key check on every call.
//!
//! Who may call: `Record` — service identities and admins (distill records its runs with its admin
//! key); `Recommend`, `Status` — any user with a key; `Retrain` — admins.
pub mod config;
pub mod convert;
pub mod grpc;
pub mod model;
pub mod store;

pub use config::SelectorConfig;
pub use grpc::{Running, start};

/// Everything that can go wrong in the selector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("model: {0}")]
    Model(#[from] retort_training::TrainingError),
    /// The model's blocking thread failed.
    #[error("model: the {what} thread failed: {source}")]
    Thread {
        what: &'static str,
        source: tokio::task::JoinError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl From<retort_server::ServeError> for Error {
    fn from(e: retort_server::ServeError) -> Self {
        match e {
            retort_server::ServeError::Bind { addr, source } => Error::Bind { addr, source },
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument(_) | Error::Model(_) => tonic::Code::InvalidArgument,
            Error::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Error::Store(_) | Error::Bind { .. } => tonic::Code::Unavailable,
            Error::Config(_) | Error::Thread { .. } | Error::Io { .. } => tonic::Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}
