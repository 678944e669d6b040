//! The confirm page, served on the gateway's HTTP listener: `GET /breaker/sessions/{id}` shows a
//! session with Confirm and Stop buttons (POST), which call the breaker through its gRPC client.
//! `GET /breaker/health` shows whether the gateway's spend guard reaches the breaker.
use std::{collections::HashMap, sync::Arc};

use axum::{
    Extension, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use retort_proto::v1::{self as pb, breaker_client::BreakerClient};
use retort_server::auth::{Caller, KeyRing, WithKey};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use retort_time::{human, human_duration};

use crate::{Error, core::enc, guard::Guard, session::SessionState};

#[derive(Clone)]
struct Web {
    client: BreakerClient<InterceptedService<Channel, WithKey>>,
    guard: Option<Arc<Guard>>,
}

/// The caller as the key check found it (none: served without a key check).
type Who = Option<Extension<retort_hooks::Principal>>;

fn caller(who: Who) -> Caller {
    match who {
        Some(Extension(p)) => Caller::Key(p),
        None => Caller::Open,
    }
}

/// The routes behind the key check of `keys` (a key header, or the login form once and then a
/// session cookie); the page calls the breaker with `service_key` and lets a person see and act on
/// only the sessions they may (their own; a team admin their team's; an admin all).
pub fn router_with_keys(
    endpoint: &str,
    guard: Option<Arc<Guard>>,
    keys: Arc<KeyRing>,
    service_key: &str,
) -> Result<Router, Error> {
    Ok(
        build(endpoint, guard, Some(service_key))?.layer(axum::middleware::from_fn_with_state(
            Arc::new(retort_server::web::WebAuth::new(keys)),
            retort_server::web::check,
        )),
    )
}

/// The routes without a key check (a breaker embedded in a test or tool).
pub fn router(endpoint: &str, guard: Option<Arc<Guard>>) -> Result<Router, Error> {
    build(endpoint, guard, None)
}

fn build(
    endpoint: &str,
    guard: Option<Arc<Guard>>,
    service_key: Option<&str>,
) -> Result<Router, Error> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|source| Error::Endpoint {
            endpoint: endpoint.to_owned(),
            source,
        })?
        .connect_lazy();
    let web = Web {
        client: BreakerClient::with_interceptor(channel, WithKey::new(service_key)),
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

fn not_yours() -> Response {
    retort_server::web::forbidden(
        "this session is not yours (its owner, their team admin or an admin may see and act on it)",
    )
}

async fn page(
    State(w): State<Web>,
    who: Who,
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
    if !caller(who).may_act_for(&s.user, &s.team) {
        return not_yours();
    }
    Html(render(&s)).into_response()
}

/// A threshold as a person reads it: 0 is what the wire says for "no threshold".
fn limit<T: PartialEq + Default>(v: T, show: impl Fn(T) -> String) -> String {
    if v == T::default() {
        "no limit".to_owned()
    } else {
        show(v)
    }
}

/// The confirm page of one session.
fn render(s: &pb::Session) -> String {
    let th = s.thresholds.clone().unwrap_or_default();
    let history: String = s
        .history
        .iter()
        .map(|t| {
            // The first transition comes from nowhere.
            let from = if t.from.is_empty() {
                "·".to_owned()
            } else {
                esc(&t.from)
            };
            format!(
                "<li>{from} → {} by {} at {} ({})</li>",
                esc(&t.to),
                esc(&t.by),
                human(t.at_unix_ms),
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
    let buttons = if s.state == SessionState::Stopped.as_str() {
        "<p>This session was stopped for good.</p>".to_owned()
    } else {
        format!(
            "{} {}",
            action("confirm", "Confirm — yes, I meant to spend this"),
            action("stop", "Stop this session")
        )
    };
    format!(
        "<!doctype html><meta charset=utf-8><title>Retort breaker — session {id}</title>\
         <h1>Session {id} of {user}</h1><p>State: <b>{state}</b> (mode {mode})</p>\
         <p>Started {started}; last request {last}.</p>\
         <table><tr><td>tokens<td>{tokens} (threshold {tt})<tr><td>cost<td>${cost:.4} (threshold {tc})\
         <tr><td>requests<td>{req} (threshold {tr})<tr><td>running for<td>{dur} (threshold {td})\
         <tr><td>tier<td>{tier} (threshold {ttier})</table>{buttons}<h2>History</h2><ul>{history}</ul>",
        id = esc(&s.session_id),
        user = esc(&s.user),
        state = esc(&s.state),
        mode = esc(&s.mode),
        started = human(s.started_unix_ms),
        last = human(s.last_unix_ms),
        tokens = s.tokens,
        tt = limit(th.tokens, |v| v.to_string()),
        cost = s.cost_micros as f64 / 1e6,
        tc = limit(th.cost_micros, |v| format!("${:.4}", v as f64 / 1e6)),
        req = s.requests,
        tr = limit(th.requests, |v| v.to_string()),
        dur = human_duration(s.last_unix_ms - s.started_unix_ms),
        td = limit(th.duration_s, |v| human_duration(
            v.saturating_mul(1000).min(i64::MAX as u64) as i64
        )),
        tier = if s.tier.is_empty() {
            "none yet".to_owned()
        } else {
            esc(&s.tier)
        },
        ttier = if th.tier.is_empty() {
            "no limit".to_owned()
        } else {
            esc(&th.tier)
        },
    )
}

async fn act(w: Web, who: Who, id: String, q: HashMap<String, String>, stop: bool) -> Response {
    let user = q.get("user").cloned().unwrap_or_default();
    let caller = caller(who);
    let mut c = w.client.clone();
    // The session's owner (or their team admin, or an admin) only; the audit trail names who
    // signed in, never a name from the request.
    match c
        .get_session(pb::GetSessionRequest {
            session_id: id.clone(),
            user: user.clone(),
        })
        .await
    {
        Ok(s) if caller.may_act_for(&s.get_ref().user, &s.get_ref().team) => {}
        Ok(_) => return not_yours(),
        Err(e) => return failure(e),
    }
    let a = pb::SessionAction {
        session_id: id.clone(),
        user: user.clone(),
        by: format!("web ({})", caller.name()),
    };
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
    who: Who,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    act(w, who, id, q, false).await
}

async fn stop(
    State(w): State<Web>,
    who: Who,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    act(w, who, id, q, true).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn session(thresholds: pb::Thresholds) -> pb::Session {
        // 2025-03-01 05:01:01 UTC, and 90 s later.
        let t0 = 1_740_805_261_000;
        pb::Session {
            session_id: "s<1>".into(),
            user: "ann".into(),
            team: "qa".into(),
            state: "paused".into(),
            mode: "pause".into(),
            tokens: 120,
            cost_micros: 1_500,
            requests: 3,
            started_unix_ms: t0,
            last_unix_ms: t0 + 90_000,
            tier: "mid".into(),
            thresholds: Some(thresholds),
            history: vec![
                pb::Transition {
                    from: String::new(),
                    to: "ok".into(),
                    by: "gateway".into(),
                    at_unix_ms: t0,
                    reason: "first request".into(),
                },
                pb::Transition {
                    from: "ok".into(),
                    to: "paused".into(),
                    by: "breaker".into(),
                    at_unix_ms: t0 + 90_000,
                    reason: "120 tokens ≥ 100".into(),
                },
            ],
            confirm_url: String::new(),
        }
    }

    #[test]
    fn the_page_shows_times_a_person_reads_and_no_epoch_milliseconds() {
        let page = render(&session(pb::Thresholds {
            tokens: 100,
            ..Default::default()
        }));
        assert!(
            page.contains("· → ok by gateway at 2025-03-01 05:01:01 UTC (first request)"),
            "{page}"
        );
        assert!(
            page.contains("ok → paused by breaker at 2025-03-01 05:02:31 UTC"),
            "{page}"
        );
        assert!(page.contains("Started 2025-03-01 05:01:01 UTC"), "{page}");
        assert!(page.contains("1 min 30 s"), "{page}");
        assert!(!page.contains("1740805"), "{page}");
        assert!(!page.contains(" ms"), "{page}");
        // The session id is escaped wherever it is shown.
        assert!(page.contains("Session s&lt;1&gt; of ann"), "{page}");
        assert!(page.contains("Confirm"), "{page}");
    }

    #[test]
    fn a_threshold_of_zero_reads_as_no_limit() {
        let page = render(&session(pb::Thresholds {
            tokens: 100,
            ..Default::default()
        }));
        assert!(page.contains("120 (threshold 100)"), "{page}");
        assert!(page.contains("$0.0015 (threshold no limit)"), "{page}");
        assert!(page.contains("3 (threshold no limit)"), "{page}");
        assert!(page.contains("mid (threshold no limit)"), "{page}");
        assert!(!page.contains("threshold 0"), "{page}");
        assert!(!page.contains("threshold $0.0000"), "{page}");
        let page = render(&session(pb::Thresholds {
            cost_micros: 2_000_000,
            duration_s: 3_600,
            tier: "small".into(),
            ..Default::default()
        }));
        assert!(page.contains("(threshold $2.0000)"), "{page}");
        assert!(page.contains("(threshold 1 h 00 min)"), "{page}");
        assert!(page.contains("mid (threshold small)"), "{page}");
        assert!(page.contains("120 (threshold no limit)"), "{page}");
    }

    #[test]
    fn a_stopped_session_offers_no_buttons() {
        let mut s = session(pb::Thresholds::default());
        s.state = "stopped".into();
        let page = render(&s);
        assert!(
            page.contains("stopped for good") && !page.contains("<button>"),
            "{page}"
        );
    }
}
