//! The dashboard (`/dashboard`, one self-contained page: inline JS, SVG charts, nothing fetched
//! from outside) and the JSON API it reads (`/api/usage/...`), plus the CSV export. Errors become
//! responses here, in one place.
use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use retort_proto::v1 as pb;
use serde_json::{Value, json};

use retort_server::auth::{Caller, KeyRing};

use crate::{
    error::MeteringError,
    query,
    service::{Metering, may_set_prices, scope},
    time,
};

/// The caller as the key check found it (no principal: served without a key check).
type Who = Option<Extension<retort_hooks::Principal>>;

fn caller(who: Who) -> Caller {
    match who {
        Some(Extension(p)) => Caller::Key(p),
        None => Caller::Open,
    }
}

const DASHBOARD: &str = include_str!("dashboard.html");

type Params = Query<Vec<(String, String)>>;

/// The routes behind the key check of `keys` (every route: the dashboard asks for a key once and
/// keeps a session cookie); without keys, open (metering embedded in a test or tool).
pub fn router_with_keys(m: Arc<Metering>, keys: Option<Arc<KeyRing>>) -> Router {
    let r = router(m);
    match keys {
        Some(keys) => r.layer(axum::middleware::from_fn_with_state(
            Arc::new(retort_server::web::WebAuth::new(keys)),
            retort_server::web::check,
        )),
        None => r,
    }
}

/// The routes, to serve alone (`retort metering`) or merged into the gateway's listener.
pub fn router(m: Arc<Metering>) -> Router {
    Router::new()
        .route("/dashboard", get(dashboard))
        .route("/api/usage/query", get(grouped))
        .route("/api/usage/top-users", get(top_users))
        .route("/api/usage/top-reasoning", get(top_reasoning))
        .route("/api/usage/model-mix", get(model_mix))
        .route("/api/usage/sessions", get(sessions))
        .route("/api/usage/dimensions", get(dimensions))
        .route("/api/usage/prices", get(prices).post(set_price))
        .route("/api/usage/export.csv", get(export_csv))
        .with_state(m)
}

/// Errors at the edge: a bad argument is the caller's (400), anything else is ours (500).
struct ApiError(MeteringError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0 {
            MeteringError::Invalid(_) | MeteringError::Price(_) => StatusCode::BAD_REQUEST,
            MeteringError::Forbidden(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({ "error": self.0.to_string() }))).into_response()
    }
}

impl From<MeteringError> for ApiError {
    fn from(e: MeteringError) -> Self {
        ApiError(e)
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn get_all(p: &[(String, String)], name: &str) -> Vec<String> {
    p.iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn get_one<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter()
        .rev()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Filters from query parameters: `user`, `team`, `discipline`, `level`, `model`, `provider`,
/// `harness`, `route`, `tier` (comma-separated or repeated), `since`/`until` (`7d`, a date, ms).
pub fn filter_from(p: &[(String, String)]) -> Result<pb::UsageFilter, MeteringError> {
    let now = time::now_ms();
    let t = |name: &str| -> Result<i64, MeteringError> {
        match get_one(p, name) {
            None => Ok(0),
            Some(v) => time::parse_time(v, now).ok_or_else(|| {
                MeteringError::Invalid(format!(
                    "{name}={v:?}: expected 7d, 24h, 30m, YYYY-MM-DD or epoch ms"
                ))
            }),
        }
    };
    Ok(pb::UsageFilter {
        users: get_all(p, "user"),
        teams: get_all(p, "team"),
        disciplines: get_all(p, "discipline"),
        levels: get_all(p, "level"),
        models: get_all(p, "model"),
        providers: get_all(p, "provider"),
        harnesses: get_all(p, "harness"),
        routes: get_all(p, "route"),
        tiers: get_all(p, "tier"),
        since_ms: t("since")?,
        until_ms: t("until")?,
    })
}

fn limit_from(p: &[(String, String)]) -> Result<u32, MeteringError> {
    match get_one(p, "limit") {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| MeteringError::Invalid(format!("limit={v:?}: expected a number"))),
    }
}

/// A grouped answer as JSON: each row's key by dimension name, a label, and the sums.
pub fn rows_json(r: &pb::UsageQueryResponse) -> Value {
    let rows: Vec<Value> = r
        .rows
        .iter()
        .map(|row| {
            let key: serde_json::Map<String, Value> = r
                .group_by
                .iter()
                .zip(&row.key)
                .map(|(g, k)| (g.clone(), Value::String(k.clone())))
                .collect();
            json!({
                "key": key,
                "label": row.key.join(" / "),
                "cost_usd": row.cost_micros as f64 / 1e6,
                "cost_micros": row.cost_micros,
                "requests": row.requests,
                "failed": row.failed,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
                "reasoning_tokens": row.reasoning_tokens,
                "cache_read_tokens": row.cache_read_tokens,
                "cache_write_tokens": row.cache_write_tokens,
                "tokens": row.input_tokens + row.output_tokens + row.cache_read_tokens + row.cache_write_tokens,
                "reasoning_ms": row.reasoning_ms,
                "latency_ms": row.latency_ms,
                "unpriced": row.unpriced,
            })
        })
        .collect();
    json!({ "group_by": r.group_by, "tier": r.tier, "rows": rows })
}

async fn dashboard() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(DASHBOARD))
}

/// The filter of the query parameters, narrowed to what `c` may see.
fn scoped_filter(c: &Caller, p: &[(String, String)]) -> Result<pb::UsageFilter, MeteringError> {
    let mut f = filter_from(p)?;
    scope(c, &mut f)?;
    Ok(f)
}

fn usage_query(c: &Caller, p: &[(String, String)]) -> Result<pb::UsageQuery, MeteringError> {
    Ok(pb::UsageQuery {
        group_by: get_all(p, "group_by"),
        filter: Some(scoped_filter(c, p)?),
        order_by: get_one(p, "order_by").unwrap_or_default().to_string(),
        limit: limit_from(p)?,
    })
}

async fn grouped(State(m): State<Arc<Metering>>, who: Who, Query(p): Params) -> ApiResult {
    Ok(Json(rows_json(
        &query::grouped(&m.store, &usage_query(&caller(who), &p)?).await?,
    )))
}

async fn model_mix(State(m): State<Arc<Metering>>, who: Who, Query(p): Params) -> ApiResult {
    Ok(Json(rows_json(
        &query::model_mix(&m.store, &usage_query(&caller(who), &p)?).await?,
    )))
}

fn top_request(c: &Caller, p: &[(String, String)]) -> Result<pb::TopRequest, MeteringError> {
    Ok(pb::TopRequest {
        filter: Some(scoped_filter(c, p)?),
        limit: limit_from(p)?,
        tier: get_one(p, "rank_tier").unwrap_or_default().to_string(),
    })
}

async fn top_users(State(m): State<Arc<Metering>>, who: Who, Query(p): Params) -> ApiResult {
    Ok(Json(rows_json(
        &query::top_users(&m.store, &m.prices, &top_request(&caller(who), &p)?).await?,
    )))
}

async fn top_reasoning(State(m): State<Arc<Metering>>, who: Who, Query(p): Params) -> ApiResult {
    Ok(Json(rows_json(
        &query::top_reasoning(&m.store, &top_request(&caller(who), &p)?).await?,
    )))
}

async fn sessions(State(m): State<Arc<Metering>>, who: Who, Query(p): Params) -> ApiResult {
    let live = match get_one(&p, "live_within") {
        None => 0,
        Some(v) => {
            let now = time::now_ms();
            now - time::parse_time(v, now).ok_or_else(|| {
                ApiError(MeteringError::Invalid(format!(
                    "live_within={v:?}: expected e.g. 15m"
                )))
            })?
        }
    };
    let r = pb::SessionsRequest {
        filter: Some(scoped_filter(&caller(who), &p)?),
        order_by: get_one(&p, "order_by").unwrap_or_default().to_string(),
        limit: limit_from(&p)?,
        live_within_ms: live,
    };
    let s = query::sessions(&m.store, &r).await?;
    let now = time::now_ms();
    let rows: Vec<Value> = s
        .sessions
        .iter()
        .map(|s| {
            json!({
                "session_id": s.session_id, "user": s.user, "harness": s.harness,
                "first": time::iso(s.first_ms), "last": time::iso(s.last_ms),
                "duration_ms": s.last_ms - s.first_ms, "idle_ms": now - s.last_ms,
                "cost_usd": s.cost_micros as f64 / 1e6, "requests": s.requests, "tokens": s.tokens, "models": s.models,
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": rows })))
}

/// The values seen for each filterable dimension in the time range (for the filter pickers).
async fn dimensions(State(m): State<Arc<Metering>>, who: Who, Query(p): Params) -> ApiResult {
    let mut f = filter_from(&p)?;
    // Only the time range narrows the choices, so a chosen filter never hides its alternatives.
    f = pb::UsageFilter {
        since_ms: f.since_ms,
        until_ms: f.until_ms,
        ..Default::default()
    };
    // The choices are only what the caller may see (a user: their own name, not everyone's).
    scope(&caller(who), &mut f)?;
    let mut out = serde_json::Map::new();
    for (d, vals) in query::dimensions(&m.store, &f).await? {
        out.insert(
            d.into(),
            Value::Array(vals.into_iter().map(Value::String).collect()),
        );
    }
    Ok(Json(Value::Object(out)))
}

async fn prices(State(m): State<Arc<Metering>>) -> ApiResult {
    let list: Vec<Value> = m
        .list_prices()
        .into_iter()
        .map(|p| {
            json!({"model": p.model, "effective_from": p.effective_from, "input": p.input, "output": p.output,
                   "reasoning": p.reasoning, "cache_read": p.cache_read, "cache_write": p.cache_write, "tier": p.tier})
        })
        .collect();
    Ok(Json(json!({ "prices": list })))
}

async fn set_price(
    State(m): State<Arc<Metering>>,
    who: Who,
    body: Result<Json<retort_pricing::Price>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let c = caller(who);
    may_set_prices(&c)?;
    let Json(p) = body.map_err(|e| MeteringError::Invalid(e.body_text()))?;
    tracing::info!(by = c.name(), model = %p.model, effective_from = %p.effective_from, "metering: price set");
    let saved = m.set_price(crate::service::to_pb_price(&p)).await?;
    Ok(Json(
        json!({ "model": saved.model, "effective_from": saved.effective_from, "tier": saved.tier }),
    ))
}

async fn export_csv(
    State(m): State<Arc<Metering>>,
    who: Who,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let f = scoped_filter(&caller(who), &p)?;
    let mut out = String::from(query::CSV_HEADER);
    let mut after = None;
    loop {
        let (text, next) = query::export_page(&m.store, &f, after, 5000).await?;
        out.push_str(&text);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"retort-usage.csv\"",
            ),
        ],
        out,
    )
        .into_response())
}
