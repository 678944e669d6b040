//! The crate's one error type. gRPC and HTTP statuses are chosen in one place each
//! (`service.rs`, `http.rs`) from these variants. A variant with a cause keeps it as its `source`;
//! its message also names the cause, because the statuses carry `to_string()` alone.
use std::{net::SocketAddr, sync::Arc};

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
    #[error("configuration: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("configuration: {var}={value:?} is not an address")]
    EnvAddr {
        var: &'static str,
        value: String,
        source: std::net::AddrParseError,
    },
    #[error("configuration: metering endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error(transparent)]
    Price(#[from] retort_pricing::PriceError),
    /// A group commit failed: every batch in it gets this, sharing the one cause.
    #[error("database write: {0}")]
    Write(#[source] Arc<MeteringError>),
    #[error("database write: the writer has stopped")]
    WriterStopped,
    #[error("cannot start the SQLite writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
    /// Postgres's binary `COPY` sizes a field with an i32.
    #[error("database write: a text field of {0} bytes (over 2 GiB)")]
    TextTooLong(usize),
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The caller's key may not do this (gRPC `PERMISSION_DENIED`, HTTP 403).
    #[error("permission denied: {0}")]
    Forbidden(String),
    #[error("spool {path}: {source}")]
    Spool {
        path: String,
        source: std::io::Error,
    },
}
