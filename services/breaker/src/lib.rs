//! Retort's session circuit breakers and budgets. The breaker service (`retort.v1.Breaker`) tracks
//! sessions and budgets in memory or in Redis, asks users (webhook, `Watch`, the gateway's 402) when
//! a threshold is crossed, and grants gateways leases — allowances they spend locally — so that the
//! gateway's [`guard::Guard`] decides every request in microseconds from local state.
//! Nothing here may put a network round trip on a gateway request's path.
pub mod config;
pub mod core;
pub mod grpc;
pub mod guard;
pub mod policy;
pub mod store;
pub mod web;

pub use config::SpendConfig;

/// Everything that can go wrong in the breaker crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy payload (file or `SetPolicies`) failed validation; nothing changed.
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the session's state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The state store (Redis) failed.
    #[error("state store: {0}")]
    Store(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot reach the breaker service: {0}")]
    Connect(String),
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Store(e.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidPolicy(_) | Error::BadRequest(_) | Error::Config(_) => {
                tonic::Code::InvalidArgument
            }
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Error::Store(_) | Error::Connect(_) | Error::Bind { .. } => tonic::Code::Unavailable,
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
