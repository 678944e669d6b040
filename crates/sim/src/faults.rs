//! Error responses in each API's shape, and the checks every generation request passes before it
//! is answered: auth, model lookup, attempt counting, latency, and the faults that replace a response.

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    Fault,
    answer::{Conversation, Model},
    server::{ModelState, ResetConnection, Sim},
};

/// Which API's error shape a response takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    OpenAi,
    Anthropic,
}

/// An HTTP error, renderable in either API's shape (boxed: it travels in `Result`s).
#[derive(Debug, Clone)]
pub(crate) struct ApiError(Box<ErrorBody>);

#[derive(Debug, Clone)]
struct ErrorBody {
    status: StatusCode,
    openai_type: &'static str,
    anthropic_type: &'static str,
    message: String,
    anthropic_message: Option<String>,
    code: Option<&'static str>,
    param: Option<&'static str>,
    retry_after: Option<f64>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        openai_type: &'static str,
        anthropic_type: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError(Box::new(ErrorBody {
            status,
            openai_type,
            anthropic_type,
            message: message.into(),
            anthropic_message: None,
            code: None,
            param: None,
            retry_after: None,
        }))
    }

    fn code(mut self, code: &'static str) -> Self {
        self.0.code = Some(code);
        self
    }

    fn anthropic_message(mut self, m: impl Into<String>) -> Self {
        self.0.anthropic_message = Some(m.into());
        self
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request_error",
            message,
        )
    }

    pub(crate) fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "authentication_error",
            "Incorrect API key provided.",
        )
        .code("invalid_api_key")
        .anthropic_message("invalid x-api-key")
    }

    pub(crate) fn model_not_found(model: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .code("model_not_found")
        .anthropic_message(format!("model: {model}"))
    }

    fn rate_limited(retry_after: Option<f64>) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "rate_limit_error",
            "Rate limit reached for requests. Please try again later.",
        )
        .code("rate_limit_exceeded")
        .anthropic_message("Number of requests has exceeded your rate limit.");
        e.0.retry_after = retry_after;
        e
    }

    fn server_error() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "api_error",
            "The server had an error while processing your request. Sorry about that!",
        )
        .anthropic_message("Internal server error")
    }

    fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "api_error",
            "The server is overloaded or not ready yet.",
        )
        .code("service_unavailable")
        .anthropic_message("Service unavailable")
    }

    fn context_length(window: u64, input: u64) -> ApiError {
        let mut e = ApiError::invalid_request(format!(
            "This model's maximum context length is {window} tokens. However, your messages resulted in {input} tokens."
        ))
        .code("context_length_exceeded")
        .anthropic_message(format!("prompt is too long: {input} tokens > {window} maximum"));
        e.0.param = Some("messages");
        e
    }

    fn content_policy() -> ApiError {
        ApiError::invalid_request("Your request was rejected as a result of our safety system.")
            .code("content_policy_violation")
            .anthropic_message("Output blocked by content filtering policy")
    }

    fn prefill_rejected() -> ApiError {
        ApiError::invalid_request(
            "This model does not support assistant message prefill. The conversation must end with a user message.",
        )
    }

    pub(crate) fn render(self, api: Api) -> Response {
        let e = *self.0;
        let body = match api {
            Api::OpenAi => json!({
                "error": { "message": e.message, "type": e.openai_type, "param": e.param, "code": e.code }
            }),
            Api::Anthropic => json!({
                "type": "error",
                "error": { "type": e.anthropic_type, "message": e.anthropic_message.unwrap_or(e.message) },
            }),
        };
        let mut resp = (e.status, Json(body)).into_response();
        if let Some(secs) = e.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// Parses a request body, with serde's message in the API's 400 shape.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_request(format!("Invalid request body: {e}")))
}

/// A request that passed [`admit`]: what answers it, and the fault still to apply to the response.
#[derive(Debug)]
pub(crate) struct Ticket {
    pub model: Arc<Model>,
    pub state: Arc<ModelState>,
    pub fault: Option<Fault>,
}

/// What every generation request goes through once its body parsed: attempt counting, auth,
/// validation, model lookup, latency, and the faults that replace the response. `Err` is the
/// response to send instead of an answer.
#[allow(clippy::result_large_err)] // `Response` is what axum handlers return; it is not boxed anywhere.
pub(crate) async fn admit(
    sim: &Sim,
    api: Api,
    headers: &HeaderMap,
    model_name: &str,
    authed: bool,
    conv: Result<Conversation, ApiError>,
) -> Result<(Ticket, Conversation), Response> {
    let state = sim.record(model_name);
    let fail = |e: ApiError| Err(e.render(api));
    if !authed {
        return fail(ApiError::unauthorized());
    }
    let conv = match conv {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let Some(model) = sim.model(model_name) else {
        return fail(ApiError::model_not_found(model_name));
    };
    let fault = match header_str(headers, "x-sim-fault") {
        None => model.behavior.fault,
        Some(v) if v.is_empty() || v == "none" => None,
        Some(v) => match v.parse::<Fault>() {
            Ok(f) => Some(f),
            Err(e) => {
                return fail(ApiError::invalid_request(format!(
                    "invalid x-sim-fault header: {e}"
                )));
            }
        },
    };
    let latency_ms = match header_str(headers, "x-sim-latency-ms") {
        None => model.behavior.latency_ms,
        Some(v) => match v.parse::<u64>() {
            Ok(ms) => ms,
            Err(_) => {
                return fail(ApiError::invalid_request(
                    "invalid x-sim-latency-ms header: expected milliseconds",
                ));
            }
        },
    };
    tracing::debug!(model = model_name, fault = ?fault, input_tokens = conv.input_tokens, "request");
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    let window = model.behavior.context_window;
    match fault {
        Some(Fault::RateLimit { retry_after }) => return fail(ApiError::rate_limited(retry_after)),
        Some(Fault::ErrorOnce) if !state.error_once_fired.swap(true, Ordering::Relaxed) => {
            return fail(ApiError::server_error());
        }
        Some(Fault::FailEvery { n })
            if state
                .fail_every_seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(u64::from(n)) =>
        {
            return fail(ApiError::server_error());
        }
        Some(Fault::Unavailable) => return fail(ApiError::unavailable()),
        Some(Fault::UnavailableFor { secs })
            if state.first_seen.elapsed() < Duration::from_secs_f64(secs) =>
        {
            return fail(ApiError::unavailable());
        }
        Some(Fault::Reset) => {
            let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            resp.extensions_mut().insert(ResetConnection);
            return Err(resp);
        }
        Some(Fault::Hang) => {
            std::future::pending::<()>().await;
            return fail(ApiError::server_error());
        }
        Some(Fault::ContextLength) if window == 0 => {
            return fail(ApiError::context_length(0, conv.input_tokens));
        }
        Some(Fault::ContentPolicy) => return fail(ApiError::content_policy()),
        Some(Fault::RejectPrefill) if conv.ends_with_assistant => {
            return fail(ApiError::prefill_rejected());
        }
        Some(Fault::NotFound) => return fail(ApiError::model_not_found(model_name)),
        _ => {}
    }
    if window > 0 && conv.input_tokens > window {
        return fail(ApiError::context_length(window, conv.input_tokens));
    }
    Ok((
        Ticket {
            model,
            state,
            fault,
        },
        conv,
    ))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The response to a body that did not parse: 401 takes precedence, as on the real APIs.
pub(crate) fn reject(api: Api, authed: bool, e: ApiError) -> Response {
    if authed {
        e.render(api)
    } else {
        ApiError::unauthorized().render(api)
    }
}
