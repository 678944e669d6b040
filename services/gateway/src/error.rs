//! The errors a caller can see. Everything inside the gateway returns these (or provider errors that
//! the router turns into these); each ingress renders them in its own protocol's shape, in one place.
use std::time::Duration;

use http::StatusCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// One field of the request body is wrong: each ingress words it as its own provider does.
    #[error("{0}")]
    Field(FieldError),
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
            ApiError::BadRequest(_)
            | ApiError::Field(_)
            | ApiError::ContextLength(_)
            | ApiError::ContentPolicy(_) => StatusCode::BAD_REQUEST,
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
            ApiError::BadRequest(_) | ApiError::Field(_) => {
                ("invalid_request_error", "invalid_request")
            }
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
            ApiError::BadRequest(_)
            | ApiError::Field(_)
            | ApiError::ContextLength(_)
            | ApiError::ContentPolicy(_) => "invalid_request_error",
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
            ApiError::BadRequest(_)
            | ApiError::Field(_)
            | ApiError::ContextLength(_)
            | ApiError::ContentPolicy(_) => tonic::Code::InvalidArgument,
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

    /// `{"error": {"message", "type", "param", "code"}}`, worded as OpenAI words its errors
    /// (`Missing required parameter: 'messages[0].content'.`, `param` naming the field).
    pub fn openai_body(&self) -> serde_json::Value {
        let (ty, code) = self.openai_type_code();
        let (message, param) = match self {
            ApiError::Field(f) => (f.openai_message(), Some(f.path.as_str())),
            other => (other.to_string(), None),
        };
        serde_json::json!({"error": {"message": message, "type": ty, "param": param, "code": code}})
    }

    /// `{"type": "error", "error": {"type", "message"}}`, worded as Anthropic words its errors
    /// (`messages.1.role: Input should be 'user' or 'assistant'`).
    pub fn anthropic_body(&self) -> serde_json::Value {
        let message = match self {
            ApiError::Field(f) => f.anthropic_message(),
            other => other.to_string(),
        };
        serde_json::json!({"type": "error", "error": {"type": self.anthropic_type(), "message": message}})
    }
}

/// A wrong field of a request body: where (`messages[1].role`, OpenAI's notation) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub problem: FieldProblem,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldProblem {
    Missing,
    /// `got` describes the value (`integer \`42\``), `expected` the type (`a string`).
    Type {
        got: String,
        expected: String,
    },
    /// A value outside a fixed set.
    Variant {
        got: String,
        expected: Vec<String>,
    },
    /// Anything else, in words.
    Other(String),
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let problem = match &self.problem {
            FieldProblem::Missing => "field required".to_string(),
            FieldProblem::Type { got, expected } => {
                format!("invalid type: {got}, expected {expected}")
            }
            FieldProblem::Variant { got, expected } => format!(
                "unknown variant {got:?}, expected one of {}",
                expected
                    .iter()
                    .map(|e| format!("\"{e}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            FieldProblem::Other(m) => m.clone(),
        };
        if self.path.is_empty() {
            write!(f, "invalid request body: {problem}")
        } else {
            write!(f, "invalid request body: {}: {problem}", self.path)
        }
    }
}

/// `'a', 'b' or 'c'`.
fn or_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

impl FieldError {
    /// Anthropic's (pydantic's) notation: `messages.1.role: Input should be 'user' or 'assistant'`.
    pub fn anthropic_message(&self) -> String {
        let path = self.path.replace('[', ".").replace(']', "");
        let problem = match &self.problem {
            FieldProblem::Missing => "Field required".to_string(),
            FieldProblem::Type { expected, .. } => {
                let kind = match expected.as_str() {
                    "a string" => "a valid string",
                    "an integer" | "a non-negative integer" => "a valid integer",
                    "an array" => "a valid list",
                    "an object" => "a valid dictionary",
                    "a boolean" => "a valid boolean",
                    "a number" => "a valid number",
                    other => other,
                };
                format!("Input should be {kind}")
            }
            FieldProblem::Variant { expected, .. } => {
                format!("Input should be {}", or_list(expected))
            }
            FieldProblem::Other(m) => m.clone(),
        };
        if path.is_empty() {
            problem
        } else {
            format!("{path}: {problem}")
        }
    }

    /// OpenAI's wording: `Missing required parameter: 'model'.`, `Invalid type for 'max_tokens':
    /// expected an integer, but got a string instead.`, `Invalid value: 'robot'. Supported values
    /// are: 'system', 'user' ...`.
    pub fn openai_message(&self) -> String {
        let path = &self.path;
        match &self.problem {
            FieldProblem::Missing => format!("Missing required parameter: '{path}'."),
            FieldProblem::Type { got, expected } => {
                format!("Invalid type for '{path}': expected {expected}, but got {got} instead.")
            }
            FieldProblem::Variant { got, expected } => format!(
                "Invalid value for '{path}': '{got}'. Supported values are: {}.",
                or_list(expected)
            ),
            FieldProblem::Other(m) if path.is_empty() => m.clone(),
            FieldProblem::Other(m) => format!("Invalid '{path}': {m}"),
        }
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
