//! Provider adapters: one file per upstream API, all behind the [`Provider`] trait. Adding a provider
//! is one adapter plus one line in [`build`]; nothing else in the gateway knows a provider's wire format.
pub mod anthropic;
pub mod client;
mod common;
#[cfg(feature = "students")]
pub mod local;
pub mod openai;
mod scan;
#[cfg(test)]
mod test_support;

pub(crate) use common::finish_stream;

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;

use crate::{
    config::{ProviderConfig, ProviderKind},
    types::{ChatRequest, ChatResponse, RequestMeta, StreamEvent},
};

pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// One upstream API. Adapters translate and classify; they never retry, fail over or time out
/// beyond the connect timeout of their HTTP client — the router owns all of that.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The configured provider name (e.g. `openai`, `sim-primary`).
    fn name(&self) -> &str;
    /// One non-streaming attempt against `model`.
    async fn complete(
        &self,
        req: &ChatRequest,
        model: &str,
        meta: &RequestMeta,
    ) -> Result<ChatResponse, ProviderError>;
    /// One streaming attempt against `model`. The stream yields `Start`, deltas, then `Finish`;
    /// an upstream stream that breaks off before its end yields `Err(ProviderError::StreamCut)`.
    async fn stream(
        &self,
        req: &ChatRequest,
        model: &str,
        meta: &RequestMeta,
    ) -> Result<EventStream, ProviderError>;
}

/// What an upstream HTTP error status means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    /// 429.
    RateLimited,
    /// 408, 5xx, 529.
    Unavailable,
    /// 400 because the prompt does not fit the model's context window.
    ContextLength,
    /// 400 because the content was refused by the provider's policy.
    ContentPolicy,
    /// 400 because the model does not accept a trailing assistant message (prefill).
    PrefillRejected,
    /// 401/403: the gateway's key for this provider is wrong.
    Auth,
    /// 404: the model (or endpoint) no longer exists upstream.
    NotFound,
    /// Any other 4xx: the request itself is wrong.
    InvalidRequest,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("{0} timeout")]
    Timeout(TimeoutKind),
    #[error("upstream returned {status}: {message}")]
    Status {
        status: u16,
        kind: StatusKind,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("malformed upstream response: {0}")]
    Malformed(String),
    #[error("stream broke off: {0}")]
    StreamCut(String),
    /// The target's API cannot honour a field of the request (named in the message).
    #[error("{0}")]
    Unsupported(String),
}

/// Refuses a translation that would drop fields only the caller's own API honours.
pub(crate) fn check_translatable(req: &ChatRequest, api: &str) -> Result<(), ProviderError> {
    if req.same_shape_only.is_empty() {
        return Ok(());
    }
    Err(ProviderError::Unsupported(format!(
        "{} cannot be carried to {api}: {} (send it to a target of the caller's own API, or leave it out)",
        if req.same_shape_only.len() == 1 {
            "this field"
        } else {
            "these fields"
        },
        req.same_shape_only.join(", ")
    )))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    Connect,
    FirstToken,
    Stall,
    Deadline,
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::FirstToken => "first-token",
            TimeoutKind::Stall => "stream stall",
            TimeoutKind::Deadline => "deadline",
        })
    }
}

/// What the router does after an attempt failed with this error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: retry this target (bounded, with backoff), then fail over.
    Retry,
    /// This target cannot serve the request: go to the next target at once.
    NextTarget,
    /// Only a target with a larger context window may take it; never the same model again.
    LargerContext,
    /// The answer for the caller: no retry, no failover.
    Fatal,
}

impl ProviderError {
    pub fn disposition(&self) -> Disposition {
        match self {
            // A target that sent nothing within its timeout is not waited on again: the next
            // target at once (a silent provider must not cost several timeouts).
            ProviderError::Timeout(
                TimeoutKind::Connect | TimeoutKind::FirstToken | TimeoutKind::Stall,
            ) => Disposition::NextTarget,
            ProviderError::Connect(_)
            | ProviderError::Timeout(TimeoutKind::Deadline)
            | ProviderError::Malformed(_)
            | ProviderError::StreamCut(_) => Disposition::Retry,
            ProviderError::Status { kind, .. } => match kind {
                StatusKind::RateLimited | StatusKind::Unavailable => Disposition::Retry,
                StatusKind::Auth | StatusKind::NotFound | StatusKind::PrefillRejected => {
                    Disposition::NextTarget
                }
                StatusKind::ContextLength => Disposition::LargerContext,
                StatusKind::ContentPolicy | StatusKind::InvalidRequest => Disposition::Fatal,
            },
            ProviderError::Unsupported(_) => Disposition::NextTarget,
        }
    }

    /// The HTTP status to report for this error, if it came from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Short machine-readable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ProviderError::Connect(_) => "connect",
            ProviderError::Timeout(TimeoutKind::Connect) => "connect_timeout",
            ProviderError::Timeout(TimeoutKind::FirstToken) => "first_token_timeout",
            ProviderError::Timeout(TimeoutKind::Stall) => "stall_timeout",
            ProviderError::Timeout(TimeoutKind::Deadline) => "deadline",
            ProviderError::Malformed(_) => "malformed",
            ProviderError::StreamCut(_) => "stream_cut",
            ProviderError::Unsupported(_) => "unsupported",
            ProviderError::Status { kind, .. } => match kind {
                StatusKind::RateLimited => "rate_limited",
                StatusKind::Unavailable => "unavailable",
                StatusKind::ContextLength => "context_length",
                StatusKind::ContentPolicy => "content_policy",
                StatusKind::PrefillRejected => "prefill_rejected",
                StatusKind::Auth => "upstream_auth",
                StatusKind::NotFound => "not_found",
                StatusKind::InvalidRequest => "invalid_request",
            },
        }
    }
}

/// Classifies an upstream error status and body (both OpenAI and Anthropic shapes), shared by adapters.
pub fn classify_status(status: u16, body: &str) -> StatusKind {
    let lower = body.to_ascii_lowercase();
    match status {
        429 => StatusKind::RateLimited,
        408 | 500..=599 => StatusKind::Unavailable,
        401 | 403 => StatusKind::Auth,
        404 => StatusKind::NotFound,
        413 => StatusKind::ContextLength,
        _ if lower.contains("context_length")
            || lower.contains("context length")
            || lower.contains("context window")
            || lower.contains("prompt is too long")
            || lower.contains("too many tokens") =>
        {
            StatusKind::ContextLength
        }
        _ if lower.contains("content_policy")
            || lower.contains("content policy")
            || lower.contains("content_filter")
            || lower.contains("content filtering")
            || lower.contains("safety system") =>
        {
            StatusKind::ContentPolicy
        }
        _ if lower.contains("prefill") || lower.contains("final assistant") => {
            StatusKind::PrefillRejected
        }
        _ => StatusKind::InvalidRequest,
    }
}

/// HTTP dates (RFC 9110's IMF-fixdate, e.g. `Wed, 21 Oct 2015 07:28:00 GMT`, and the other RFC 2822
/// forms). A weekday that does not match the date is forgiven: the date is what the server meant.
static HTTP_DATE: jiff::fmt::rfc2822::DateTimeParser =
    jiff::fmt::rfc2822::DateTimeParser::new().relaxed_weekday(true);

/// Parses a `Retry-After` header: delta-seconds (fractional accepted) or an HTTP date.
pub fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = std::time::SystemTime::from(HTTP_DATE.parse_timestamp(v).ok()?);
    // A date already past means "now".
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Builds the adapter for one configured provider.
pub fn build(cfg: &ProviderConfig) -> Result<Arc<dyn Provider>, client::ClientError> {
    Ok(match cfg.kind {
        ProviderKind::Openai => Arc::new(openai::OpenAi::new(
            cfg.clone(),
            client::HttpClient::new(cfg)?,
        )),
        ProviderKind::Anthropic => Arc::new(anthropic::Anthropic::new(
            cfg.clone(),
            client::HttpClient::new(cfg)?,
        )),
        #[cfg(feature = "students")]
        ProviderKind::Local => Arc::new(local::Local::new(cfg)),
        // Refused when the configuration is loaded, so only reached by a hand-built config.
        #[cfg(not(feature = "students"))]
        ProviderKind::Local => {
            return Err(client::ClientError::without_students(&cfg.name));
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        assert_eq!(classify_status(429, ""), StatusKind::RateLimited);
        assert_eq!(classify_status(503, ""), StatusKind::Unavailable);
        assert_eq!(classify_status(529, "overloaded"), StatusKind::Unavailable);
        assert_eq!(
            classify_status(400, r#"{"error":{"code":"context_length_exceeded"}}"#),
            StatusKind::ContextLength
        );
        assert_eq!(
            classify_status(400, "prompt is too long: 300000 tokens"),
            StatusKind::ContextLength
        );
        assert_eq!(
            classify_status(400, r#"{"error":{"code":"content_policy_violation"}}"#),
            StatusKind::ContentPolicy
        );
        assert_eq!(
            classify_status(400, "This model does not support assistant message prefill"),
            StatusKind::PrefillRejected
        );
        assert_eq!(
            classify_status(400, "bad field"),
            StatusKind::InvalidRequest
        );
    }

    #[test]
    fn parses_retry_after() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("2"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("0.25"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(250)));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("soon"),
        );
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn retry_after_dates_are_real_dates() {
        let at = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static(v));
            parse_retry_after(&h)
        };
        // A future date waits until then (from now: at least the years between).
        let wait = at("Fri, 01 Jan 2100 00:00:00 GMT").unwrap();
        assert!(wait > Duration::from_secs(60 * 365 * 86_400), "{wait:?}");
        // Not a day of October: calendar arithmetic would have rolled it into November.
        assert_eq!(at("Thu, 32 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(at("Wed, 21 Foo 2015 07:28:00 GMT"), None);
        // The wrong weekday is forgiven; the date stands.
        assert_eq!(at("Mon, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
    }
}
