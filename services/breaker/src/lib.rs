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
pub mod session;
pub mod store;
pub mod web;

pub use config::BreakerConfig;
/// Milliseconds since the epoch: the one clock every Retort service reads.
pub use retort_time::now_ms;

/// Everything that can go wrong in the breaker crate. A variant that wraps a failure keeps it as
/// its `source`; [`chain`] writes the whole story where a person reads it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy payload (file or `SetPolicies`) failed validation; nothing changed.
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
    /// A policy payload is not the TOML it must be; nothing changed.
    #[error("invalid policy: malformed policy")]
    MalformedPolicy(#[source] toml::de::Error),
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the session's state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The state store (Redis) failed.
    #[error("state store (Redis)")]
    Redis(#[from] redis::RedisError),
    /// Redis could not be opened (the URL is not written here: it may hold a password).
    #[error("state store: {what}")]
    RedisOpen {
        what: &'static str,
        #[source]
        source: redis::RedisError,
    },
    /// A stored record could not be read or written as JSON.
    #[error("state store: {what}")]
    Record {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    /// The breaker endpoint the confirm page calls is not a valid URI.
    #[error("configuration: breaker endpoint {endpoint:?}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot build the webhook HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot start the spend guard's background thread")]
    GuardStart(#[source] std::io::Error),
    #[error("cannot serve the breaker")]
    Serve(#[from] retort_server::ServeError),
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidPolicy(_)
            | Error::MalformedPolicy(_)
            | Error::BadRequest(_)
            | Error::Config(_)
            | Error::Endpoint { .. } => tonic::Code::InvalidArgument,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Error::Redis(_) | Error::RedisOpen { .. } | Error::Record { .. } | Error::Serve(_) => {
                tonic::Code::Unavailable
            }
            Error::HttpClient(_) | Error::GuardStart(_) => tonic::Code::Internal,
        };
        tonic::Status::new(code, chain(&e))
    }
}

/// An error and its causes, `: `-separated: the message a person reads (a gRPC status, a log).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        // Some errors repeat their cause in their own message; say it once.
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_status_tells_the_cause_that_the_error_keeps() {
        let e = policy::Policies::from_toml("not toml at all [").unwrap_err();
        assert!(matches!(e, Error::MalformedPolicy(_)), "{e:?}");
        assert!(std::error::Error::source(&e).is_some());
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        // The TOML parser's own words follow ours.
        assert!(
            s.message()
                .starts_with("invalid policy: malformed policy: ")
                && s.message().len() > 40,
            "{}",
            s.message()
        );
    }
}
