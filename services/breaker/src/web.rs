//! The confirm page, served on the gateway's HTTP listener: `GET /breaker/sessions/{id}` shows a
//! session with Confirm and Stop buttons (POST), which call the breaker through its gRPC client.
//! `GET /breaker/health` shows whether the gateway's spend guard reaches the breaker.
use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use retort_proto::v1::{self as pb, breaker_client::BreakerClient};
use tonic::transport::Channel;

use crate::{Error, core::enc, guard::Guard};

#[derive(Clone)]
struct Web {
    client: BreakerClient<Channel>,
    guard: Option<Arc<Guard>>,
}

/// The routes; `guard` (when this gateway has one) feeds `/breaker/health`.
pub fn router(endpoint: &str, guard: Option<Arc<Guard>>) -> Result<Router, Error> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| Error::Config(format!("breaker endpoint: {e}")))?
        .connect_lazy();
    let web = Web {
        client: BreakerClient::new(channel),
        guard,
    };
    Ok(Router::new()
        .route("/breaker/sessions/{id}", get(page))
        .route("/breaker/sessions/{id}/confirm", post(confirm))
        .route("/breaker/sessions/{id}/stop", post(stop))
        .route("/breaker/health", get(health))
        .with_state(web))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn failure(s: tonic::Status) -> Response {
    let code = match s.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    (
        code,
        Html(format!(
            "<!doctype html><title>Retort breaker</title><p>{}</p>",
            esc(s.message())
        )),
    )
        .into_response()
}

async fn page(
    State(w): State<Web>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let user = q.get("user").cloned().unwrap_or_default();
    let s = match w
        .client
        .clone()
        .get_session(pb::GetSessionRequest {
            session_id: id.clone(),
            user: user.clone(),
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(e) => return failure(e),
    };
    let th = s.thresholds.unwrap_or_default();
    let history: String = s
        .history
        .iter()
        .map(|t| {
            format!(
                "<li>{} → {} by {} at {} ms ({})</li>",
                esc(&t.from),
                esc(&t.to),
                esc(&t.by),
                t.at_unix_ms,
                esc(&t.reason)
            )
        })
        .collect();
    let action = |what: &str, label: &str| {
        format!(
            "<form method=post action=\"/breaker/sessions/{}/{what}?user={}\" style=display:inline><button>{label}</button></form>",
            enc(&s.session_id),
            enc(&s.user)
        )
    };
    let buttons = if s.state == "stopped" {
        "<p>This session was stopped for good.</p>".to_owned()
    } else {
        format!(
            "{} {}",
            action("confirm", "Confirm — yes, I meant to spend this"),
            action("stop", "Stop this session")
        )
    };
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>Retort breaker — session {id}</title>\
         <h1>Session {id} of {user}</h1><p>State: <b>{state}</b> (mode {mode})</p>\
         <table><tr><td>tokens<td>{tokens} (threshold {tt})<tr><td>cost<td>${cost:.4} (threshold ${tc:.4})\
         <tr><td>requests<td>{req} (threshold {tr})<tr><td>tier<td>{tier}</table>{buttons}<h2>History</h2><ul>{history}</ul>",
        id = esc(&s.session_id),
        user = esc(&s.user),
        state = esc(&s.state),
        mode = esc(&s.mode),
        tokens = s.tokens,
        tt = th.tokens,
        cost = s.cost_micros as f64 / 1e6,
        tc = th.cost_micros as f64 / 1e6,
        req = s.requests,
        tr = th.requests,
        tier = esc(&s.tier),
    ))
    .into_response()
}

async fn act(w: Web, id: String, q: HashMap<String, String>, stop: bool) -> Response {
    let user = q.get("user").cloned().unwrap_or_default();
    let a = pb::SessionAction {
        session_id: id.clone(),
        user: user.clone(),
        by: format!(
            "web ({})",
            if user.is_empty() {
                "confirm page"
            } else {
                &user
            }
        ),
    };
    let mut c = w.client.clone();
    let r = if stop {
        c.stop(a).await
    } else {
        c.confirm(a).await
    };
    match r {
        Ok(_) => Redirect::to(&format!(
            "/breaker/sessions/{}?user={}",
            enc(&id),
            enc(&user)
        ))
        .into_response(),
        Err(e) => failure(e),
    }
}

async fn confirm(
    State(w): State<Web>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    act(w, id, q, false).await
}

async fn stop(
    State(w): State<Web>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    act(w, id, q, true).await
}

async fn health(State(w): State<Web>) -> Response {
    match &w.guard {
        Some(g) => {
            let h = g.status();
            let code = if h.breaker_reachable {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, axum::Json(h)).into_response()
        }
        None => (StatusCode::OK, "no spend guard on this gateway").into_response(),
    }
}
