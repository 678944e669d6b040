//! The crate's one error type. gRPC and HTTP statuses are chosen in one place each
//! (`service.rs`, `http.rs`) from these variants.
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum MeteringError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The SQLite writer's connection (rusqlite).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://... or postgres://...")]
    BadUrl(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Price(#[from] retort_pricing::PriceError),
    /// A write failed for a whole group of batches (each caller gets the same message).
    #[error("database write: {0}")]
    Write(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("spool {path}: {source}")]
    Spool {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot reach metering at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
}
