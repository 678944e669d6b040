//! The errors a caller can see. Everything inside the gateway returns these (or provider errors that
//! the router turns into these); each ingress renders them in its own protocol's shape, in one place.
use std::time::Duration;

use http::StatusCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or unknown API key.
    #[error("{0}")]
    Unauthorized(String),
    /// Unknown model or alias.
    #[error("{0}")]
    ModelNotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The prompt fits no target's context window.
    #[error("{0}")]
    ContextLength(String),
    /// A provider refused the content; the provider's reason is passed on.
    #[error("{0}")]
    ContentPolicy(String),
    /// Every target is rate-limited.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Every target failed.
    #[error("{0}")]
    Upstream(String),
    /// The total deadline passed.
    #[error("{0}")]
    Timeout(String),
    /// A spend limit stops the request until someone confirms.
    #[error("{0}")]
    PaymentRequired(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::ContextLength(_) | ApiError::ContentPolicy(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::PaymentRequired(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `error.type` and `error.code`.
    pub fn openai_type_code(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("invalid_request_error", "invalid_request"),
            ApiError::Unauthorized(_) => ("invalid_request_error", "invalid_api_key"),
            ApiError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            ApiError::PayloadTooLarge(_) => ("invalid_request_error", "request_too_large"),
            ApiError::ContextLength(_) => ("invalid_request_error", "context_length_exceeded"),
            ApiError::ContentPolicy(_) => ("invalid_request_error", "content_policy_violation"),
            ApiError::RateLimited { .. } => ("rate_limit_error", "rate_limit_exceeded"),
            ApiError::Upstream(_) => ("server_error", "upstream_unavailable"),
            ApiError::Timeout(_) => ("server_error", "timeout"),
            ApiError::PaymentRequired(_) => ("insufficient_quota", "spend_confirmation_required"),
            ApiError::Internal(_) => ("server_error", "internal_error"),
        }
    }

    /// Anthropic's `error.type`.
    pub fn anthropic_type(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) | ApiError::ContextLength(_) | ApiError::ContentPolicy(_) => {
                "invalid_request_error"
            }
            ApiError::Unauthorized(_) => "authentication_error",
            ApiError::ModelNotFound(_) => "not_found_error",
            ApiError::PayloadTooLarge(_) => "request_too_large",
            ApiError::RateLimited { .. } => "rate_limit_error",
            ApiError::Upstream(_) | ApiError::Internal(_) => "api_error",
            ApiError::Timeout(_) => "timeout_error",
            ApiError::PaymentRequired(_) => "billing_error",
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::BadRequest(_) | ApiError::ContextLength(_) | ApiError::ContentPolicy(_) => {
                tonic::Code::InvalidArgument
            }
            ApiError::Unauthorized(_) => tonic::Code::Unauthenticated,
            ApiError::ModelNotFound(_) => tonic::Code::NotFound,
            ApiError::PayloadTooLarge(_) => tonic::Code::OutOfRange,
            ApiError::RateLimited { .. } | ApiError::PaymentRequired(_) => {
                tonic::Code::ResourceExhausted
            }
            ApiError::Upstream(_) => tonic::Code::Unavailable,
            ApiError::Timeout(_) => tonic::Code::DeadlineExceeded,
            ApiError::Internal(_) => tonic::Code::Internal,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// `{"error": {"message", "type", "param", "code"}}`.
    pub fn openai_body(&self) -> serde_json::Value {
        let (ty, code) = self.openai_type_code();
        serde_json::json!({"error": {"message": self.to_string(), "type": ty, "param": null, "code": code}})
    }

    /// `{"type": "error", "error": {"type", "message"}}`.
    pub fn anthropic_body(&self) -> serde_json::Value {
        serde_json::json!({"type": "error", "error": {"type": self.anthropic_type(), "message": self.to_string()}})
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

impl From<retort_hooks::Refusal> for ApiError {
    fn from(r: retort_hooks::Refusal) -> Self {
        match r {
            retort_hooks::Refusal::PaymentRequired(m) => ApiError::PaymentRequired(m),
            retort_hooks::Refusal::Unavailable(m) => ApiError::Upstream(m),
        }
    }
}
